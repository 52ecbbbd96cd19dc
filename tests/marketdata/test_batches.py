"""Ingest's batch channels (marketdata/batches.py): every message, in order, as on the symbols'
own channels; the fan-out unpacks them in order; the latest quote stays right."""

from __future__ import annotations

import asyncio
import json
import time

from redis.asyncio import Redis

from db.accounts import OpenedAccount
from marketdata import batches
from marketdata.ingest import Ingest
from marketdata.quotes import LatestQuotes
from sherwood.contracts import RedisKeys
from tests.marketdata.conftest import FanoutFactory, authed_client
from tests.marketdata.helpers import q, tr


def test_payloads_are_bounded_and_keep_the_order() -> None:
    msgs = [b'{"T":"t","S":"AAPL","i":%d,"pad":"%s"}' % (i, b"x" * (i % 700)) for i in range(2000)]
    out = batches.payloads(msgs)
    assert len(out) > 1 and all(len(p) <= batches.MAX_BATCH_BYTES for p in out)
    assert [m for p in out for m in p.split(b"\n")] == msgs
    assert batches.payloads([]) == []
    big = b'{"T":"t","S":"AAPL","pad":"%s"}' % (b"x" * batches.MAX_BATCH_BYTES)
    assert batches.payloads([b"{}", big, b"{}"]) == [b"{}", big, b"{}"]  # alone, never cut
    assert batches.symbol_of(msgs[0]) == b"AAPL" and batches.symbol_of(b"garbage") == b""


async def test_batches_carry_what_the_symbol_channels_carry_in_order(
        redis: Redis, prefix: str, ingest: Ingest) -> None:
    keys = RedisKeys(prefix)
    ps = redis.pubsub()
    await ps.psubscribe(keys.md_channel_prefix + "*", f"{prefix}:mdb:*")
    for _ in range(2):
        assert await ps.get_message(timeout=2.0) is not None  # the confirmations
    syms = ["AAPL", "MSFT", "NVDA", "TSLA", "SPY"]
    t = time.time_ns()
    lines = []
    for i in range(60):
        s = syms[i % len(syms)]
        lines.append(q(s, f"{100 + i}.00", f"{100 + i}.02", t=t + i) if i % 3 else tr(s, f"{100 + i}.01",
                                                                                       t=t + i, i=i))
    lines.append(f"H,MSFT,{t + 100},T12".encode())  # a halt goes out with its batch, not later
    await ingest.process(lines[:30])
    await ingest.process(lines[30:])
    await ingest.sync()
    own: dict[str, list[bytes]] = {}
    batched: dict[str, list[bytes]] = {}
    while (m := await ps.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        chan = m["channel"].decode()
        if chan.startswith(f"{prefix}:mdb:"):
            for msg in m["data"].split(b"\n"):
                sym = json.loads(msg)["S"]
                assert chan == batches.channel(prefix, batches.shard_of(sym.encode())).decode()
                batched.setdefault(sym, []).append(msg)
        else:
            own.setdefault(chan.removeprefix(keys.md_channel_prefix), []).append(m["data"])
    await ps.aclose()
    assert batched == own and set(own) == set(syms)
    for msgs in own.values():  # per symbol: every message, sequence numbers one by one
        sqs = [json.loads(x)["sq"] for x in msgs]
        assert sqs == list(range(sqs[0], sqs[0] + len(sqs)))
    assert json.loads(batched["MSFT"][-1])["T"] == "s"
    # the latest-quote hash holds each symbol's last quote of the batches
    latest = await LatestQuotes(redis, prefix).get_many(syms)
    for s in syms:
        last_q = [json.loads(x) for x in own[s] if json.loads(x)["T"] == "q"][-1]
        assert float(latest[s].bid) == last_q["bp"], s


async def test_fanout_unpacks_batches_in_order_and_survives_garbage(
        make_fanout: FanoutFactory, account: OpenedAccount, ingest: Ingest, redis: Redis,
        prefix: str) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    await c.request({"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["MSFT"]})
    # garbage on a batch channel (nobody but ingest may publish there): skipped, the reader lives
    await redis.publish(batches.channel(prefix, batches.shard_of(b"AAPL")), b'garbage\n{"T"\n\xff\xfe')
    t = time.time_ns()
    n = 0
    for _ in range(4):
        lines = []
        for _ in range(50):
            n += 1
            lines += [tr("AAPL", t=t + n, i=n), tr("MSFT", t=t + n, i=n), q("MSFT", t=t + n)]
        await ingest.process(lines)
        await asyncio.sleep(0.01)
    got: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    while sum(m["T"] == "t" for m in got) < 2 * n and loop.time() < end:
        got += await c.collect(0.2)
    for sym in ("AAPL", "MSFT"):
        ids = [m["i"] for m in got if m["T"] == "t" and m["S"] == sym]
        assert ids == list(range(1, n + 1)), sym  # every trade, in order
    quotes = [m for m in got if m["T"] == "q"]
    assert quotes and quotes[-1]["S"] == "MSFT"
    assert srv.stats["redis_reconnects"] == 0
    await c.ws.close()
