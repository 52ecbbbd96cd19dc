"""Logon scenarios, per role: our acceptor vs a raw client, our initiator vs a raw server."""

from __future__ import annotations

import asyncio
import time

from conftest import Env, EnvFactory
from fix_helpers import OURS, PEER, RawPeer, build, fields_bytes, ts, wrap

from fix.session import FixAcceptor, FixInitiator, FixSession, SessionConfig
from fix.store import MemorySessionStore

LOGON = [(98, 0), (108, 30)]


# ------------------------------------------------------------------ acceptor role


async def test_acceptor_valid_logon_echoes_heartbeat_and_calls_on_logon() -> None:
    logons: list[FixSession] = []

    async def on_logon(s: FixSession) -> None:
        logons.append(s)

    async def on_message(s: FixSession, m: object) -> None:
        return None

    cfg = SessionConfig(OURS, PEER)
    acc = FixAcceptor("127.0.0.1", 0, {PEER: (cfg, MemorySessionStore())}, on_message, on_logon)
    await acc.start()
    try:
        peer = await RawPeer.connect(acc.port)
        await peer.send_msg("A", [(98, 0), (108, 17)])
        reply = await peer.expect("A")
        assert (reply.seq, reply[98], reply[108]) == (1, "0", "17")
        assert reply.get(141) is None
        assert logons == [acc.session(PEER)]
        assert acc.session(PEER).logged_on.is_set()
        await peer.close()
    finally:
        await acc.stop()


async def test_acceptor_logon_seq_too_high_sends_logon_then_resend_request(
    make_env: EnvFactory,
) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("A", LOGON, seq=5)
    assert (await peer.expect("A")).seq == 1
    rr = await peer.expect("2")
    assert (rr[7], rr[16]) == ("1", "0")
    # the Logon itself (5) is admin: gap-filled together with 1..4
    await peer.send_msg("4", [(123, "Y"), (36, 6)], seq=1, poss_dup=True,
                        orig_sending_time=ts(-1))
    await peer.send_app("six", seq=6)
    assert (await env.recorder.get()).get(58) == b"six"


async def test_acceptor_logon_seq_too_low_logs_out(make_env: EnvFactory) -> None:
    store = MemorySessionStore()
    store.set_next_target_seq(5)
    env = await make_env("acceptor", store=store)
    peer = await env.connect()
    await peer.send_msg("A", LOGON, seq=2)
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["5"]
    assert got[0][58] == "MsgSeqNum too low, expecting 5 but received 2"


async def test_acceptor_logon_wrong_target_compid_rejected(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("A", LOGON, target="SOMEBODY")
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "9"
    assert not env.session.logged_on.is_set()


async def test_acceptor_logon_unknown_sender_compid_disconnected(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send(build("A", 1, LOGON, sender="STRANGER"))
    assert await peer.expect_eof() == []


async def test_acceptor_logon_bad_sending_time_rejected(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("A", LOGON, sending_time=ts(+3600))
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "10"


async def test_acceptor_first_message_not_logon_disconnected(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("0")
    assert await peer.expect_eof() == []


async def test_acceptor_logon_wrong_begin_string_disconnected(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send(build("A", 1, LOGON, begin=b"FIX.4.2"))
    assert await peer.expect_eof() == []


async def test_acceptor_logon_invalid_length_ignored_then_valid_logon(
    make_env: EnvFactory,
) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    body = fields_bytes([(35, "A"), (49, PEER), (56, OURS), (34, 1), (52, ts()), *LOGON])
    await peer.send(wrap(body, body_length=len(body) - 5))
    await peer.send(wrap(body, checksum=(sum(wrap(body)[:-7]) + 3) % 256))
    await peer.expect_nothing(0.1)
    await peer.send_msg("A", LOGON)
    assert (await peer.expect("A")).seq == 1


async def test_acceptor_logon_timeout(make_env: EnvFactory) -> None:
    env = await make_env("acceptor", logon_timeout=0.3)
    peer = await env.connect()
    t0 = time.monotonic()
    assert await peer.expect_eof(2.0) == []
    assert 0.25 < time.monotonic() - t0 < 1.0


async def test_acceptor_duplicate_identity_refused(env_acceptor: Env) -> None:
    env = env_acceptor
    intruder = await RawPeer.connect(env.port)
    await intruder.send_msg("A", LOGON)
    assert await intruder.expect_eof() == []
    await env.p.send_msg("1", [(112, "still-there")])
    assert (await env.p.expect("0", skip_heartbeats=False))[112] == "still-there"


async def test_acceptor_reset_seq_num_flag(make_env: EnvFactory) -> None:
    store = MemorySessionStore()
    for i in range(1, 8):
        store.store_sent(i, b"x")
    store.set_next_target_seq(9)
    env = await make_env("acceptor", store=store)
    peer = await env.connect()
    await peer.send_msg("A", [*LOGON, (141, "Y")])
    reply = await peer.expect("A")
    assert (reply.seq, reply[141]) == (1, "Y")
    assert store.next_target_seq() == 2 and store.next_sender_seq() == 2
    assert store.get_sent(1, 10)[0][0] == 1 and len(store.get_sent(1, 10)) == 1


async def test_acceptor_reset_flag_with_seq_not_one_logs_out(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("A", [*LOGON, (141, "Y")], seq=3)
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["5"]


async def test_acceptor_logon_without_heartbeat_interval_logs_out(make_env: EnvFactory) -> None:
    env = await make_env("acceptor")
    peer = await env.connect()
    await peer.send_msg("A", [(98, 0)])
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["5"]


# ------------------------------------------------------------------ initiator role


async def test_initiator_valid_logon(make_env: EnvFactory) -> None:
    env = await make_env("initiator", hb=2.5)
    peer = await env.connect()
    logon = await peer.expect("A")
    assert (logon.seq, logon[98], logon[108]) == (1, "0", "3")  # ceil(2.5)
    assert logon.get(141) is None
    await peer.send_msg("A", LOGON)
    await env.session.wait_logged_on(2)
    await peer.send_app("x")
    assert (await env.recorder.get()).get(58) == b"x"


async def test_initiator_logon_reply_seq_too_high(make_env: EnvFactory) -> None:
    env = await make_env("initiator")
    peer = await env.connect()
    await peer.expect("A")
    await peer.send_msg("A", LOGON, seq=4)
    rr = await peer.expect("2")
    assert (rr[7], rr[16]) == ("1", "0")
    assert env.session.logged_on.is_set()


async def test_initiator_logon_reply_seq_too_low(make_env: EnvFactory) -> None:
    store = MemorySessionStore()
    store.set_next_target_seq(6)
    env = await make_env("initiator", store=store)
    peer = await env.connect()
    await peer.expect("A")
    await peer.send_msg("A", LOGON, seq=3)
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["5"]
    assert got[0][58] == "MsgSeqNum too low, expecting 6 but received 3"


async def test_initiator_logon_reply_wrong_compid(make_env: EnvFactory) -> None:
    env = await make_env("initiator")
    peer = await env.connect()
    await peer.expect("A")
    await peer.send_msg("A", LOGON, sender="IMPOSTOR")
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "9"
    # and it dials again
    again = await env.connect()
    assert (await again.expect("A")).type == "A"


async def test_initiator_logon_reply_bad_sending_time(make_env: EnvFactory) -> None:
    env = await make_env("initiator")
    peer = await env.connect()
    await peer.expect("A")
    await peer.send_msg("A", LOGON, sending_time=ts(-1000))
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "10"


async def test_initiator_first_message_not_logon(make_env: EnvFactory) -> None:
    env = await make_env("initiator")
    peer = await env.connect()
    await peer.expect("A")
    await peer.send_msg("0")
    assert await peer.expect_eof() == []
    assert not env.session.logged_on.is_set()


async def test_initiator_logon_reply_wrong_begin_string(make_env: EnvFactory) -> None:
    env = await make_env("initiator")
    peer = await env.connect()
    await peer.expect("A")
    await peer.send(build("A", 1, LOGON, begin=b"FIX.4.2"))
    assert await peer.expect_eof() == []


async def test_initiator_logon_timeout_then_redial(make_env: EnvFactory) -> None:
    env = await make_env("initiator", logon_timeout=0.3)
    peer = await env.connect()
    t0 = time.monotonic()
    got = await peer.expect_eof()
    assert [m.type for m in got] == ["A"]
    assert 0.25 < time.monotonic() - t0 < 1.0
    second = await env.connect()
    assert (await second.expect("A")).seq == 2


async def test_initiator_reset_seq_num_flag(make_env: EnvFactory) -> None:
    store = MemorySessionStore()
    for i in range(1, 5):
        store.store_sent(i, b"x")
    store.set_next_target_seq(7)
    env = await make_env("initiator", store=store, reset_seq_on_logon=True)
    peer = await env.connect()
    logon = await peer.expect("A")
    assert (logon.seq, logon[141]) == (1, "Y")
    await peer.send_msg("A", [*LOGON, (141, "Y")])
    await env.session.wait_logged_on(2)
    assert store.next_target_seq() == 2 and store.next_sender_seq() == 2


async def test_initiator_reconnects_with_backoff_until_server_appears() -> None:
    # find a free port, then leave it closed for a while
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    async def on_message(s: FixSession, m: object) -> None:
        return None

    cfg = SessionConfig(PEER, OURS, reconnect_min_delay=0.02, reconnect_max_delay=0.1)
    ini = FixInitiator(cfg, MemorySessionStore(), "127.0.0.1", port, on_message)
    await ini.start()
    await asyncio.sleep(0.3)  # several failed dials
    acc = FixAcceptor("127.0.0.1", port, {PEER: (SessionConfig(OURS, PEER),
                                                MemorySessionStore())}, on_message)
    await acc.start()
    try:
        await ini.session.wait_logged_on(2)
        assert ini.session.store.next_sender_seq() == 2  # exactly one Logon went out
    finally:
        await ini.stop()
        await acc.stop()
    assert not ini.session.connected


async def test_initiator_stop_while_disconnected_is_prompt(make_env: EnvFactory) -> None:
    cfg = SessionConfig(PEER, OURS, reconnect_min_delay=5, reconnect_max_delay=5)

    async def on_message(s: FixSession, m: object) -> None:
        return None

    ini = FixInitiator(cfg, MemorySessionStore(), "127.0.0.1", 1, on_message)
    await ini.start()
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await ini.stop()
    assert time.monotonic() - t0 < 0.5
