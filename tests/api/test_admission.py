"""Admission control's count in Redis (api/admission.py), on the machine's Redis: a shard's
orders in transit up to the limit, every API process counting in one set; the same order counted
once; slots given back on answers that leave nothing in transit, kept on those that may not; and
lapsing on Redis's clock. The stack's view (orders, the shard's release): tests/workflows/
test_order_admission.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from api.admission import Admission
from api.errors import ApiError
from domain.admission import keeps_slot, leaves_transit
from sherwood.admission_slots import LET_GO, let_go_keys
from sherwood.contracts import RedisKeys


def two(redis: Redis, limit: int = 2, hold_max_s: float = 60) -> tuple[Admission, Admission]:
    """Two API processes' admissions on one fresh prefix."""
    prefix = f"adm-{uuid.uuid4().hex[:8]}"
    return (Admission(limit, redis=redis, prefix=prefix, hold_max_s=hold_max_s),
            Admission(limit, redis=redis, prefix=prefix, hold_max_s=hold_max_s))


async def take(adm: Admission, shard: int, order_id: str) -> None:
    """Admit ``order_id`` and keep its slot (an order gone on in transit)."""
    async with adm.admit(shard, order_id) as slot:
        slot.keep()


async def test_the_limit_is_shared_by_every_api_process_and_per_shard(redis: Redis) -> None:
    a, b = two(redis)
    await take(a, 0, "o1")
    await take(b, 0, "o2")
    with pytest.raises(ApiError) as refused:
        await take(a, 0, "o3")
    assert refused.value.status == 429 and refused.value.reason == "over_capacity"
    assert refused.value.code == 42910000 and refused.value.headers == {"Retry-After": "1"}
    assert a.refused == 1
    await take(b, 1, "o4")  # another shard has its own limit
    # the same order again is counted once (a client's retry), and admitted
    await take(b, 0, "o1")
    assert await a.in_transit(0) == 2
    # the shard gives one back (the outbox publisher's ZREM): the next order is admitted
    await redis.zrem(RedisKeys(a.keys.prefix).admission(0), "o2")
    await take(a, 0, "o3")


@pytest.mark.parametrize(("error", "kept"), [
    (ApiError(403, "insufficient_buying_power", "x"), False),
    (ApiError(422, "idempotency_conflict", "x"), False),
    (ApiError(504, "order_pending", "x"), True),
    (TimeoutError(), True),
    (asyncio.CancelledError(), True),
    (RuntimeError("unexpected"), True),
], ids=["403", "422", "504", "timeout", "cancelled", "unexpected"])
async def test_a_refusal_gives_the_slot_back_and_an_answer_that_may_leave_the_order_on_keeps_it(
        redis: Redis, error: BaseException, kept: bool) -> None:
    adm, _ = two(redis, limit=1)
    with pytest.raises(type(error)):
        async with adm.admit(0, "o1"):
            raise error
    assert await adm.in_transit(0) == (1 if kept else 0)


async def test_an_answer_that_leaves_nothing_in_transit_gives_the_slot_back(redis: Redis) -> None:
    adm, _ = two(redis, limit=1)
    async with adm.admit(0, "o1"):
        assert await adm.in_transit(0) == 1
    assert await adm.in_transit(0) == 0
    # a repeat of an order counted already does not give back that order's slot
    await take(adm, 0, "o2")
    async with adm.admit(0, "o2"):
        pass
    assert await adm.in_transit(0) == 1


@contextlib.asynccontextmanager
async def waiting(redis: Redis, limit: int = 1, wait_s: float = 5, poll_s: float = 30,
                  hold_max_s: float = 60) -> AsyncIterator[tuple[Admission, Admission]]:
    """Two API processes whose requests wait up to ``wait_s`` for a slot, each with its wake-up
    subscription running; ``poll_s`` long, so that only a wake-up admits a waiter in time."""
    prefix = f"adm-{uuid.uuid4().hex[:8]}"
    adms = tuple(Admission(limit, redis=redis, prefix=prefix, hold_max_s=hold_max_s,
                           wait_s=wait_s, poll_s=poll_s) for _ in range(2))
    tasks = [asyncio.create_task(a.run()) for a in adms]
    try:
        for a in adms:  # subscribed: a PUBLISH now reaches both
            await asyncio.wait_for(a.listening.wait(), 5)
        yield adms[0], adms[1]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def queued(adm: Admission, shard: int, n: int) -> None:
    """Wait until ``n`` requests of ``adm`` wait for a slot of ``shard``."""
    t0 = time.monotonic()
    while len([f for f in adm._waiters.get(shard, ()) if not f.done()]) < n:
        assert time.monotonic() - t0 < 5, "never queued"
        await asyncio.sleep(0.005)


async def waits(adm: Admission, shard: int, order_id: str, ahead: int = 0) -> asyncio.Task[None]:
    """``order_id`` posted to ``adm`` while its shard is full: once it waits, ``ahead`` others
    waiting before it."""
    task = asyncio.create_task(take(adm, shard, order_id))
    await queued(adm, shard, ahead + 1)
    return task


async def test_a_request_finding_its_shard_full_waits_and_the_shards_release_admits_it(
        redis: Redis) -> None:
    async with waiting(redis) as (a, b):
        await take(a, 0, "o1")
        second = await waits(b, 0, "o2")
        assert not second.done() and await a.in_transit(0) == 1  # waiting, nothing written
        # the shard's worker takes o1 out of transit (o1 was answered: the last hold goes)
        t0 = time.monotonic()
        assert await let_go(redis, a, 0, "o1") == 1
        await asyncio.wait_for(second, 5)
        assert time.monotonic() - t0 < 2  # woken, not polled (poll_s is 30)
        assert b.waited == 1 and b.refused == 0
        assert await a.in_transit(0) == 1


async def test_a_waiter_is_refused_once_the_wait_is_over_with_nothing_written(redis: Redis) -> None:
    async with waiting(redis, wait_s=0.3) as (a, b):
        await take(a, 0, "o1")
        t0 = time.monotonic()
        with pytest.raises(ApiError) as refused:
            await take(b, 0, "o2")
        took = time.monotonic() - t0
        assert 0.3 <= took < 2, took
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        assert b.refused == 1 and await a.in_transit(0) == 1
        assert not [f for f in b._waiters.get(0, ()) if not f.done()]  # it left the queue


async def test_waiters_are_woken_first_come_first_served_and_only_as_many_as_were_freed(
        redis: Redis) -> None:
    async with waiting(redis) as (a, b):
        await take(a, 0, "o1")
        first = await waits(b, 0, "w1")
        second = await waits(b, 0, "w2", ahead=1)
        # another API process gives a slot back (an answer that leaves nothing in transit): it
        # tells every process's waiters, as the shard does
        t0 = time.monotonic()
        assert await let_go(redis, a, 0, "o1", mode="drop") == 1
        await asyncio.wait_for(first, 5)
        assert time.monotonic() - t0 < 2  # woken, not polled (poll_s is 30)
        assert not second.done()
        await queued(b, 0, 1)  # the second still waits, first in line now
        t0 = time.monotonic()
        # w1 is answered with nothing in transit: the second is next
        assert await let_go(redis, b, 0, "w1", mode="drop") == 1
        await asyncio.wait_for(second, 5)
        assert time.monotonic() - t0 < 2


async def test_a_waiter_finds_a_lapsed_slot_by_polling_without_a_wake_up(redis: Redis) -> None:
    prefix = f"adm-{uuid.uuid4().hex[:8]}"
    adm = Admission(1, redis=redis, prefix=prefix, hold_max_s=0.3, wait_s=5, poll_s=0.05)
    await take(adm, 0, "lost")  # its release never comes; no subscription runs either
    t0 = time.monotonic()
    await take(adm, 0, "next")
    assert 0.2 <= time.monotonic() - t0 < 2


async def let_go(redis: Redis, adm: Admission, shard: int, *ids: str, mode: str = "hold") -> int:
    """Let go of a hold on ``ids`` (the shard's, as the outbox publisher does, or the API's), or
    ``mode="drop"`` the whole slot (an API answer that leaves nothing in transit); how many
    slots that freed."""
    return int(await redis.register_script(LET_GO)(keys=let_go_keys(adm.keys, shard),
                                                   args=[mode, *ids]))


async def test_a_slot_is_freed_once_both_the_answer_and_the_shard_let_go(redis: Redis) -> None:
    adm, _ = two(redis, limit=3)
    # the order leaves transit before its answer (a market order filled in its accept): the
    # slot stays counted until the API has answered
    async with adm.admit(0, "filled") as slot:
        assert await let_go(redis, adm, 0, "filled") == 0
        assert await adm.in_transit(0) == 1
        slot.keep()
    assert await adm.in_transit(0) == 0
    # answered in transit (it goes on to a venue): counted until the shard lets go
    await take(adm, 0, "routed")
    assert await adm.in_transit(0) == 1
    assert await let_go(redis, adm, 0, "routed") == 1
    assert await adm.in_transit(0) == 0
    # an answer that leaves nothing in transit frees the whole slot; the shard's later letting
    # go (or a repeat of it) changes nothing
    async with adm.admit(0, "rejected"):
        pass
    assert await adm.in_transit(0) == 0
    assert await let_go(redis, adm, 0, "rejected", "routed") == 0
    assert await redis.hlen(adm.keys.admission_holds(0)) == 0  # nothing left behind


async def test_a_slot_lapses_on_redis_clock(redis: Redis) -> None:
    adm, _ = two(redis, limit=1, hold_max_s=0.3)
    await take(adm, 0, "lost")  # its release never comes (a crashed worker, say)
    t0 = time.monotonic()
    while True:
        try:
            await take(adm, 0, "next")
            break
        except ApiError:
            assert time.monotonic() - t0 < 5
            await asyncio.sleep(0.02)
    assert time.monotonic() - t0 >= 0.2  # not before its hold


async def test_no_limit_and_redis_down_admit_everything() -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    adm = Admission(1, redis=down)
    for i in range(3):  # logged, admitted: it protects capacity, not money
        await take(adm, 0, f"o{i}")
    await down.aclose()
    assert Admission(0).per_shard is None and not Admission(0).on  # 0: no limit
    for i in range(3):
        await take(Admission(1), 0, f"o{i}")  # no Redis: no limit


@pytest.mark.parametrize(("state", "otype", "queued", "keeps"), [
    ("FUNDS_HELD", "market", None, True),  # on its way to a venue
    ("FUNDS_HELD", "limit", None, True),
    ("FUNDS_HELD", "stop", None, True),  # the venue holds a stop
    ("FUNDS_HELD", "limit", "2026-12-07T14:30:00+00:00", False),  # waits for the open
    ("FUNDS_HELD", "trailing_stop", None, False),  # waits for its trigger at the broker
    ("REJECTED", "market", None, False),
    ("FILLED", "market", None, False),
    ("ACKED", "limit", None, False),
])
def test_keeps_slot(state: str, otype: str, queued: str | None, keeps: bool) -> None:
    assert keeps_slot(state, otype, queued_until=queued) is keeps


@pytest.mark.parametrize(("frm", "to", "leaves"), [
    ("FUNDS_HELD", "ROUTED", False), ("", "PENDING", False), ("PENDING", "FUNDS_HELD", False),
    ("ROUTED", "ACKED", True), ("ROUTED", "FILLED", True), ("ROUTED", "PARTIALLY_FILLED", True),
    ("ROUTED", "PENDING_CANCEL", True), ("ROUTED", "STUCK", True), ("PENDING", "REJECTED", True),
    ("FUNDS_HELD", "CANCELED", True), ("ACKED", "ACKED", False), ("ROUTED", None, False),
])
def test_leaves_transit(frm: str, to: str | None, leaves: bool) -> None:
    assert leaves_transit(frm, to) is leaves
