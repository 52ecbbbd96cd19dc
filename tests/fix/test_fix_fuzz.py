"""Hypothesis fuzzing of both roles over real sockets.

After arbitrary bytes, mutated frames and well-framed messages with random header values, the
session must not leak an exception or hang, and then either process a valid message carrying
the expected sequence number, or have logged out (Logout sent, connection closed) as the
session rules demand.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import Env, EnvFactory
from fix_helpers import PEER, RawPeer, build, ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _valid_app(seq: int, text: str = "fuzz") -> bytes:
    return build("8", seq, [(17, text), (58, text)])


@st.composite
def mutated_frame(draw: st.DrawFn) -> bytes:
    raw = bytearray(_valid_app(draw(st.integers(1, 6))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        i = draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=5))
        elif len(raw) > 1:
            del raw[i]
    return bytes(raw)


@st.composite
def structured_frame(draw: st.DrawFn) -> bytes:
    """Correctly framed, header values drawn from plausible and hostile sets."""
    msg_type = draw(st.sampled_from(["0", "1", "2", "3", "4", "8", "D", "ZZ"]))
    seq = draw(st.integers(0, 8))
    fields = draw(st.lists(
        st.tuples(st.sampled_from([7, 16, 36, 45, 58, 112, 123, 373, 9999]),
                  st.sampled_from(["0", "1", "3", "5", "Y", "N", "x", "-1", "99999999999"])),
        max_size=4))
    poss_dup = draw(st.booleans())
    orig = draw(st.sampled_from([None, ts(-5), ts(+50), "garbage"]))
    sending_time = draw(st.sampled_from([None, ts(-1), "2024", "20240101-99:99:99"]))
    sender = draw(st.sampled_from([PEER, PEER, "EVIL"]))
    return build(msg_type, seq, fields, poss_dup=poss_dup, orig_sending_time=orig,
                 sending_time=sending_time, sender=sender)


CHUNKS = st.lists(
    st.one_of(st.binary(max_size=64), mutated_frame(), structured_frame()),
    min_size=1, max_size=6,
)


async def _reconnect(env: Env) -> RawPeer:
    if env.peer is not None:
        await env.peer.close()
    if env.role == "acceptor":
        # a second connection while the old one is still attached would be refused
        for _ in range(200):
            if not env.session.connected:
                break
            await asyncio.sleep(0.01)
    return await env.connect()


async def _fresh_logon(env: Env) -> RawPeer:
    """New connection and Logon with ResetSeqNumFlag, so each example starts at seq 1."""
    peer = await _reconnect(env)
    if env.role == "acceptor":
        await peer.send_msg("A", [(98, 0), (108, 30), (141, "Y")])
        await peer.expect("A")
    else:
        await peer.expect("A")
        await peer.send_msg("A", [(98, 0), (108, 30), (141, "Y")])
    await env.session.wait_logged_on(2)
    return peer


async def _run_example(env: Env, chunks: list[bytes]) -> None:
    peer = await _fresh_logon(env)
    while not env.recorder.queue.empty():
        env.recorder.queue.get_nowait()
    for chunk in chunks:
        await peer.send(chunk)
    await asyncio.sleep(0.02)  # let the session digest the input
    expected = env.session.store.next_target_seq()
    try:
        await peer.send(_valid_app(expected, "final"))
    except ConnectionError:
        pass
    received = []
    closed = False
    deadline = asyncio.get_running_loop().time() + 2.0
    while asyncio.get_running_loop().time() < deadline:
        try:
            msg = await asyncio.wait_for(env.recorder.queue.get(), 0.02)
        except TimeoutError:
            pass
        else:
            received.append(msg.get(58))
            if msg.get(58) == b"final":
                return
        try:
            await peer.recv(0.01)
        except TimeoutError:
            pass
        except (EOFError, ConnectionError):
            closed = True
            break
    assert closed, f"final message not processed and session still connected: {received}"
    assert any(m.type == "5" for m in peer.received), "disconnected without a Logout"


@pytest.fixture(params=["acceptor", "initiator"])
async def fuzz_env(request: pytest.FixtureRequest, make_env: EnvFactory) -> Env:
    return await make_env(request.param, reset_seq_on_logon=request.param == "initiator")


@FUZZ_SETTINGS
@given(chunks=CHUNKS)
async def test_fuzz_session(
    fuzz_env: Env, chunks: list[bytes], fix_errors: list[logging.LogRecord]
) -> None:
    await asyncio.wait_for(_run_example(fuzz_env, chunks), 10)
    assert not fix_errors, [r.getMessage() for r in fix_errors]


@FUZZ_SETTINGS
@given(junk=st.binary(min_size=1, max_size=300))
async def test_fuzz_random_bytes_before_logon(fuzz_env: Env, junk: bytes) -> None:
    """Random bytes ahead of the Logon: skipped, and the Logon still works."""
    peer = await _reconnect(fuzz_env)

    async def go() -> None:
        if fuzz_env.role == "acceptor":
            await peer.send(junk + build("A", 1, [(98, 0), (108, 30), (141, "Y")]))
            await peer.expect("A")
        else:
            await peer.expect("A")
            await peer.send(junk + build("A", 1, [(98, 0), (108, 30), (141, "Y")]))
        await fuzz_env.session.wait_logged_on(2)

    await asyncio.wait_for(go(), 10)
