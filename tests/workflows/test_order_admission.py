"""Admission control (api/admission.py) on the real stack: past ``order_admission_per_shard``
orders of a shard in transit, POST /v2/orders is refused (429 ``over_capacity``, Retry-After)
with nothing written and no workflow started, at once or after waiting for a slot that the shard
gives back and announces (then it is admitted); under the limit orders are
unaffected; an order keeps its slot while it is on its way to a venue and the shard gives it back
when the order rests or ends; a refused, rejected or waiting order gives it back at once. The
Redis script itself: tests/api/test_admission.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from api.admission import Admission
from api.app import create_app
from api.services.orders import order_id_for
from sherwood.contracts import RedisKeys
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, wait_order
from tests.workflows.test_input_bounds import no_workflow


@contextlib.asynccontextmanager
async def limited_app(stack: TradingStack, per_shard: int, hold_max_s: float = 60,
                      wait_s: float = 0.0) -> AsyncIterator[tuple[FastAPI, Admission]]:
    """A second API process on the same stack, with an admission limit (the stack's own API has
    none; both count in the same Redis set). Slots lapse only after ``hold_max_s``: what gives
    them back sooner is the API or the shard. A request finding its shard full waits
    ``wait_s`` (none: refused at once)."""
    app = create_app(stack.settings.model_copy(update={"order_admission_per_shard": per_shard,
                                                       "order_admission_hold_max_s": hold_max_s,
                                                       "order_admission_wait_s": wait_s}))
    async with app.router.lifespan_context(app):
        admission = app.state.sherwood.admission
        if wait_s:
            await asyncio.wait_for(admission.listening.wait(), 10)
        yield app, admission


@contextlib.asynccontextmanager
async def http_to(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=30) as c:
        yield c


def buy(coid: str, qty: str = "1") -> dict[str, str]:
    return {"symbol": "F", "qty": qty, "side": "buy", "type": "limit", "limit_price": "12.50",
            "time_in_force": "day", "client_order_id": coid}


async def no_order(stack: TradingStack, acct, coid: str) -> None:  # type: ignore[no-untyped-def]
    """No row and no workflow of the order ``coid`` names."""
    oid = order_id_for(acct.account_id, coid)
    async with stack.router.engine(acct.shard).connect() as conn:
        n = (await conn.execute(text("SELECT count(*) FROM orders WHERE id = :o"), {"o": oid})).scalar_one()
    assert n == 0
    await no_workflow(stack, str(oid))


async def nothing_written(stack: TradingStack, acct, coid: str, cash: str) -> None:  # type: ignore[no-untyped-def]
    """No order of the account at all, and its cash untouched (no hold)."""
    await no_order(stack, acct, coid)
    async with stack.router.engine(acct.shard).connect() as conn:
        n = (await conn.execute(text("SELECT count(*) FROM orders WHERE account_id = :a"),
                                {"a": acct.account_id})).scalar_one()
    assert n == 0
    assert await balances(stack, acct) == {"cash": Decimal(cash)}  # no hold


def resting(coid: str) -> dict[str, str]:
    """A buy below the market: it rests at a venue."""
    return {**buy(coid), "limit_price": "12.00"}


@pytest.fixture(autouse=True)
async def empty_sets(stack: TradingStack) -> None:
    """Every shard's admission set starts empty (a slot kept by an earlier test lapses only
    after its hold)."""
    keys = RedisKeys(stack.settings.redis_prefix)
    await stack.redis.delete(*(k for n in range(stack.settings.shard_count)
                               for k in (keys.admission(n), keys.admission_holds(n))))


async def counted(stack: TradingStack, shard: int) -> set[str]:
    """The order ids the shard's admission set holds."""
    key = RedisKeys(stack.settings.redis_prefix).admission(shard)
    return {m.decode() if isinstance(m, bytes) else m for m in await stack.redis.zrange(key, 0, -1)}


async def until_released(stack: TradingStack, shard: int, order_id: str, within: float = 10) -> float:
    """Wait until ``order_id`` is out of the shard's set; how long it took."""
    t0 = time.monotonic()
    while order_id in await counted(stack, shard):
        assert time.monotonic() - t0 < within, f"{order_id} still counted after {within}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def other_shard_account(stack: TradingStack, shard: int):  # type: ignore[no-untyped-def]
    other = await stack.account("1000")
    while other.shard == shard:
        other = await stack.account("1000")
    return other


async def test_an_over_limit_post_is_refused_with_nothing_written(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        # another order of the shard is in transit (counted by another API process, say)
        async with admission.admit(acct.shard, "another-order") as slot:
            slot.keep()
        coid = f"adm-{uuid.uuid4().hex[:8]}"
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 429, r.text
        assert r.json()["reason"] == "over_capacity" and r.json()["code"] == 42910000
        assert int(r.headers["Retry-After"]) >= 1
        await nothing_written(stack, acct, coid, "1000")
        assert await counted(stack, acct.shard) == {"another-order"}
        # another shard's orders are not held back by this one
        other = await other_shard_account(stack, acct.shard)
        r2 = await http.post("/v2/orders", headers=headers(other), json=buy(f"o-{coid}"))
        assert r2.status_code == 200, r2.text
        # once the slot is free, the same request is an order like any other
        await stack.redis.zrem(RedisKeys(stack.settings.redis_prefix).admission(acct.shard),
                               "another-order")
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 200, r.text
        await wait_order(stack, acct, r.json()["id"], {"filled"})
        await until_released(stack, acct.shard, r.json()["id"])
        assert admission.refused == 1


async def test_an_order_keeps_its_slot_on_its_way_to_the_venue_and_the_shard_gives_it_back(
        stack: TradingStack) -> None:
    """The venue answers 1 s late: the order is routed and not yet resting, and a second order of
    the shard is refused; once the venue acknowledges it (it rests), the shard's worker gives
    the slot back, long before it would lapse (60 s)."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, _), http_to(app) as http:
        with stack.venues_behave(latency=1.0):
            r = await http.post("/v2/orders", headers=headers(acct),
                                json=resting(f"k-{uuid.uuid4().hex[:6]}"))
            assert r.status_code == 200, r.text
            first = r.json()["id"]
            assert await counted(stack, acct.shard) == {first}  # answered, still in transit
            coid = f"k2-{uuid.uuid4().hex[:6]}"
            r2 = await http.post("/v2/orders", headers=headers(acct), json=resting(coid))
            assert r2.status_code == 429 and r2.json()["reason"] == "over_capacity", r2.text
            held = await balances(stack, acct)
            await no_order(stack, acct, coid)
            assert await balances(stack, acct) == held  # the first order's hold only
            took = await until_released(stack, acct.shard, first)
            assert took < 30
            assert (await wait_order(stack, acct, first, {"new"}))["status"] == "new"  # it rests
        r3 = await http.post("/v2/orders", headers=headers(acct), json=resting(coid))
        assert r3.status_code == 200, r3.text
        for oid in (first, r3.json()["id"]):
            assert (await http.delete(f"/v2/orders/{oid}", headers=headers(acct))).status_code == 204
            await wait_order(stack, acct, oid, {"canceled"})


async def test_an_order_waiting_for_a_slot_is_admitted_when_the_shard_gives_one_back(
        stack: TradingStack) -> None:
    """The venue answers 1 s late and the limit is one: a second order of the shard waits in the
    API (nothing written) and is admitted as soon as the first rests at the venue: the shard's
    worker announces the freed slot (the API's own polling is set to 30 s, past the wait)."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1, wait_s=8) as (app, admission), http_to(app) as http:
        admission.poll_s = 30
        with stack.venues_behave(latency=1.0):
            r = await http.post("/v2/orders", headers=headers(acct),
                                json=resting(f"w-{uuid.uuid4().hex[:6]}"))
            assert r.status_code == 200, r.text
            first = r.json()["id"]
            coid = f"w2-{uuid.uuid4().hex[:6]}"
            second = asyncio.create_task(
                http.post("/v2/orders", headers=headers(acct), json=resting(coid)))
            t0 = time.monotonic()
            while not admission._waiters.get(acct.shard):
                assert time.monotonic() - t0 < 5
                await asyncio.sleep(0.01)
            await no_order(stack, acct, coid)  # waiting: nothing written
            await until_released(stack, acct.shard, first)
            freed = time.monotonic()
            r2 = await asyncio.wait_for(second, 15)
            assert r2.status_code == 200, r2.text
            assert admission.waited == 1 and admission.refused == 0
            assert time.monotonic() - freed < 4  # woken by the shard, not by the wait's end
        for oid in (first, r2.json()["id"]):
            assert (await http.delete(f"/v2/orders/{oid}", headers=headers(acct))).status_code == 204
            await wait_order(stack, acct, oid, {"canceled"})


async def test_orders_under_the_limit_are_unaffected(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        for i in range(4):  # one at a time: never over a limit of one
            r = await http.post("/v2/orders", headers=headers(acct), json=buy(f"u{i}-{uuid.uuid4().hex[:6]}"))
            assert r.status_code == 200, r.text
            await wait_order(stack, acct, r.json()["id"], {"filled"})
            await until_released(stack, acct.shard, r.json()["id"])  # the fill gave it back
        assert admission.refused == 0


async def test_a_burst_over_the_limit_sheds_the_excess_and_books_the_rest(stack: TradingStack) -> None:
    """Eight customers of one shard post at once against a limit of two: every answer is an
    order or an immediate 429, the refused wrote nothing, and the slots all come back."""
    await stack.set_quote("F", "12.30", "12.31")
    accts = [await stack.account("1000")]
    while len(accts) < 8:
        a = await stack.account("1000")
        if a.shard == accts[0].shard:
            accts.append(a)
    coids = [f"b{i}-{uuid.uuid4().hex[:6]}" for i in range(len(accts))]
    async with limited_app(stack, 2) as (app, admission), http_to(app) as http:
        answers = await asyncio.gather(*(http.post("/v2/orders", headers=headers(a), json=buy(c))
                                         for a, c in zip(accts, coids, strict=True)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    assert admission.refused == codes.count(429)
    for a, c, r in zip(accts, coids, answers, strict=True):
        if r.status_code == 429:
            assert r.json()["reason"] == "over_capacity"
            await nothing_written(stack, a, c, "1000")
        else:
            await wait_order(stack, a, r.json()["id"], {"filled"})
            await until_released(stack, a.shard, r.json()["id"])
    assert await counted(stack, accts[0].shard) == set()


async def test_the_slot_is_given_back_at_once_when_nothing_is_in_transit(stack: TradingStack) -> None:
    """A refusal by the workflow, a client_order_id conflict and an order that waits at the
    broker (a trailing stop) leave nothing on its way to a venue: the API gives the slot back
    with its answer, and the next order of the shard goes through at once."""
    await stack.set_quote("F", "12.30", "12.31")
    await stack.set_quote("NFLX", "400.00", "400.10")
    acct = await stack.account("10000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        coid = f"s-{uuid.uuid4().hex[:6]}"
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 200, r.text
        await wait_order(stack, acct, r.json()["id"], {"filled"})
        await until_released(stack, acct.shard, r.json()["id"])
        # refused by the workflow after admission: buying power (403)
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(f"x-{coid}", qty="10000"))
        assert r.status_code == 403, r.text
        assert await counted(stack, acct.shard) == set()
        # refused after admission: the client_order_id of another order (422)
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid, qty="2"))
        assert r.status_code == 422, r.text
        assert await counted(stack, acct.shard) == set()
        # a trailing stop waits for its trigger at the broker: nothing in transit
        r = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "NFLX", "qty": "1", "side": "buy", "type": "trailing_stop",
            "time_in_force": "day", "trail_percent": "1"})
        assert r.status_code == 200 and r.json()["status"] == "new", r.text
        assert await counted(stack, acct.shard) == set()
        assert (await http.delete(f"/v2/orders/{r.json()['id']}", headers=headers(acct))).status_code == 204
        await wait_order(stack, acct, r.json()["id"], {"canceled"})
        assert admission.refused == 0


async def test_a_client_gone_mid_accept_leaves_the_slot_to_the_shard(stack: TradingStack) -> None:
    """The client gives up while its order is being accepted: the order may go on, so its slot
    stays counted until the order rests or ends (here: it fills), never leaked."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        coid = f"c-{uuid.uuid4().hex[:6]}"
        oid = str(order_id_for(acct.account_id, coid))
        task = asyncio.create_task(http.post("/v2/orders", headers=headers(acct), json=buy(coid)))
        while oid not in await counted(stack, acct.shard) and not task.done():
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # the same order posted again is counted once and answered as the order it is
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 200 and r.json()["id"] == oid, r.text
        await wait_order(stack, acct, oid, {"filled"})
        await until_released(stack, acct.shard, oid)
        assert admission.refused == 0
