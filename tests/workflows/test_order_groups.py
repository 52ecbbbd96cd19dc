"""Order groups (bracket, oco, oto) through alpaca-py's TradingClient on the real stack: the
legs held at the broker and released correctly (shares held once, never twice), a take-profit's
fills shrinking or canceling its stop-loss, an entry's fill making the exits live, canceling the
parent canceling the legs, bad input refused with a code and nothing written. The ledger
invariants audit finds nothing about the test's account after each test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers, served
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.test_http_clients import trading_client

SYM = "AAPL"


@pytest.fixture(scope="module")
async def base_url(stack: TradingStack) -> AsyncIterator[str]:
    async with served(stack.app) as url:
        yield url


async def bought(stack: TradingStack, acct: Any, qty: int, symbol: str = SYM) -> None:
    order = await place(stack, acct, symbol=symbol, qty=str(qty), side="buy", type="market",
                        time_in_force="day")
    await wait_order(stack, acct, order["id"], {"filled"})


async def legs(stack: TradingStack, acct: Any, parent_id: str) -> dict[str, dict[str, Any]]:
    async with stack.http() as http:
        r = await http.get(f"/v2/orders/{parent_id}", headers=headers(acct))
    assert r.status_code == 200, r.text
    body = r.json()
    return {"parent": body, **{("take_profit" if leg["type"] == "limit" else "stop_loss"): leg
                               for leg in body["legs"] or []}}


async def wait_legs(stack: TradingStack, acct: Any, parent_id: str, want: dict[str, str],
                    timeout: float = 15) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = await legs(stack, acct, parent_id)
        if all(got.get(k, {}).get("status") == v for k, v in want.items()):
            return got
        if time.monotonic() > deadline:
            raise AssertionError({k: (o.get("status"), o.get("qty"), o.get("filled_qty"))
                                  for k, o in got.items()})
        await asyncio.sleep(0.05)


async def clean_books(stack: TradingStack, acct: Any, *ids: str) -> None:
    assert await audit_rows_about(stack.router, acct, *ids) == []


async def test_bracket_entry_fill_makes_exits_live_and_take_profit_cancels_the_stop(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, TimeInForce
    from alpaca.trading.models import Order
    from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    tc = trading_client(acct, base_url)
    order = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
        symbol=SYM, qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=200),
        stop_loss=StopLossRequest(stop_price=180)))
    assert isinstance(order, Order) and order.order_class == OrderClass.BRACKET
    assert order.legs is not None and len(order.legs) == 2
    assert {(leg.side, leg.order_type.value, leg.status) for leg in order.legs} == {
        (OrderSide.SELL, "limit", OrderStatus.HELD), (OrderSide.SELL, "stop", OrderStatus.HELD)}
    tp_id = next(str(leg.id) for leg in order.legs if leg.limit_price == "200")

    got = await wait_legs(stack, acct, str(order.id),
                          {"parent": "filled", "take_profit": "new", "stop_loss": "held"})
    assert got["take_profit"]["qty"] == got["stop_loss"]["qty"] == "10"
    bal = await balances(stack, acct)
    assert bal[f"shares_held:{SYM}"] == 10  # held once, for the take-profit only
    assert f"shares:{SYM}" not in bal and f"shares_unsettled:{SYM}" not in bal

    # GET /v2/orders?nested=true (alpaca-py's GetOrdersRequest): the group once, legs under it
    from alpaca.trading.requests import GetOrdersRequest
    listed = await asyncio.to_thread(tc.get_orders, GetOrdersRequest(status="open", nested=True))
    assert [str(o.id) for o in listed] == [str(order.id)]
    assert listed[0].legs is not None and len(listed[0].legs) == 2

    await stack.set_quote(SYM, "200.00", "200.05")  # the take-profit's limit is reached
    got = await wait_legs(stack, acct, str(order.id), {"take_profit": "filled", "stop_loss": "canceled"})
    bal = await balances(stack, acct)
    assert not any(k.startswith("shares") and not k.startswith("shares_unsettled") for k in bal), bal
    assert await asyncio.to_thread(tc.get_orders, GetOrdersRequest(status="open")) == []
    await clean_books(stack, acct, str(order.id), tp_id)


async def test_oco_partial_take_profit_reduces_the_stop_and_full_fill_cancels_it(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, StopLossRequest, TakeProfitRequest

    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    await bought(stack, acct, 10)
    tc = trading_client(acct, base_url)
    with stack.venues_behave(engine={"fill_slices": [4, 6], "fill_delay": 1.0}):
        order = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
            symbol=SYM, qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
            order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=195),
            stop_loss=StopLossRequest(stop_price=185, limit_price=184)))
        assert order.order_class == OrderClass.OCO and order.limit_price == "195"
        assert order.legs is not None and [leg.order_type.value for leg in order.legs] == ["stop_limit"]
        await wait_legs(stack, acct, str(order.id), {"parent": "new", "stop_loss": "held"})
        assert (await balances(stack, acct))[f"shares_held:{SYM}"] == 10  # once, not twice
        await stack.set_quote(SYM, "195.00", "195.05")
        got = await wait_legs(stack, acct, str(order.id), {"parent": "partially_filled"})
        # the 4 shares sold: the stop-loss is for the 6 left, in the fill's own transaction
        assert got["stop_loss"]["status"] == "held" and got["stop_loss"]["qty"] == "6"
        got = await wait_legs(stack, acct, str(order.id), {"parent": "filled", "stop_loss": "canceled"})
    assert got["stop_loss"]["qty"] == "6" and got["stop_loss"]["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert f"shares_held:{SYM}" not in bal and f"shares_unsettled:{SYM}" not in bal
    await clean_books(stack, acct, str(order.id))


async def test_stop_loss_fires_at_the_bid_cancels_the_take_profit_then_sells_the_rest(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import (
        LimitOrderRequest,
        MarketOrderRequest,
        StopLossRequest,
        TakeProfitRequest,
    )

    sym = "MSFT"  # its own quotes: the trigger follows this symbol only
    await stack.set_quote(sym, "410.00", "410.10")
    acct = await stack.account("100000")
    tc = trading_client(acct, base_url)
    order = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
        symbol=sym, qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=420),
        stop_loss=StopLossRequest(stop_price=400)))
    got = await wait_legs(stack, acct, str(order.id),
                          {"parent": "filled", "take_profit": "new", "stop_loss": "held"})
    await stack.set_quote(sym, "405.00", "405.10")  # above the stop: nothing happens
    await stack.set_quote(sym, "399.50", "399.60")  # the bid crosses the stop
    got = await wait_legs(stack, acct, str(order.id), {"take_profit": "canceled",
                                                        "stop_loss": "filled"})
    assert got["stop_loss"]["filled_qty"] == "5" and got["take_profit"]["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert not any(k.startswith(f"shares:{sym}") or k.startswith(f"shares_held:{sym}") for k in bal)
    await clean_books(stack, acct, str(order.id))

    # an OCO whose take-profit sold 4 of 10 before the stop fired: the stop sells the 6 left
    await bought(stack, acct, 10, sym)
    with stack.venues_behave(engine={"fill_slices": [4, 6], "fill_delay": 30.0}):
        oco = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
            symbol=sym, qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
            order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=410),
            stop_loss=StopLossRequest(stop_price=395)))
        await wait_legs(stack, acct, str(oco.id), {"parent": "new", "stop_loss": "held"})
        await stack.set_quote(sym, "410.00", "410.10")
        got = await wait_legs(stack, acct, str(oco.id), {"parent": "partially_filled"})
        assert got["stop_loss"]["qty"] == "6"
        await stack.set_quote(sym, "405.00", "405.10")  # the take-profit's rest stops filling
    await stack.set_quote(sym, "394.00", "394.10")  # (the stop-loss then fills in one slice)
    got = await wait_legs(stack, acct, str(oco.id), {"parent": "canceled", "stop_loss": "filled"})
    assert (got["parent"]["filled_qty"], got["stop_loss"]["filled_qty"]) == ("4", "6")
    bal = await balances(stack, acct)
    assert not any(k.startswith(f"shares:{sym}") or k.startswith(f"shares_held:{sym}") for k in bal)
    await clean_books(stack, acct, str(oco.id))


async def test_canceling_the_parent_cancels_the_legs_and_releases_everything(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, StopLossRequest, TakeProfitRequest

    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    tc = trading_client(acct, base_url)
    # a limit entry below the market rests: the exits stay held
    order = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
        symbol=SYM, qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=150,
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=170),
        stop_loss=StopLossRequest(stop_price=140)))
    await wait_legs(stack, acct, str(order.id), {"parent": "new", "take_profit": "held",
                                                  "stop_loss": "held"})
    assert (await balances(stack, acct))["cash_held"] == 750
    await asyncio.to_thread(tc.cancel_order_by_id, str(order.id))
    await wait_legs(stack, acct, str(order.id), {"parent": "canceled", "take_profit": "canceled",
                                                  "stop_loss": "canceled"})
    assert await balances(stack, acct) == {"cash": 100000}
    await clean_books(stack, acct, str(order.id))

    # an OCO canceled through its leg: the whole group ends, the shares go back
    await bought(stack, acct, 3)
    before = await balances(stack, acct)
    oco = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
        symbol=SYM, qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=250),
        stop_loss=StopLossRequest(stop_price=150)))
    got = await wait_legs(stack, acct, str(oco.id), {"parent": "new", "stop_loss": "held"})
    await asyncio.to_thread(tc.cancel_order_by_id, got["stop_loss"]["id"])
    await wait_legs(stack, acct, str(oco.id), {"parent": "canceled", "stop_loss": "canceled"})
    assert await balances(stack, acct) == before
    await clean_books(stack, acct, str(oco.id))


async def test_oto_exits_and_canceling_a_filled_parent_cancels_the_live_exit(
    stack: TradingStack,
) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    entry = await place(stack, acct, symbol=SYM, qty="2", side="buy", type="limit",
                        limit_price="191", time_in_force="day", order_class="oto",
                        take_profit={"limit_price": "199"})
    got = await wait_legs(stack, acct, entry["id"], {"parent": "filled", "take_profit": "new"})
    assert "stop_loss" not in got
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{entry['id']}", headers=headers(acct))
    await wait_legs(stack, acct, entry["id"], {"take_profit": "canceled"})
    assert (await balances(stack, acct))[f"shares_unsettled:{SYM}"] == 2  # released, not sold

    # an oto with only a stop-loss: no sibling, so it waits at the venue as a stop order
    oto = await place(stack, acct, symbol=SYM, qty="2", side="buy", type="market",
                      time_in_force="gtc", order_class="oto", stop_loss={"stop_price": "180"})
    got = await wait_legs(stack, acct, oto["id"], {"parent": "filled", "stop_loss": "new"})
    assert got["stop_loss"]["type"] == "stop"
    await stack.set_quote(SYM, "179.90", "180.00")  # the venue's stop triggers
    await wait_legs(stack, acct, oto["id"], {"stop_loss": "filled"})
    bal = await balances(stack, acct)
    assert f"shares_held:{SYM}" not in bal
    await clean_books(stack, acct, entry["id"], oto["id"])


BAD = [
    ({"order_class": "bracketz"}, "invalid_order_class"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "200"}}, "missing_stop_loss"),
    ({"order_class": "bracket", "stop_loss": {"stop_price": "180"}}, "missing_take_profit"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "170"},
      "stop_loss": {"stop_price": "180"}}, "invalid_take_profit"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "1e30"},
      "stop_loss": {"stop_price": "180"}}, "take_profit_limit_price_out_of_range"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "200.001"},
      "stop_loss": {"stop_price": "180"}}, "invalid_price_increment"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "200", "x": 1},
      "stop_loss": {"stop_price": "180"}}, "unknown_field"),
    ({"order_class": "bracket", "take_profit": "200", "stop_loss": {"stop_price": "180"}},
     "invalid_take_profit"),
    ({"order_class": "bracket", "take_profit": {"limit_price": "200"},
      "stop_loss": {"stop_price": "180", "limit_price": "181"}}, "invalid_stop_loss"),
    ({"order_class": "bracket", "side": "sell", "take_profit": {"limit_price": "200"},
      "stop_loss": {"stop_price": "180"}}, "invalid_side"),
    ({"order_class": "bracket", "time_in_force": "ioc", "take_profit": {"limit_price": "200"},
      "stop_loss": {"stop_price": "180"}}, "invalid_time_in_force"),
    ({"order_class": "oto", "take_profit": {"limit_price": "200"},
      "stop_loss": {"stop_price": "180"}}, "invalid_oto_legs"),
    ({"order_class": "oto"}, "invalid_oto_legs"),
    ({"order_class": "oco", "side": "sell", "take_profit": {"limit_price": "200"},
      "stop_loss": {"stop_price": "180"}}, "invalid_type"),  # market
    ({"take_profit": {"limit_price": "200"}}, "take_profit_not_allowed"),
    ({"stop_loss": {"stop_price": "180"}}, "stop_loss_not_allowed"),
]


@pytest.mark.parametrize(("extra", "reason"), BAD, ids=[r for _, r in BAD])
async def test_bad_group_input_is_a_422_with_a_code_and_writes_nothing(
    stack: TradingStack, extra: dict[str, Any], reason: str,
) -> None:
    acct = await stack.account("100000")
    before = await balances(stack, acct)
    coid = f"bad-group-{uuid.uuid4().hex[:8]}"
    body = {"symbol": SYM, "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
            "client_order_id": coid, **extra}
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json=body)
    assert r.status_code == 422, r.text
    assert (r.json()["reason"], r.json()["code"]) == (reason, 42210000), r.text
    assert await balances(stack, acct) == before
    async with stack.router.engine(acct.shard).connect() as conn:
        n = (await conn.execute(text("SELECT count(*) FROM orders WHERE account_id = :a"),
                                {"a": acct.account_id})).scalar()
    assert n == 0


async def test_a_retried_post_gets_the_same_group(stack: TradingStack) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    body = {"symbol": SYM, "qty": "1", "side": "buy", "type": "limit", "limit_price": "150",
            "time_in_force": "day", "order_class": "bracket", "client_order_id": "grp-1",
            "take_profit": {"limit_price": "170"}, "stop_loss": {"stop_price": "140"}}
    first = await place(stack, acct, **body)
    again = await place(stack, acct, **body)
    assert again["id"] == first["id"]
    assert [leg["id"] for leg in again["legs"]] == [leg["id"] for leg in first["legs"]]
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct),
                            json={**body, "take_profit": {"limit_price": "171"}})
        assert (r.status_code, r.json()["reason"]) == (422, "idempotency_conflict"), r.text
        await http.delete(f"/v2/orders/{first['id']}", headers=headers(acct))
    await wait_legs(stack, acct, first["id"], {"parent": "canceled", "take_profit": "canceled",
                                                "stop_loss": "canceled"})
    assert await balances(stack, acct) == {"cash": Decimal("100000")}


async def test_a_group_whose_accept_fails_on_a_bug_is_rejected_with_nothing_held(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from db.orders import OrderStore
    from tests.workflows.fault_injection import failing

    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    failing(monkeypatch, OrderStore, "accept", str(acct.account_id), ZeroDivisionError("a bug"),
            table="orders")
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": SYM, "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
            "order_class": "bracket", "take_profit": {"limit_price": "200"},
            "stop_loss": {"stop_price": "180"}, "client_order_id": "grp-bug"})
    assert (r.status_code, r.json()["reason"]) == (500, "internal_error"), r.text
    async with stack.router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT state, order_class, reject_code FROM orders WHERE account_id = :a"),
            {"a": acct.account_id})).all()
    assert [tuple(r) for r in rows] == [("REJECTED", "bracket", "internal_error")]  # no legs
    assert await balances(stack, acct) == {"cash": Decimal("100000")}


async def test_a_bracket_at_20_et_is_queued_then_its_entry_routes_at_the_open(stack: TradingStack) -> None:
    from tests.workflows.test_order_queued import at_venues, evening

    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    async with evening(stack, wait_s=3.0):
        order = await place(stack, acct, symbol=SYM, qty="2", side="buy", type="market",
                            time_in_force="day", order_class="bracket",
                            take_profit={"limit_price": "200"}, stop_loss={"stop_price": "180"})
        assert (order["status"], order["state"]) == ("accepted", "FUNDS_HELD")
        assert at_venues(stack, order["id"]) == []  # queued: not sent
        await wait_legs(stack, acct, order["id"],
                        {"parent": "filled", "take_profit": "new", "stop_loss": "held"})
        async with stack.http() as http:
            await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
        await wait_legs(stack, acct, order["id"], {"take_profit": "canceled", "stop_loss": "canceled"})
    await clean_books(stack, acct, order["id"])


async def test_an_entry_expiring_after_a_partial_fill_gets_exits_for_what_it_filled(
    stack: TradingStack,
) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    with stack.venues_behave(engine={"fill_slices": [4, 6], "fill_delay": 60.0}):
        order = await place(stack, acct, symbol=SYM, qty="10", side="buy", type="limit",
                            limit_price="191", time_in_force="day", order_class="bracket",
                            take_profit={"limit_price": "199"}, stop_loss={"stop_price": "181"})
        await wait_legs(stack, acct, order["id"], {"parent": "partially_filled"})
        for mm in stack.venues.values():  # the close: the venue expires the DAY entry's rest
            mm.expire_day_orders()
        got = await wait_legs(stack, acct, order["id"],
                              {"parent": "expired", "take_profit": "new", "stop_loss": "held"})
    assert (got["parent"]["filled_qty"], got["take_profit"]["qty"], got["stop_loss"]["qty"]) == (
        "4", "4", "4")
    bal = await balances(stack, acct)
    assert (bal[f"shares_held:{SYM}"], bal.get("cash_held")) == (4, None)  # entry's rest released
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
    await wait_legs(stack, acct, order["id"], {"take_profit": "canceled", "stop_loss": "canceled"})
    await clean_books(stack, acct, order["id"])


async def test_a_client_order_id_of_a_simple_order_is_refused_for_a_group_and_back(
    stack: TradingStack,
) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    simple = {"symbol": SYM, "qty": "1", "side": "buy", "type": "limit", "limit_price": "150",
              "time_in_force": "day"}
    group = {**simple, "order_class": "bracket", "take_profit": {"limit_price": "170"},
             "stop_loss": {"stop_price": "140"}}
    first = await place(stack, acct, **simple, client_order_id="mine-1")
    other = await place(stack, acct, **group, client_order_id="mine-2")
    async with stack.http() as http:
        for body in ({**group, "client_order_id": "mine-1"}, {**simple, "client_order_id": "mine-2"}):
            r = await http.post("/v2/orders", headers=headers(acct), json=body)
            assert (r.status_code, r.json()["reason"]) == (422, "idempotency_conflict"), r.text
        for o in (first, other):
            await http.delete(f"/v2/orders/{o['id']}", headers=headers(acct))
    await wait_legs(stack, acct, other["id"], {"parent": "canceled", "stop_loss": "canceled"})
    await wait_order(stack, acct, first["id"], {"canceled"})
    assert await balances(stack, acct) == {"cash": Decimal("100000")}


async def test_a_take_profit_stuck_after_the_trigger_hands_over_when_an_operator_resolves_it(
    stack: TradingStack,
) -> None:
    from domain.orders import ResolveInput

    sym = "NVDA"
    await stack.set_quote(sym, "120.00", "120.05")
    acct = await stack.account("100000")
    await bought(stack, acct, 5, sym)
    oco = await place(stack, acct, symbol=sym, qty="5", side="sell", type="limit",
                      time_in_force="gtc", order_class="oco", take_profit={"limit_price": "130"},
                      stop_loss={"stop_price": "110"})
    await wait_legs(stack, acct, oco["id"], {"parent": "new", "stop_loss": "held"})
    with stack.venues_behave(never_ack=True):  # the venue goes silent: the cancel is unanswered
        await stack.set_quote(sym, "109.00", "109.05")
        deadline = time.monotonic() + 20
        while (await legs(stack, acct, oco["id"]))["parent"]["state"] != "STUCK":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        got = await legs(stack, acct, oco["id"])
        assert got["stop_loss"]["status"] == "held"  # never at a venue while its sibling may be
        assert (await balances(stack, acct))[f"shares_held:{sym}"] == 5  # once
    # the venue says: canceled, nothing filled; the stop-loss then sells the 5 shares
    await stack.temporal.get_workflow_handle(oco["id"]).execute_update(
        "resolve", ResolveInput(order_id=oco["id"], outcome="canceled", filled_qty="0"))
    got = await wait_legs(stack, acct, oco["id"], {"parent": "canceled", "stop_loss": "filled"})
    assert got["stop_loss"]["filled_qty"] == "5"
    bal = await balances(stack, acct)
    assert not any(k.startswith(f"shares:{sym}") or k.startswith(f"shares_held:{sym}") for k in bal)
    await clean_books(stack, acct, oco["id"])


async def test_the_stop_loss_still_fires_after_a_restart_of_the_shard_worker(stack: TradingStack) -> None:
    from workers.shard import ShardWorkers

    sym = "AMD"
    await stack.set_quote(sym, "150.00", "150.05")
    acct = await stack.account("100000")
    order = await place(stack, acct, symbol=sym, qty="3", side="buy", type="market",
                        time_in_force="gtc", order_class="bracket", take_profit={"limit_price": "160"},
                        stop_loss={"stop_price": "140"})
    await wait_legs(stack, acct, order["id"], {"parent": "filled", "take_profit": "new",
                                                "stop_loss": "held"})
    await stack.workers.stop()  # the watch, the group's and the orders' workflows lose their worker
    s = stack.settings
    stack.workers = ShardWorkers(s, list(range(s.shard_count)), client=stack.temporal)
    await stack.workers.start()
    await stack.set_quote(sym, "139.00", "139.05")
    got = await wait_legs(stack, acct, order["id"], {"take_profit": "canceled", "stop_loss": "filled"},
                          timeout=30)
    assert got["stop_loss"]["filled_qty"] == "3"
    await clean_books(stack, acct, order["id"])
