"""Cancel/replace of stop and stop-limit orders, and the refusals a replacement shares with a
new order (pre-trade rules, a client order id already used), end to end through HTTP against the
real stack: the simulated venue takes the new StopPx; a refusal changes nothing."""

from __future__ import annotations

from decimal import Decimal

from sherwood.contracts import ORDER_STATE
from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.test_order_replace import patch
from tests.workflows.test_risk import ops_headers


def venue_order(stack: TradingStack, cl_ord_id: str):  # type: ignore[no-untyped-def]
    for mm in stack.venues.values():
        order = mm.engine.order(cl_ord_id)
        if order is not None:
            return order
    raise AssertionError(f"no venue has {cl_ord_id}")


async def test_a_stop_buy_is_replaced_and_triggers_at_its_new_stop(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=5, side="buy", type="stop",
                      stop_price="200", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    first_hold = (await balances(stack, acct))["cash_held"]
    status, new = await patch(stack, acct, old["id"], {"qty": 6, "stop_price": "195"})
    assert status == 200, new
    assert (new["type"], new["qty"], new["stop_price"], new["limit_price"]) == ("stop", "6", "195",
                                                                               None)
    await wait_order(stack, acct, old["id"], {"replaced"})
    await wait_order(stack, acct, new["id"], {"new"})
    at_venue = venue_order(stack, new["id"])
    assert (at_venue.stop_px, at_venue.order_qty) == (Decimal(195), Decimal(6))
    bal = await balances(stack, acct)
    assert bal["cash_held"] > first_hold and bal["cash"] + bal["cash_held"] == 5000
    await stack.set_quote("AAPL", "195.00", "195.10")  # the ask reaches the new stop
    filled = await wait_order(stack, acct, new["id"], {"filled"})
    price = Decimal(filled["filled_avg_price"])
    bal = await balances(stack, acct)
    assert bal["cash"] == 5000 - 6 * price and "cash_held" not in bal
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert await audit_rows_about(stack.router, acct, old["id"], new["id"]) == []


async def test_a_stop_limit_sell_takes_a_new_stop_and_limit(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    buy = await place(stack, acct, symbol="AAPL", qty=4, side="buy", type="market",
                      time_in_force="day")
    await wait_order(stack, acct, buy["id"], {"filled"})
    old = await place(stack, acct, symbol="AAPL", qty=3, side="sell", type="stop_limit",
                      stop_price="180", limit_price="179", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    status, new = await patch(stack, acct, old["id"], {"qty": 4, "stop_price": "182",
                                                        "limit_price": "181.50"})
    assert status == 200, new
    working = await wait_order(stack, acct, new["id"], {"new"})
    assert (working["qty"], working["stop_price"], working["limit_price"]) == ("4", "182", "181.5")
    at_venue = venue_order(stack, new["id"])
    assert (at_venue.stop_px, at_venue.price) == (Decimal(182), Decimal("181.5"))
    assert (await balances(stack, acct))["shares_held:AAPL"] == 4
    # a limit order's stop, a stop order's limit: not there to replace
    status, err = await patch(stack, acct, new["id"], {"trail": "2"})
    assert (status, err["reason"]) == (422, "replace_not_supported")
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{new['id']}", headers=headers(acct))
        assert r.status_code == 204, r.text
    await wait_order(stack, acct, new["id"], {"canceled"})
    assert "shares_held:AAPL" not in await balances(stack, acct)
    assert await audit_rows_about(stack.router, acct, buy["id"], old["id"], new["id"]) == []


async def test_a_client_order_id_of_another_order_is_refused(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    first = await place(stack, acct, symbol="AAPL", qty=1, side="buy", type="limit",
                        limit_price="150", time_in_force="gtc", client_order_id="mine-1")
    old = await place(stack, acct, symbol="AAPL", qty=2, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    before = await balances(stack, acct)
    status, err = await patch(stack, acct, old["id"], {"qty": 3, "client_order_id": "mine-1"})
    assert (status, err["reason"]) == (422, "duplicate_client_order_id"), err
    assert await balances(stack, acct) == before
    live = await wait_order(stack, acct, old["id"], {"new"})
    assert live["replaced_by"] is None
    # its own new id is fine
    status, new = await patch(stack, acct, old["id"], {"qty": 3, "client_order_id": "mine-2"})
    assert status == 200 and new["client_order_id"] == "mine-2", new
    await wait_order(stack, acct, new["id"], {"new"})
    async with stack.http() as http:
        r = await http.get("/v2/orders:by_client_order_id", headers=headers(acct),
                           params={"client_order_id": "mine-1"})
        assert r.json()["id"] == first["id"]


async def test_a_replacement_passes_the_pre_trade_rules_of_a_new_order(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=2, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    before = await balances(stack, acct)
    # a fat finger through the quote: as for a new order
    status, err = await patch(stack, acct, old["id"], {"limit_price": "250"})
    assert (status, err["reason"]) == (422, "price_band"), err
    ops = await ops_headers(stack)
    async with stack.http() as http:
        r = await http.post("/ops/restrictions", headers=ops,
                            json={"symbol": "AAPL", "restriction": "close_only", "reason": "test"})
        assert r.status_code == 200, r.text
    try:
        status, err = await patch(stack, acct, old["id"], {"qty": 3})
        assert (status, err["reason"]) == (403, "symbol_close_only"), err
    finally:
        async with stack.http() as http:
            r = await http.post("/ops/restrictions", headers=ops,
                                json={"symbol": "AAPL", "restriction": None, "reason": "test over"})
            assert r.status_code == 200, r.text
    assert await balances(stack, acct) == before
    live = await wait_order(stack, acct, old["id"], {"new"})
    assert live["replaced_by"] is None and live["qty"] == "2"
    async with stack.http() as http:
        r = await http.get("/v2/orders", headers=headers(acct), params={"status": "all"})
    assert [o["id"] for o in r.json()] == [old["id"]]  # no replacement was created


async def test_a_replace_the_venue_never_answers_ends_stuck_for_an_operator(
    stack: TradingStack,
) -> None:
    """No answer to the OrderCancelReplaceRequest within ``venue_replace_timeout_s``, nor to the
    OrderStatusRequest after it: the original STUCK holding what it holds (an operator sees it:
    ``OrderState="STUCK"``), the replacement REJECTED with its extra hold released. The
    operator's resolution ends the original; everything is back."""
    from domain.orders import ResolveInput
    from workflows.order import OrderWorkflow

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=7, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    with stack.venues_behave(never_ack=True):
        status, new = await patch(stack, acct, old["id"], {"qty": 8})
        assert status == 200, new
        gone = await wait_order(stack, acct, new["id"], {"rejected"}, timeout=30)
        assert gone["reject_code"] == "replace_unanswered"
        stuck = await wait_order(stack, acct, old["id"], {"pending_cancel"})
        assert stuck["state"] == "STUCK" and stuck["replaced_by"] == new["id"]
    bal = await balances(stack, acct)
    assert (bal["cash"], bal["cash_held"]) == (Decimal(3950), Decimal(1050))  # the original's
    handle = stack.temporal.get_workflow_handle(old["id"])
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(ORDER_STATE) == "STUCK"
    done = await handle.execute_update(OrderWorkflow.resolve, ResolveInput(
        order_id=old["id"], outcome="canceled", filled_qty="0", operator="test",
        note="venue: never got the replace; canceled"))
    assert done.state == "CANCELED"
    bal = await balances(stack, acct)
    assert bal["cash"] == 5000 and "cash_held" not in bal
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert await audit_rows_about(stack.router, acct, old["id"], new["id"]) == []
