"""Heartbeat scenarios with a short HeartBtInt (0.3 s), in both roles."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import Env, EnvFactory

HB = 0.3


@pytest.fixture(params=["acceptor", "initiator"])
async def fast_env(request: pytest.FixtureRequest, make_env: EnvFactory) -> Env:
    e = await make_env(request.param, hb=HB)
    await e.logon(hb=1)  # the acceptor runs 0.3 s because ceil(0.3) == 1
    return e


async def test_heartbeat_when_nothing_sent(fast_env: Env) -> None:
    t0 = time.monotonic()
    hb = await fast_env.p.expect("0", timeout=1.0, skip_heartbeats=False)
    assert hb.get(112) is None
    assert 0.2 < time.monotonic() - t0 < 0.6


async def test_test_request_sent_after_silence_then_disconnect(fast_env: Env) -> None:
    t0 = time.monotonic()
    got = await fast_env.p.expect_eof(timeout=2.0)
    elapsed = time.monotonic() - t0
    types = [m.type for m in got]
    assert "1" in types, types
    test_req = got[types.index("1")]
    assert test_req.get(112)
    # TestRequest around 1.2 x HeartBtInt, disconnect around 2.4 x
    assert 2.4 * HB - 0.1 < elapsed < 2.4 * HB + 0.5
    assert not fast_env.session.logged_on.is_set()


async def test_answering_test_requests_keeps_session_alive(fast_env: Env) -> None:
    p = fast_env.p
    deadline = time.monotonic() + 1.2  # four HeartBtInts
    while time.monotonic() < deadline:
        try:
            msg = await p.recv(0.1)
        except TimeoutError:
            continue
        if msg.type == "1":
            await p.send_msg("0", [(112, msg[112])])
        elif msg.type == "0":
            await p.send_msg("0")
    assert fast_env.session.logged_on.is_set()
    await p.send_app("alive")
    assert (await fast_env.recorder.get()).get(58) == b"alive"


async def test_inbound_heartbeat_echoing_test_req_id_accepted(fast_env: Env) -> None:
    p = fast_env.p
    test_req = await p.expect("1", timeout=1.0)
    await p.send_msg("0", [(112, test_req[112])])
    await asyncio.sleep(0.25)
    assert fast_env.session.logged_on.is_set()
