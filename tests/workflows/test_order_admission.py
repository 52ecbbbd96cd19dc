"""Admission control (api/admission.py): past ``order_admission_per_shard`` order requests in
flight on a shard, POST /v2/orders is refused at once (429 ``over_capacity``, Retry-After) with
nothing written and no workflow started; under the limit orders are unaffected; the slot is
given back however the request is answered (an order, a refusal, an error, a client gone)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from api.admission import Admission
from api.app import create_app
from api.errors import ApiError
from api.services.orders import order_id_for
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, wait_order
from tests.workflows.test_input_bounds import no_workflow


@contextlib.asynccontextmanager
async def limited_app(stack: TradingStack, per_shard: int) -> AsyncIterator[tuple[FastAPI, Admission]]:
    """A second API process on the same stack, with its own admission limit."""
    app = create_app(stack.settings.model_copy(update={"order_admission_per_shard": per_shard}))
    async with app.router.lifespan_context(app):
        yield app, app.state.sherwood.admission


@contextlib.asynccontextmanager
async def http_to(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=30) as c:
        yield c


def buy(coid: str, qty: str = "1") -> dict[str, str]:
    return {"symbol": "F", "qty": qty, "side": "buy", "type": "limit", "limit_price": "12.50",
            "time_in_force": "day", "client_order_id": coid}


async def nothing_written(stack: TradingStack, acct, coid: str, cash: str) -> None:  # type: ignore[no-untyped-def]
    oid = order_id_for(acct.account_id, coid)
    async with stack.router.engine(acct.shard).connect() as conn:
        n = (await conn.execute(text("SELECT count(*) FROM orders WHERE id = :o OR account_id = :a"),
                                {"o": oid, "a": acct.account_id})).scalar_one()
    assert n == 0
    await no_workflow(stack, str(oid))
    assert await balances(stack, acct) == {"cash": Decimal(cash)}  # no hold


async def test_an_over_limit_post_is_refused_with_nothing_written(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        async with admission.admit(acct.shard):  # another order of the shard is in flight
            coid = f"adm-{uuid.uuid4().hex[:8]}"
            r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
            assert r.status_code == 429, r.text
            assert r.json()["reason"] == "over_capacity" and r.json()["code"] == 42910000
            assert int(r.headers["Retry-After"]) >= 1
            await nothing_written(stack, acct, coid, "1000")
            # another shard's orders are not held back by this one
            other = await stack.account("1000")
            while other.shard == acct.shard:
                other = await stack.account("1000")
            r2 = await http.post("/v2/orders", headers=headers(other), json=buy(f"o-{coid}"))
            assert r2.status_code == 200, r2.text
        assert admission.in_flight(acct.shard) == 0 and admission.refused == 1
        # once the slot is free, the same request is an order like any other
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 200, r.text
        await wait_order(stack, acct, r.json()["id"], {"filled"})


async def test_orders_under_the_limit_are_unaffected(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        for i in range(4):  # one at a time: never over a limit of one
            r = await http.post("/v2/orders", headers=headers(acct), json=buy(f"u{i}-{uuid.uuid4().hex[:6]}"))
            assert r.status_code == 200, r.text
            await wait_order(stack, acct, r.json()["id"], {"filled"})
        assert admission.refused == 0 and admission.in_flight(acct.shard) == 0


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
        assert admission.in_flight(accts[0].shard) == 0
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    assert admission.refused == codes.count(429)
    for a, c, r in zip(accts, coids, answers, strict=True):
        if r.status_code == 429:
            assert r.json()["reason"] == "over_capacity"
            await nothing_written(stack, a, c, "1000")
        else:
            await wait_order(stack, a, r.json()["id"], {"filled"})


async def test_the_slot_is_given_back_however_the_order_is_answered(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("100")
    async with limited_app(stack, 1) as (app, admission), http_to(app) as http:
        coid = f"s-{uuid.uuid4().hex[:6]}"
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid))
        assert r.status_code == 200, r.text
        assert admission.in_flight(acct.shard) == 0
        # refused by the workflow after admission: buying power (403)
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(f"x-{coid}", qty="100"))
        assert r.status_code == 403, r.text
        assert admission.in_flight(acct.shard) == 0
        # refused after admission: the client_order_id of another order (422)
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(coid, qty="2"))
        assert r.status_code == 422, r.text
        assert admission.in_flight(acct.shard) == 0
        # the client gives up while the order is being accepted (its request is cancelled)
        task = asyncio.create_task(http.post("/v2/orders", headers=headers(acct), json=buy(f"c-{coid}")))
        while admission.in_flight(acct.shard) == 0 and not task.done():
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert admission.in_flight(acct.shard) == 0
        # and the next order goes through
        r = await http.post("/v2/orders", headers=headers(acct), json=buy(f"n-{coid}"))
        assert r.status_code == 200, r.text
        assert admission.refused == 0


@pytest.mark.parametrize("error", [TimeoutError, asyncio.CancelledError, ApiError(504, "order_pending", "x")],
                         ids=["timeout", "cancelled", "api-error"])
async def test_admission_releases_on_any_exit(error: BaseException | type[BaseException]) -> None:
    adm = Admission(1)
    with pytest.raises(BaseException):  # noqa: B017 -- the error itself, whatever it is
        async with adm.admit(3):
            assert adm.in_flight(3) == 1
            raise error
    assert adm.in_flight(3) == 0
    async with adm.admit(3):
        with pytest.raises(ApiError) as refused:
            async with adm.admit(3):
                pass
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        async with adm.admit(4):  # another shard
            pass
    assert Admission(0).per_shard is None  # 0: no limit
