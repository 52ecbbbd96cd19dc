"""The shard worker's outbox publisher: trade updates reach Redis as soon as the order
transaction commits (the store wakes the publisher), not at the next idle poll."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from db import sql
from db.engines import run_in_transaction, sqlalchemy_url
from db.router import ShardRouter
from sherwood.admission_slots import let_go_keys
from sherwood.contracts import RedisKeys
from sherwood.embedded import free_port
from sherwood.settings import Settings
from tests.owner import owner_url
from tests.stack import TradingStack, headers
from workers.outbox import OutboxPublisher


class OutboxRows:
    """An outbox table of this test's own (a copy of shard 0's in a schema of its own, found by
    ``search_path``, so the running stack's publisher never claims these rows), rows written to
    it by a transaction like the order store's, counted while unmarked. ``marks`` is the
    publisher's own engine for its marks."""

    def __init__(self, router: ShardRouter, settings: Settings) -> None:
        self.schema = f"outbox_test_{uuid.uuid4().hex[:12]}"
        # the owner's: the service role may not create a schema (its rows are the same either way)
        url = sqlalchemy_url(owner_url(settings, router.shard_urls[0]))
        self.admin = create_async_engine(url, pool_size=1)
        options = f"-c timezone=UTC -c search_path={self.schema}"
        self.engine = create_async_engine(url, pool_size=2, connect_args={"options": options})
        self.marks = create_async_engine(url, pool_size=1, isolation_level="AUTOCOMMIT",
                                         connect_args={"options": options})
        self.prefix = router.redis_prefix
        self.fresh()

    async def create(self) -> None:
        async with self.admin.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {self.schema}"))
            await conn.execute(text(f"CREATE TABLE {self.schema}.outbox (LIKE public.outbox INCLUDING ALL)"))

    async def drop(self) -> None:
        await self.engine.dispose()
        await self.marks.dispose()
        async with self.admin.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {self.schema} CASCADE"))
        await self.admin.dispose()

    def fresh(self) -> str:
        """Another key, with no rows yet."""
        self.key = f"outbox-{uuid.uuid4()}"
        return self.key

    async def write(self, *ns: int) -> list[sql.Row]:
        """One commit of a row per ``n`` (payload ``{"n": n}``), as the order store hands them over."""
        return await run_in_transaction(self.engine, lambda c: sql.rows(
            c, "INSERT INTO outbox (topic, key, payload) SELECT 'trade_updates', :k, "
            "jsonb_build_object('n', n) FROM unnest(CAST(:ns AS int[])) n "
            "RETURNING id, key, payload::text AS payload", {"k": self.key, "ns": list(ns)}))

    async def unmarked(self) -> int:
        return int(await run_in_transaction(self.engine, lambda c: sql.scalar(
            c, "SELECT count(*) FROM outbox WHERE key = :k AND published_at IS NULL",
            {"k": self.key})))


@pytest.fixture
async def rows(router: ShardRouter, settings: Settings) -> AsyncIterator[OutboxRows]:
    r = OutboxRows(router, settings)
    await r.create()
    try:
        yield r
    finally:
        await r.drop()


async def test_trade_updates_are_published_when_the_transaction_commits(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    pubsub = stack.redis.pubsub()
    await pubsub.subscribe(RedisKeys(stack.settings.redis_prefix).trade_updates(acct.account_id))
    lagged = REGISTRY.get_sample_value("sherwood_outbox_publish_lag_seconds_count") or 0
    try:
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"  # type: ignore[index]
        t0 = time.monotonic()
        async with stack.http() as http:
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
        assert r.status_code == 200, r.text
        got: list[tuple[float, str]] = []
        while not got or got[-1][1] != "fill":
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, f"no trade update after {got}"
            got.append((time.monotonic() - t0, json.loads(msg["data"])["event"]))
    finally:
        await pubsub.aclose()
    assert [e for _, e in got] == ["accepted", "pending_new", "new", "fill"]
    # the publisher's idle poll is 30 s here: these came with their commits
    assert stack.settings.outbox_idle_s >= 30 and got[-1][0] < 2, got
    # each committed batch's wait is measured for /metrics
    assert (REGISTRY.get_sample_value("sherwood_outbox_publish_lag_seconds_count") or 0) > lagged


async def received(redis: Redis, rows: OutboxRows, count: int,
                   act: Callable[[], Awaitable[object]]) -> list[int]:
    """The ``n`` of the first ``count`` trade updates published under ``rows.key`` once ``act``
    has run (subscribed before it runs, so none is missed)."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(RedisKeys(rows.prefix).trade_updates(rows.key))
    try:
        await pubsub.get_message(timeout=2)
        await act()
        got: list[int] = []
        while len(got) < count:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, got
            got.append(json.loads(msg["data"])["n"])
        return got
    finally:
        await pubsub.aclose()


@contextlib.asynccontextmanager
async def redis_down() -> AsyncIterator[Redis]:
    """A client of a Redis that is not there (a free port): every command fails fast."""
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        yield down
    finally:
        await down.aclose()


async def test_a_failed_publish_leaves_the_rows_for_the_next_round_in_order(
    rows: OutboxRows, redis: Redis,
) -> None:
    """Claim and mark are one statement; a Redis that refuses rolls the mark back."""
    await rows.write(0, 1, 2)
    assert await rows.unmarked() == 3
    async with redis_down() as down:
        failing = OutboxPublisher(rows.engine, down, prefix=rows.prefix, batch=10_000)
        with pytest.raises(Exception):  # noqa: B017 -- whatever the client raises
            await failing.publish_once()
    assert await rows.unmarked() == 3  # nothing marked
    ok = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, batch=10_000)
    assert await received(redis, rows, 3, ok.publish_once) == [0, 1, 2]
    assert await rows.unmarked() == 0


async def test_rows_handed_over_at_commit_are_marked_or_left_for_the_sweep(
    rows: OutboxRows, redis: Redis,
) -> None:
    """The at-commit path publishes and marks; if Redis refuses, the rows stay unmarked and the
    sweep (which leaves rows younger than its grace alone) publishes them."""
    ok = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, mark_engine=rows.marks, batch=10_000)
    ok.committed(await rows.write(0, 1, 2))
    assert await received(redis, rows, 3, ok.publish_committed) == [0, 1, 2]
    assert await rows.unmarked() == 0

    rows.fresh()
    async with redis_down() as down:
        failing = OutboxPublisher(rows.engine, down, prefix=rows.prefix, mark_engine=rows.marks)
        failing.committed(await rows.write(0, 1, 2))
        with pytest.raises(Exception):  # noqa: B017 -- whatever the client raises
            await failing.publish_committed()
    assert await rows.unmarked() == 3
    await ok.publish_once(min_age_s=60)  # too young for the sweep: left alone
    assert await rows.unmarked() == 3
    assert await received(redis, rows, 3, ok.publish_once) == [0, 1, 2]
    assert await rows.unmarked() == 0


async def test_the_in_memory_queue_is_bounded_and_what_overflows_is_published_from_the_table(
    rows: OutboxRows, redis: Redis,
) -> None:
    """Commits handed over faster than the publisher runs (Redis slow or down) fill the in-memory
    queue up to its bound, never past it; past it, the rows are left to the table (the truth),
    and the next round publishes every one of them, in commit order, and marks them."""
    pub = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, mark_engine=rows.marks,
                          max_queue=3, idle_s=30.0)
    for n in range(10):  # ten commits while the publisher does not run
        pub.committed(await rows.write(n))
        assert pub.queued <= 3
    assert pub.overflowed and await rows.unmarked() == 10
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(pub.run(stop)))

    try:
        assert await received(redis, rows, 10, start) == list(range(10))
        # back to the at-commit path: the next commit goes out with it, not at the idle poll

        async def commit() -> None:
            pub.committed(await rows.write(10))

        assert await received(redis, rows, 1, commit) == [10]
        stop.set()
        await asyncio.wait_for(tasks[0], 10)
        assert await rows.unmarked() == 0 and not pub.overflowed
    finally:
        stop.set()


async def test_marks_of_rows_published_at_commit_are_batched_and_flushed_at_stop(
    rows: OutboxRows, redis: Redis,
) -> None:
    """Rows handed over at commit go out at once, but are marked together later (one statement
    for many commits, not one per commit), and whatever is unmarked when the publisher stops is
    marked then."""
    pub = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, mark_engine=rows.marks,
                          idle_s=30.0, grace_s=600.0, mark_delay_s=120.0)
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(stop))
    try:
        for n in range(3):  # three commits, each published as it commits

            async def commit(n: int = n) -> None:
                pub.committed(await rows.write(n))

            assert await received(redis, rows, 1, commit) == [n]
        assert await rows.unmarked() == 3  # published, their marks not written yet
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await rows.unmarked() == 0  # marked when the publisher stopped
    finally:
        stop.set()


async def test_admission_slots_go_back_with_the_next_round_and_are_dropped_while_catching_up(
    rows: OutboxRows, redis: Redis,
) -> None:
    """Orders a commit took out of transit leave the shard's admission set (api/admission.py)
    with the round that publishes the commit's rows, or on their own when it wrote none; while
    the publisher catches up from the table they are dropped (their slots lapse)."""
    key = RedisKeys(rows.prefix).admission(0)
    await redis.zadd(key, {"o1": 1e15, "o2": 1e15, "o3": 1e15})
    pub = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, mark_engine=rows.marks,
                          idle_s=30.0, admission_keys=let_go_keys(RedisKeys(rows.prefix), 0))
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(stop))

    async def members() -> set[bytes]:
        return set(await redis.zrange(key, 0, -1))

    async def until(want: set[bytes]) -> None:
        deadline = time.monotonic() + 5
        while await members() != want:
            assert time.monotonic() < deadline, await members()
            await asyncio.sleep(0.01)

    try:
        written = await rows.write(1)
        pub.release(["o1"])  # as the order store calls them after a commit
        pub.committed(written)
        await until({b"o2", b"o3"})
        pub.release(["o2"])  # a commit with no trade update
        await until({b"o3"})
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    pub._catch_up()
    pub.release(["o3"])
    assert await pub.publish_committed() == 0 and await members() == {b"o3"}
    await redis.delete(key)


async def test_freed_admission_slots_are_announced_to_the_api_waiters(
    rows: OutboxRows, redis: Redis,
) -> None:
    """A round that frees slots PUBLISHes how many on the shard's ``admission_freed`` channel, in
    the same pipeline (the API's waiting requests are woken by it)."""
    keys = RedisKeys(rows.prefix)
    await redis.zadd(keys.admission(0), {"o1": 1e15, "o2": 1e15})
    pub = OutboxPublisher(rows.engine, redis, prefix=rows.prefix, mark_engine=rows.marks,
                          idle_s=30.0, admission_keys=let_go_keys(keys, 0))
    sub = redis.pubsub(ignore_subscribe_messages=True)
    await sub.subscribe(keys.admission_freed(0))
    try:
        pub.release(["o1", "o2"])
        assert await pub.publish_committed(mark=False) == 0
        m = None
        deadline = time.monotonic() + 5
        while m is None:
            assert time.monotonic() < deadline, "nothing announced"
            m = await sub.get_message(timeout=1.0)
        assert m["data"] in (b"2", "2")
        assert await redis.zcard(keys.admission(0)) == 0
    finally:
        await sub.aclose()
        await redis.delete(keys.admission(0))
