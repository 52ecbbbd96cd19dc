"""Ingest in several processes: every symbol's messages from one worker, in order, as one ingest's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from domain.universe import known_symbols
from marketdata.ingest_workers import IngestRouter, WorkerSpec, shard_of
from sherwood.contracts import RedisKeys
from sherwood.settings import Settings
from tests.marketdata.helpers import q, tr

SYMS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "AMD", "SPY", "META"]


@pytest.fixture
async def router(migrated: Settings, prefix: str) -> AsyncIterator[IngestRouter]:
    assert migrated.redis_url
    r = IngestRouter(WorkerSpec(migrated.redis_url, prefix, tuple(sorted(known_symbols())), {}), 2)
    await r.start()
    yield r
    await r.close()


async def test_lines_reach_redis_through_the_worker_owning_their_symbol(
        router: IngestRouter, redis: Redis, prefix: str) -> None:
    assert {shard_of(s.encode(), 2) for s in SYMS} == {0, 1}  # both workers take part
    keys = RedisKeys(prefix)
    ps = redis.pubsub()
    await ps.psubscribe(keys.md_channel_prefix + "*")
    assert await ps.get_message(timeout=2.0) is not None
    t = time.time_ns()
    lines = [q(s, "10.00", "10.02", t=t + i) for i, s in enumerate(SYMS)]
    lines += [tr(s, "10.01", t=t + 100 + i, i=i) for i, s in enumerate(SYMS)]
    lines += [q("NOPE", "1.00", "1.01"), b"Q,AAPL,abc"]
    assert await router.process(lines[:5]) == 5
    # the rest through the feed port, as the exchange feed sends them
    server = await router.serve_tcp("127.0.0.1", 0)
    _r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    w.write(b"\n".join(lines[5:]) + b"\n")
    await w.drain()
    got: list[dict[str, object]] = []
    deadline = time.monotonic() + 20
    while len(got) < 2 * len(SYMS) and time.monotonic() < deadline:
        m = await ps.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if m is not None:
            got.append(json.loads(m["data"]))
    w.close()
    await ps.aclose()
    assert sorted((m["S"], m["T"], m["sq"]) for m in got) == sorted(
        [(s, "q", 1) for s in SYMS] + [(s, "t", 2) for s in SYMS])
    await router.sync()
    assert router.accepted["quotes"] == len(SYMS) and router.accepted["trades"] == len(SYMS)
    assert router.dropped["unknown_symbol"] == 1 and router.dropped["malformed"] == 1
    assert set(await redis.hkeys(keys.quotes_latest)) == {s.encode() for s in SYMS}
    seqs = await redis.hgetall(keys.md_seq)
    assert seqs == {s.encode(): b"2" for s in SYMS}


async def test_a_worker_that_dies_ends_the_router(router: IngestRouter) -> None:
    os.kill(router.procs[1].pid, signal.SIGKILL)
    await asyncio.wait_for(router.failed.wait(), 10)
    with pytest.raises(RuntimeError, match="ingest worker"):
        await router.process([q("AAPL")])


async def test_a_clean_stop_is_no_failure(migrated: Settings, prefix: str) -> None:
    assert migrated.redis_url
    r = IngestRouter(WorkerSpec(migrated.redis_url, prefix, tuple(sorted(known_symbols())), {}), 2)
    await r.start()
    await r.close()
    assert not r.failed.is_set() and not any(p.is_alive() for p in r.procs)
