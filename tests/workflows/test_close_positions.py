"""Closing positions through alpaca-py's TradingClient on the real stack: ``close_position``
(qty, percentage, everything) and ``close_all_positions`` (with and without ``cancel_orders``)
place market sells through the order workflow; bad input and held shares are refused with a
code and place nothing; ``qty_available`` leaves out what open sells hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tests.stack import TradingStack, headers, served
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.test_http_clients import trading_client


@pytest.fixture(scope="module")
async def base_url(stack: TradingStack) -> AsyncIterator[str]:
    async with served(stack.app) as url:
        yield url


async def bought(stack: TradingStack, acct: Any, symbol: str, qty: int) -> None:
    order = await place(stack, acct, symbol=symbol, qty=str(qty), side="buy", type="market",
                        time_in_force="day")
    await wait_order(stack, acct, order["id"], {"filled"})


async def open_orders(stack: TradingStack, acct: Any) -> list[dict[str, Any]]:
    async with stack.http() as http:
        r = await http.get("/v2/orders", params={"status": "open"}, headers=headers(acct))
    assert r.status_code == 200, r.text
    return r.json()


async def test_close_a_position_by_qty_by_percentage_then_all(stack: TradingStack, base_url: str) -> None:
    from alpaca.trading.enums import OrderSide, OrderType
    from alpaca.trading.models import Order
    from alpaca.trading.requests import ClosePositionRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("100000")
    await bought(stack, acct, "AAPL", 10)
    tc = trading_client(acct, base_url)

    order = await asyncio.to_thread(tc.close_position, "AAPL", ClosePositionRequest(qty="4"))
    assert isinstance(order, Order) and order.side == OrderSide.SELL and order.qty == "4"
    assert order.order_type == OrderType.MARKET
    await wait_order(stack, acct, str(order.id), {"filled"})
    assert (await asyncio.to_thread(tc.get_open_position, "AAPL")).qty == "6"

    order = await asyncio.to_thread(tc.close_position, "AAPL", ClosePositionRequest(percentage="50"))
    assert order.qty == "3"
    await wait_order(stack, acct, str(order.id), {"filled"})

    order = await asyncio.to_thread(tc.close_position, "AAPL")  # the rest
    assert order.qty == "3"
    await wait_order(stack, acct, str(order.id), {"filled"})
    assert await asyncio.to_thread(tc.get_all_positions) == []
    bal = await balances(stack, acct)
    assert not any(k.startswith("shares") for k in bal), bal


async def test_bad_closes_are_refused_with_a_code_and_place_nothing(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("100000")
    await bought(stack, acct, "AAPL", 5)
    # 2 shares held by an open sell: 3 available
    resting = await place(stack, acct, symbol="AAPL", qty="2", side="sell", type="limit",
                          limit_price="500", time_in_force="gtc")
    await wait_order(stack, acct, resting["id"], {"new"})
    before = await balances(stack, acct)
    cases = [
        ({"qty": "1", "percentage": "50"}, 422, "qty_and_percentage"),
        ({"qty": "abc"}, 422, "invalid_qty"), ({"qty": "-1"}, 422, "invalid_qty"),
        ({"qty": "1.0000000001"}, 422, "invalid_qty"), ({"qty": "1e26"}, 422, "qty_out_of_range"),
        ({"qty": "9" * 60}, 422, "qty_too_many_digits"),
        ({"percentage": "0"}, 422, "invalid_percentage"),
        ({"percentage": "100.5"}, 422, "percentage_out_of_range"),
        ({"percentage": "nan"}, 422, "invalid_percentage"),
        ({"percentage": "0.00000001"}, 422, "close_qty_zero"),  # 5e-10 share: below 1e-9
        ({"qty": "6"}, 422, "qty_exceeds_position"),
        ({"qty": "4"}, 403, "insufficient_qty"),
        ({}, 403, "insufficient_qty"),
    ]
    async with stack.http() as http:
        for params, status, reason in cases:
            r = await http.delete("/v2/positions/AAPL", params=params, headers=headers(acct))
            assert (r.status_code, r.json()["reason"]) == (status, reason), (params, r.text)
            assert isinstance(r.json()["code"], int)
        held = await http.delete("/v2/positions/AAPL", headers=headers(acct))
        assert held.json() | {"message": ""} == {
            "code": 40310000, "reason": "insufficient_qty", "message": "", "symbol": "AAPL",
            "available": "3", "existing_qty": "5", "held_for_orders": "2"}
        r = await http.delete("/v2/positions/MSFT", headers=headers(acct))
        assert (r.status_code, r.json()["reason"]) == (404, "position_not_found")
        r = await http.delete("/v2/positions", params={"cancel_orders": "maybe"}, headers=headers(acct))
        assert (r.status_code, r.json()["reason"]) == (422, "invalid_request")
        # what may be sold now: the open sell's 2 shares are not
        r = await http.get("/v2/positions/AAPL", headers=headers(acct))
        assert (r.json()["qty"], r.json()["qty_available"], r.json()["qty_held"]) == ("5", "3", "2")
    assert await balances(stack, acct) == before
    assert [o["id"] for o in await open_orders(stack, acct)] == [resting["id"]]


async def test_close_all_with_cancel_orders_leaves_no_position_and_no_open_order(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.models import ClosePositionResponse, Order

    await stack.set_quote("AAPL", "190.00", "190.05")
    await stack.set_quote("MSFT", "410.00", "410.10")
    acct = await stack.account("100000")
    await bought(stack, acct, "AAPL", 5)  # bought today: unsettled, still sellable
    await bought(stack, acct, "MSFT", 2)
    sell = await place(stack, acct, symbol="AAPL", qty="2", side="sell", type="limit",
                       limit_price="500", time_in_force="gtc")
    buy = await place(stack, acct, symbol="MSFT", qty="1", side="buy", type="limit",
                      limit_price="1.5", time_in_force="gtc")
    for o in (sell, buy):
        await wait_order(stack, acct, o["id"], {"new"})
    tc = trading_client(acct, base_url)
    aapl = await asyncio.to_thread(tc.get_open_position, "AAPL")
    assert (aapl.qty, aapl.qty_available) == ("5", "3")

    answers = await asyncio.to_thread(tc.close_all_positions, True)
    assert all(isinstance(a, ClosePositionResponse) for a in answers)
    assert sorted((a.symbol, a.status) for a in answers) == [("AAPL", 200), ("MSFT", 200)]
    by_symbol = {a.symbol: a.body for a in answers}
    assert all(isinstance(b, Order) for b in by_symbol.values())
    assert (by_symbol["AAPL"].qty, by_symbol["MSFT"].qty) == ("5", "2")
    for a in answers:
        await wait_order(stack, acct, str(a.order_id), {"filled"})
    for o in (sell, buy):
        await wait_order(stack, acct, o["id"], {"canceled"})
    assert await asyncio.to_thread(tc.get_all_positions) == []
    assert await asyncio.to_thread(tc.get_orders) == []
    bal = await balances(stack, acct)
    assert not any(k.startswith("shares") or k == "cash_held" for k in bal), bal


async def test_close_all_without_cancel_answers_each_position(stack: TradingStack) -> None:
    """Without cancel_orders a position whose shares an open sell holds is not closed (403 in
    its entry, with Alpaca's figures); the others are."""
    await stack.set_quote("AAPL", "190.00", "190.05")
    await stack.set_quote("MSFT", "410.00", "410.10")
    acct = await stack.account("100000")
    await bought(stack, acct, "AAPL", 3)
    await bought(stack, acct, "MSFT", 1)
    sell = await place(stack, acct, symbol="AAPL", qty="1", side="sell", type="limit",
                       limit_price="500", time_in_force="gtc")
    await wait_order(stack, acct, sell["id"], {"new"})
    async with stack.http() as http:
        r = await http.delete("/v2/positions", headers=headers(acct))
    assert r.status_code == 207, r.text
    got = {e["symbol"]: e for e in r.json()}
    assert got["AAPL"]["status"] == 403 and got["AAPL"]["body"]["reason"] == "insufficient_qty"
    assert got["AAPL"]["body"]["held_for_orders"] == "1"
    assert got["MSFT"]["status"] == 200 and got["MSFT"]["body"]["side"] == "sell"
    await wait_order(stack, acct, got["MSFT"]["order_id"], {"filled"})
    assert [o["id"] for o in await open_orders(stack, acct)] == [sell["id"]]
    assert (await balances(stack, acct)).get("shares_unsettled:MSFT", Decimal(0)) == 0
