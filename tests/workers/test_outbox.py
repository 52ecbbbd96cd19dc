"""The shard worker's outbox publisher: trade updates reach Redis as soon as the order
transaction commits (the store wakes the publisher), not at the next idle poll."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from db.router import ShardRouter
from sherwood.contracts import RedisKeys
from tests.stack import TradingStack, headers


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


async def test_a_failed_publish_leaves_the_rows_for_the_next_round_in_order(
    router: ShardRouter, redis: Redis,
) -> None:
    """Claim and mark are one statement; a Redis that refuses rolls the mark back."""
    import uuid

    from redis.asyncio import Redis as AsyncRedis

    from db import sql
    from db.engines import run_in_transaction
    from sherwood.embedded import free_port
    from workers.outbox import OutboxPublisher

    engine = router.engine(0)
    key = f"outbox-test-{uuid.uuid4()}"
    # the shard's real prefix: rows of other tests this claims still go where they belong
    prefix = router.redis_prefix

    async def pending() -> list[int]:
        rows = await run_in_transaction(engine, lambda c: sql.rows(
            c, "SELECT id FROM outbox WHERE key = :k AND published_at IS NULL ORDER BY id",
            {"k": key}))
        return [r["id"] for r in rows]

    async def add(conn):  # type: ignore[no-untyped-def]
        for n in range(3):
            await sql.execute(conn, "INSERT INTO outbox (topic, key, payload) "
                              "VALUES ('trade_updates', :k, CAST(:p AS jsonb))",
                              {"k": key, "p": json.dumps({"n": n})})

    await run_in_transaction(engine, add)
    ids = await pending()
    assert len(ids) == 3
    down = AsyncRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        failing = OutboxPublisher(engine, down, prefix=prefix, batch=10_000)
        with pytest.raises(Exception):  # noqa: B017 -- whatever the client raises
            await failing.publish_once()
    finally:
        await down.aclose()
    assert await pending() == ids  # nothing marked
    pubsub = redis.pubsub()
    await pubsub.subscribe(RedisKeys(prefix).trade_updates(key))
    try:
        await pubsub.get_message(timeout=2)
        await OutboxPublisher(engine, redis, prefix=prefix, batch=10_000).publish_once()
        got = []
        while len(got) < 3:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, got
            got.append(json.loads(msg["data"])["n"])
    finally:
        await pubsub.aclose()
    assert got == [0, 1, 2]
    assert await pending() == []


async def test_rows_handed_over_at_commit_are_marked_or_left_for_the_sweep(
    router: ShardRouter, redis: Redis,
) -> None:
    """The at-commit path publishes and marks; if Redis refuses, the rows stay unmarked and the
    sweep (which leaves rows younger than its grace alone) publishes them."""
    import uuid

    from redis.asyncio import Redis as AsyncRedis

    from db import sql
    from db.engines import make_engine, run_in_transaction
    from sherwood.embedded import free_port
    from workers.outbox import OutboxPublisher

    engine = router.engine(0)
    marks = make_engine(router.shard_urls[0], pool_size=1, autocommit=True)
    prefix = router.redis_prefix

    async def write(key: str) -> list[sql.Row]:
        return await run_in_transaction(engine, lambda c: sql.rows(
            c, "INSERT INTO outbox (topic, key, payload) SELECT 'trade_updates', :k, "
            "jsonb_build_object('n', n) FROM generate_series(0, 2) n "
            "RETURNING id, key, payload::text AS payload", {"k": key}))

    async def unmarked(key: str) -> int:
        return int(await run_in_transaction(engine, lambda c: sql.scalar(
            c, "SELECT count(*) FROM outbox WHERE key = :k AND published_at IS NULL", {"k": key})))

    async def received(key: str, act) -> list[int]:  # type: ignore[no-untyped-def]
        pubsub = redis.pubsub()
        await pubsub.subscribe(RedisKeys(prefix).trade_updates(key))
        try:
            await pubsub.get_message(timeout=2)
            await act()
            got = []
            while len(got) < 3:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                assert msg is not None, got
                got.append(json.loads(msg["data"])["n"])
            return got
        finally:
            await pubsub.aclose()

    try:
        ok = OutboxPublisher(engine, redis, prefix=prefix, mark_engine=marks, batch=10_000)
        key = f"outbox-commit-{uuid.uuid4()}"
        ok.committed(await write(key))
        assert await received(key, ok.publish_committed) == [0, 1, 2]
        assert await unmarked(key) == 0

        key = f"outbox-commit-{uuid.uuid4()}"
        down = AsyncRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
        try:
            failing = OutboxPublisher(engine, down, prefix=prefix, mark_engine=marks)
            failing.committed(await write(key))
            with pytest.raises(Exception):  # noqa: B017 -- whatever the client raises
                await failing.publish_committed()
        finally:
            await down.aclose()
        assert await unmarked(key) == 3
        await ok.publish_once(min_age_s=60)  # too young for the sweep: left alone
        assert await unmarked(key) == 3
        assert await received(key, ok.publish_once) == [0, 1, 2]
        assert await unmarked(key) == 0
    finally:
        await marks.dispose()


async def test_the_in_memory_queue_is_bounded_and_what_overflows_is_published_from_the_table(
    router: ShardRouter, redis: Redis,
) -> None:
    """Commits handed over faster than the publisher runs (Redis slow or down) fill the in-memory
    queue up to its bound, never past it; past it, the rows are left to the table (the truth),
    and the next round publishes every one of them, in commit order, and marks them."""
    import asyncio
    import uuid

    from db import sql
    from db.engines import make_engine, run_in_transaction
    from workers.outbox import OutboxPublisher

    engine = router.engine(0)
    marks = make_engine(router.shard_urls[0], pool_size=1, autocommit=True)
    prefix = router.redis_prefix
    key = f"outbox-bounded-{uuid.uuid4()}"

    async def write(n: int) -> list[sql.Row]:
        return await run_in_transaction(engine, lambda c: sql.rows(
            c, "INSERT INTO outbox (topic, key, payload) VALUES ('trade_updates', :k, "
            "jsonb_build_object('n', CAST(:n AS int))) RETURNING id, key, payload::text AS payload",
            {"k": key, "n": n}))

    async def unmarked() -> int:
        return int(await run_in_transaction(engine, lambda c: sql.scalar(
            c, "SELECT count(*) FROM outbox WHERE key = :k AND published_at IS NULL", {"k": key})))

    pub = OutboxPublisher(engine, redis, prefix=prefix, mark_engine=marks, max_queue=3,
                          idle_s=30.0)
    pubsub = redis.pubsub()
    await pubsub.subscribe(RedisKeys(prefix).trade_updates(key))
    stop = asyncio.Event()
    try:
        await pubsub.get_message(timeout=2)
        for n in range(10):  # ten commits while the publisher does not run
            pub.committed(await write(n))
            assert pub.queued <= 3
        assert pub.overflowed and await unmarked() == 10
        task = asyncio.create_task(pub.run(stop))
        got: list[int] = []
        while len(got) < 10:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, got
            got.append(json.loads(msg["data"])["n"])
        assert got == list(range(10))
        # back to the at-commit path: the next commit goes out with it, not at the idle poll
        pub.committed(await write(10))
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert msg is not None and json.loads(msg["data"])["n"] == 10
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await unmarked() == 0 and not pub.overflowed
    finally:
        stop.set()
        await pubsub.aclose()
        await marks.dispose()


async def test_marks_of_rows_published_at_commit_are_batched_and_flushed_at_stop(
    router: ShardRouter, redis: Redis,
) -> None:
    """Rows handed over at commit go out at once, but are marked together later (one statement
    for many commits, not one per commit), and whatever is unmarked when the publisher stops is
    marked then."""
    import asyncio
    import uuid

    from db import sql
    from db.engines import make_engine, run_in_transaction
    from workers.outbox import OutboxPublisher

    engine = router.engine(0)
    marks = make_engine(router.shard_urls[0], pool_size=1, autocommit=True)
    prefix = router.redis_prefix
    key = f"outbox-marks-{uuid.uuid4()}"

    async def write(n: int) -> list[sql.Row]:
        return await run_in_transaction(engine, lambda c: sql.rows(
            c, "INSERT INTO outbox (topic, key, payload) VALUES ('trade_updates', :k, "
            "jsonb_build_object('n', CAST(:n AS int))) RETURNING id, key, payload::text AS payload",
            {"k": key, "n": n}))

    async def unmarked() -> int:
        return int(await run_in_transaction(engine, lambda c: sql.scalar(
            c, "SELECT count(*) FROM outbox WHERE key = :k AND published_at IS NULL", {"k": key})))

    pub = OutboxPublisher(engine, redis, prefix=prefix, mark_engine=marks, idle_s=30.0,
                          grace_s=600.0, mark_delay_s=120.0)
    pubsub = redis.pubsub()
    await pubsub.subscribe(RedisKeys(prefix).trade_updates(key))
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(stop))
    try:
        await pubsub.get_message(timeout=2)
        for n in range(3):  # three commits, each published as it commits
            pub.committed(await write(n))
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None and json.loads(msg["data"])["n"] == n
        assert await unmarked() == 3  # published, their marks not written yet
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await unmarked() == 0  # marked when the publisher stopped
    finally:
        stop.set()
        await pubsub.aclose()
        await marks.dispose()
