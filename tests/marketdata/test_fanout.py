"""Fan-out over a real Redis and real WebSockets, fed by a real ingest."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime

import msgpack
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from db.accounts import OpenedAccount
from db.router import ShardRouter
from marketdata import batches
from marketdata.ingest import Ingest
from marketdata.quotes import LatestQuotes
from sherwood.contracts import RedisKeys
from sherwood.settings import Settings
from tests.marketdata.conftest import FanoutFactory, authed_client, open_client
from tests.marketdata.helpers import q, tr


async def test_handshake_subscribe_only_that_symbol_and_unsubscribe(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    sub = await c.request({"action": "subscribe", "quotes": ["AAPL"], "trades": ["AAPL"]})
    assert sub[0]["T"] == "subscription"
    assert sub[0]["quotes"] == ["AAPL"] and sub[0]["trades"] == ["AAPL"] and sub[0]["bars"] == []
    assert next(iter(sub[0])) == "T"
    await ingest.process([q("MSFT"), q("AAPL", "187.10", "187.12"), tr("AAPL", "187.11"), q("TSLA")])
    got = await c.collect(0.5)
    assert got and {m["S"] for m in got} == {"AAPL"}
    assert {m["T"] for m in got} == {"q", "t"}
    quote = next(m for m in got if m["T"] == "q")
    assert next(iter(quote)) == "T"
    assert quote["bp"] == 187.10 and quote["ap"] == 187.12 and quote["t"].endswith("Z")
    # the full subscription is echoed after unsubscribe, and nothing for AAPL arrives any more
    unsub = await c.request({"action": "unsubscribe", "quotes": ["AAPL"], "trades": ["AAPL"]})
    assert unsub[0]["quotes"] == [] and unsub[0]["trades"] == []
    await ingest.process([q("AAPL", "187.20", "187.22")])
    assert await c.collect(0.4) == []
    await c.ws.close()


async def test_redis_channel_subscribed_only_while_a_local_subscriber(
        make_fanout: FanoutFactory, account: OpenedAccount, redis: Redis, prefix: str) -> None:
    """The batch channel of a symbol's quotes; its own channel only for statuses (operations')."""
    srv = await make_fanout()
    batch = batches.channel(prefix, batches.shard_of(b"NVDA")).decode()
    own = RedisKeys(prefix).md_channel("NVDA")

    async def subscribers() -> tuple[int, int]:
        got = dict(await redis.pubsub_numsub(batch, own))
        return got[batch.encode()], got[own.encode()]

    assert await subscribers() == (0, 0)
    c = await authed_client(srv, account)
    await c.request({"action": "subscribe", "quotes": ["NVDA"]})
    assert await subscribers() == (1, 0)
    await c.request({"action": "subscribe", "statuses": ["NVDA"]})
    assert await subscribers() == (1, 1)
    await c.request({"action": "unsubscribe", "quotes": ["NVDA"], "statuses": ["NVDA"]})
    for _ in range(50):
        if await subscribers() == (0, 0):
            break
        await asyncio.sleep(0.02)
    assert await subscribers() == (0, 0)
    await c.ws.close()


async def test_bad_ticks_never_reach_subscribers_and_are_counted(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest, redis: Redis,
        prefix: str) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    await c.request({"action": "subscribe", "quotes": ["AAPL", "NOPE"], "trades": ["AAPL"]})
    now = time.time_ns()
    await ingest.process([q("AAPL", "187.10", "187.12")])
    got = await c.collect(0.3)  # (collected now: quotes of one symbol conflate)
    bad = [
        q("AAPL", "-1.00", "187.12"),  # non_positive_price
        q("AAPL", "0", "187.12"),  # non_positive_price
        q("AAPL", "187.20", "187.10"),  # crossed
        q("AAPL", "187.10", "187.10"),  # locked
        q("AAPL", "5000000", "5000001"),  # absurd_price (over max)
        q("AAPL", "18.71", "18.72"),  # absurd_price (90% jump)
        q("AAPL", "187.10", "187.12", t=now - 60 * 10**9),  # stale
        q("AAPL", "187.10", "187.12", t=now + 60 * 10**9),  # future
        q("NOPE", "1.00", "1.01"),  # unknown_symbol
        q("AAPL", "187.10", "187.12", bs=-5),  # bad_size
        tr("AAPL", "187.11", 0),  # bad_size
        b"Q,AAPL,abc,1,2,3",  # malformed
        b"X,AAPL,1",  # malformed
    ]
    await ingest.process(bad)
    await ingest.process([q("AAPL", "187.11", "187.13")])
    got += await c.collect(0.5)
    assert [(m["bp"], m["ap"]) for m in got] == [(187.10, 187.12), (187.11, 187.13)]
    await ingest.sync()
    counts = {k.decode(): int(v) for k, v in (await redis.hgetall(RedisKeys(prefix).md_dropped)).items()}
    assert counts["non_positive_price"] == 2
    assert counts["crossed"] == 1 and counts["locked"] == 1 and counts["absurd_price"] == 2
    assert counts["stale"] == 1 and counts["future"] == 1 and counts["unknown_symbol"] == 1
    assert counts["bad_size"] == 2 and counts["malformed"] == 2
    assert ingest.dropped["crossed"] == 1
    # the latest-quote hash holds the last GOOD quote, readable by the write path's reader
    quote = await LatestQuotes(redis, prefix).get("AAPL")
    assert quote is not None and str(quote.bid) == "187.11" and str(quote.ask) == "187.13"
    await c.ws.close()


async def test_sequence_numbers_reveal_gaps(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    await c.request({"action": "subscribe", "trades": ["AMD"]})
    await ingest.process([tr("AMD", "158.20", i=1)])
    await ingest.process([tr("AMD", "158.21", i=2)])
    got = await c.collect(0.4)
    seqs = [m["sq"] for m in got]
    assert len(seqs) == 2 and seqs[1] == seqs[0] + 1
    # messages published while the client was not subscribed are a visible gap
    await c.request({"action": "unsubscribe", "trades": ["AMD"]})
    await ingest.process([tr("AMD", "158.22", i=3), tr("AMD", "158.23", i=4)])
    await ingest.sync()
    await asyncio.sleep(0.3)
    await c.request({"action": "subscribe", "trades": ["AMD"]})
    await ingest.process([tr("AMD", "158.24", i=5)])
    m = await c.until(lambda m: m.get("T") == "t")
    assert m["sq"] == seqs[1] + 3  # two missed: the client can tell and reconcile
    await c.ws.close()


async def test_halt_status_message_and_halts_set(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest, redis: Redis,
        prefix: str) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    await c.request({"action": "subscribe", "statuses": ["GME"], "trades": ["GME"]})
    now = time.time_ns()
    await ingest.process([f"H,GME,{now},T1".encode(), tr("GME", "22.70")])
    got = await c.collect(0.4)
    assert [m["T"] for m in got] == ["s"] and got[0]["sc"] == "H"  # no trade while halted
    assert await redis.sismember(RedisKeys(prefix).halts, "GME")
    assert ingest.dropped["halted"] == 1
    await ingest.process([f"R,GME,{time.time_ns()},T2".encode(), tr("GME", "22.71")])
    got = await c.collect(0.4)
    assert [m["T"] for m in got] == ["s", "t"] and got[0]["sc"] == "T"
    assert not await redis.sismember(RedisKeys(prefix).halts, "GME")
    await c.ws.close()


async def test_msgpack_client(make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account, binary=True)
    sub = await c.request({"action": "subscribe", "quotes": ["AAPL"]})
    assert sub[0]["T"] == "subscription" and sub[0]["quotes"] == ["AAPL"]
    await ingest.process([q("AAPL", "187.10", "187.12")])
    (m,) = await c.collect(0.4)
    assert m["T"] == "q" and m["S"] == "AAPL" and m["bp"] == 187.10
    assert isinstance(m["t"], datetime)  # a msgpack Timestamp extension value
    assert abs(m["t"].timestamp() - time.time()) < 10
    await c.ws.close()


async def test_auth_errors(make_fanout: FanoutFactory, account: OpenedAccount) -> None:
    srv = await make_fanout(auth_timeout_s=0.5)
    c = await open_client(srv)
    assert await c.request({"action": "subscribe", "quotes": ["AAPL"]}) == [
        {"T": "error", "code": 401, "msg": "not authenticated"}]
    assert (await c.request({"action": "auth"}))[0]["code"] == 402  # missing key -> auth failed
    await asyncio.wait_for(c.ws.wait_closed(), 3)
    c = await open_client(srv)
    assert (await c.request({"action": "auth", "key": account.credentials.key_id, "secret": "wrong"})) == [
        {"T": "error", "code": 402, "msg": "auth failed"}]
    await asyncio.wait_for(c.ws.wait_closed(), 3)
    c = await open_client(srv)
    await c.ws.send("{not json")
    assert (await c.recv())[0]["code"] == 400
    assert (await c.recv(2))[0]["code"] == 404  # auth timeout
    await asyncio.wait_for(c.ws.wait_closed(), 3)
    c = await authed_client(srv, account)
    assert (await c.request({"action": "auth", "key": "x", "secret": "y"}))[0]["code"] == 403
    assert (await c.request({"action": "subscribe", "lulds": ["AAPL"]}))[0]["code"] == 410
    assert (await c.request({"action": "subscribe", "quotes": "AAPL"}))[0]["code"] == 409
    assert (await c.request({"action": "dance"}))[0]["code"] == 400
    await c.ws.close()


async def test_symbol_and_connection_limits(make_fanout: FanoutFactory, account: OpenedAccount) -> None:
    srv = await make_fanout(max_symbols=3, max_connections=2, max_connections_per_key=1)
    c = await authed_client(srv, account)
    assert (await c.request({"action": "subscribe", "quotes": ["AAPL", "MSFT"]}))[0]["quotes"] == [
        "AAPL", "MSFT"]
    assert (await c.request({"action": "subscribe", "trades": ["TSLA", "AMD"]})) == [
        {"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    # existing subscriptions unchanged
    sub = await c.request({"action": "subscribe", "trades": ["AAPL"]})
    assert sub[0]["quotes"] == ["AAPL", "MSFT"] and sub[0]["trades"] == ["AAPL"]
    # a second connection with the same key: 406 (per-key limit)
    c2 = await open_client(srv)
    got = await c2.request({"action": "auth", "key": account.credentials.key_id,
                            "secret": account.credentials.secret_key})
    assert got[0]["code"] == 406
    await asyncio.wait_for(c2.ws.wait_closed(), 3)
    # process connection limit: a third socket while two are open
    c3 = await open_client(srv)
    c4 = await connect(f"ws://127.0.0.1:{srv.port}/v2/sip")
    assert json.loads(await c4.recv())[0]["code"] == 406
    await asyncio.wait_for(c4.wait_closed(), 3)
    for x in (c, c3):
        await x.ws.close()


async def test_slow_client_is_cut_with_407_and_does_not_delay_a_fast_one(
        make_fanout: FanoutFactory, account: OpenedAccount, redis: Redis, prefix: str) -> None:
    srv = await make_fanout(max_buffer_bytes=256 * 1024, slow_timeout_s=2.0)
    fast = await authed_client(srv, account)
    # the slow client reads nothing, through a tiny receive buffer
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.setblocking(False)
    slow_ws = await connect(f"ws://127.0.0.1:{srv.port}/v2/iex", sock=sock, max_queue=1)
    await slow_ws.recv()
    await slow_ws.send(json.dumps({"action": "auth", "key": account.credentials.key_id,
                                   "secret": account.credentials.secret_key}))
    await slow_ws.recv()
    await slow_ws.send(json.dumps({"action": "subscribe", "trades": ["SPY"], "quotes": ["SPY"]}))
    await slow_ws.recv()
    await fast.request({"action": "subscribe", "trades": ["SPY"]})
    chan = batches.channel(prefix, batches.shard_of(b"SPY"))  # as ingest batches them
    pad = "x" * 400
    lags: list[float] = []
    seen = 0
    sent = 0
    for _burst in range(40):
        pipe = redis.pipeline(transaction=False)
        for _ in range(200):
            sent += 1
            pipe.publish(chan, json.dumps({"T": "t", "S": "SPY", "i": sent, "p": 1, "s": 1, "pad": pad,
                                           "sq": sent, "it": time.time_ns()}, separators=(",", ":")))
        await pipe.execute()
        # the fast client keeps up while the slow one stalls
        while seen < sent:
            for m in await fast.recv(2.0):
                seen += 1
                lags.append((time.time_ns() - m["it"]) / 1e9)
        if srv.stats["slow_disconnects"]:
            break
    assert srv.stats["slow_disconnects"] == 1, srv.stats
    assert seen == sent  # every trade reached the fast client, in order
    lags.sort()
    assert lags[int(len(lags) * 0.99)] < 0.5, lags[-5:]
    # memory stayed bounded: the slow connection never held more than its budget (+ one message)
    assert srv.stats["max_buffered"] <= 256 * 1024 + 1024
    # the slow client, once it reads, finds error 407 and a closed connection
    codes = []
    try:
        while True:
            raw = await asyncio.wait_for(slow_ws.recv(), 5)
            codes += [m.get("code") for m in json.loads(raw) if m.get("T") == "error"]
    except ConnectionClosed as exc:
        reason = exc.rcvd.reason if exc.rcvd else ""
    assert 407 in codes or "407" in reason
    assert len(srv.conns) == 1
    await fast.ws.close()


async def test_unknown_path_is_refused(make_fanout: FanoutFactory) -> None:
    srv = await make_fanout()
    try:
        await connect(f"ws://127.0.0.1:{srv.port}/v2/nope")
        raise AssertionError("connected")
    except Exception as exc:  # InvalidStatus 404
        assert "404" in str(exc)


async def test_two_fanout_processes_side_by_side(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest) -> None:
    a, b = await make_fanout(), await make_fanout()
    ca, cb = await authed_client(a, account), await authed_client(b, account)
    await ca.request({"action": "subscribe", "quotes": ["META"]})
    await cb.request({"action": "subscribe", "quotes": ["META", "NFLX"]})
    await ingest.process([q("META", "495.00", "495.02"), q("NFLX", "640.10", "640.12")])
    assert {m["S"] for m in await ca.collect(0.4)} == {"META"}
    assert {m["S"] for m in await cb.collect(0.4)} == {"META", "NFLX"}
    _ = msgpack  # msgpack framing is covered in test_msgpack_client
    for c in (ca, cb):
        await c.ws.close()


async def test_slow_reader_gets_the_newest_quotes_never_a_backlog(
        make_fanout: FanoutFactory, account: OpenedAccount, redis: Redis, prefix: str) -> None:
    """Quotes pour in far faster than the client reads: what it reads is always recent (the
    fan-out sends a connection nothing more while WINDOW frames are unacknowledged, so nothing
    piles up in socket buffers) and holds each symbol at most once (conflated)."""
    srv = await make_fanout()
    syms = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]
    c = await authed_client(srv, account, max_queue=1, close_timeout=0.5)
    await c.request({"action": "subscribe", "quotes": syms})
    stop = asyncio.Event()
    pad = "x" * 2000

    async def publish() -> None:
        sq = 0
        while not stop.is_set():
            pipe = redis.pipeline(transaction=False)
            for _ in range(20):
                sq += 1
                s = syms[sq % len(syms)]
                pipe.publish(batches.channel(prefix, batches.shard_of(s.encode())), json.dumps(
                    {"T": "q", "S": s, "bp": 1, "ap": 2, "sq": sq, "it": time.time_ns(), "pad": pad},
                    separators=(",", ":")))
            await pipe.execute()
            await asyncio.sleep(0.005)

    task = asyncio.create_task(publish())
    lags: list[tuple[float, float]] = []
    try:
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < 4:
            frame = await c.recv(5)
            assert len({m["S"] for m in frame}) == len(frame), "a symbol twice in one frame"
            lags += [(now - t0, (time.time_ns() - m["it"]) / 1e9) for m in frame]
            await asyncio.sleep(0.2)  # a slow reader: five frames a second
    finally:
        stop.set()
        await task
    late = [lag for t, lag in lags if t > 2]
    assert late and max(late) < 1.5, max(late)  # bounded, not growing with the time spent
    assert srv.stats["slow_disconnects"] == 0 and srv.stats["max_buffered"] < 256 * 1024, srv.stats
    await c.ws.close()


async def test_connections_per_key_are_capped_by_default(
        migrated: Settings, prefix: str, router: ShardRouter, account: OpenedAccount) -> None:
    """The fan-out as `sherwood serve fanout` builds it: one key holds at most
    fanout_max_connections_per_key sockets; the next gets 406 and is closed; a freed slot is
    taken again."""
    from marketdata.fanout import directory_authenticator, fanout_from_settings

    cap = migrated.fanout_max_connections_per_key
    assert cap > 0, "a default cap"
    srv = fanout_from_settings(migrated.model_copy(update={"redis_prefix": prefix}),
                               directory_authenticator(router))
    await srv.start("127.0.0.1", 0)
    try:
        held = [await authed_client(srv, account) for _ in range(cap)]
        extra = await open_client(srv)
        got = await extra.request({"action": "auth", "key": account.credentials.key_id,
                                   "secret": account.credentials.secret_key})
        assert got == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
        await asyncio.wait_for(extra.ws.wait_closed(), 3)
        assert extra.ws.close_code == 1008
        await held.pop().ws.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while srv.per_key.get(account.credentials.key_id, 0) >= cap:
            assert loop.time() < deadline, "the closed socket's slot was never freed"
            await asyncio.sleep(0.02)
        held.append(await authed_client(srv, account))
        for c in held:
            await c.ws.close()
    finally:
        await srv.close()
