"""Cancel/replace end to end (``PATCH /v2/orders/{id}``), through HTTP, against the real stack:
the replacement is a new order sent as an OrderCancelReplaceRequest; the simulated venue answers
Replaced or OrderCancelReject; holds are exact after every step."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.test_http_clients import base_url, trading_client

__all__ = ["base_url"]  # the API on a loopback port, for alpaca-py


async def patch(stack: TradingStack, acct, order_id: str, body: dict) -> tuple[int, dict]:
    async with stack.http() as http:
        r = await http.patch(f"/v2/orders/{order_id}", headers=headers(acct), json=body)
    return r.status_code, r.json()


async def test_replace_accepted_then_the_replacement_fills(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=7, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    status, new = await patch(stack, acct, old["id"], {"qty": 10, "limit_price": "151"})
    assert status == 200, new
    assert new["replaces"] == old["id"] and new["id"] != old["id"]
    assert (new["qty"], new["limit_price"], new["time_in_force"]) == ("10", "151", "gtc")
    replaced = await wait_order(stack, acct, old["id"], {"replaced"})
    assert replaced["replaced_by"] == new["id"] and replaced["replaced_at"]
    working = await wait_order(stack, acct, new["id"], {"new"})
    assert working["qty"] == "10"
    bal = await balances(stack, acct)
    assert (bal["cash"], bal["cash_held"]) == (Decimal(3490), Decimal(1510))
    # replaced again, marketable now: the venue fills the replacement of the replacement
    status, last = await patch(stack, acct, new["id"], {"limit_price": "187.50"})
    assert status == 200, last
    filled = await wait_order(stack, acct, last["id"], {"filled"})
    price = Decimal(filled["filled_avg_price"])
    bal = await balances(stack, acct)
    assert bal["cash"] == 5000 - 10 * price and "cash_held" not in bal
    assert bal["shares_unsettled:AAPL"] == 10
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


async def test_replace_refused_by_the_venue_leaves_the_order_live(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=7, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    for mm in stack.venues.values():
        mm.halt("AAPL")
    try:
        status, new = await patch(stack, acct, old["id"], {"qty": 9})
        assert status == 200, new
        refused = await wait_order(stack, acct, new["id"], {"rejected"})
        assert refused["reject_code"] == "replace_rejected" and "halted" in refused["reject_reason"]
    finally:
        for mm in stack.venues.values():
            mm.resume("AAPL")
    live = await wait_order(stack, acct, old["id"], {"new"})
    assert live["qty"] == "7" and live["replaced_by"] == new["id"]
    bal = await balances(stack, acct)
    assert (bal["cash"], bal["cash_held"]) == (Decimal(3950), Decimal(1050))  # as before
    # it still works: canceled, everything back
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{old['id']}", headers=headers(acct))
        assert r.status_code == 204, r.text
    await wait_order(stack, acct, old["id"], {"canceled"})
    assert (await balances(stack, acct))["cash"] == 5000


async def test_bad_replaces_are_422_with_a_code_and_change_nothing(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("2000")
    old = await place(stack, acct, symbol="AAPL", qty=7, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    cases = [({}, 422, "nothing_to_replace"), ({"qty": 7}, 422, "nothing_to_replace"),
             ({"qty": 0}, 422, "invalid_qty"), ({"qty": "1e12"}, 422, "qty_out_of_range"),
             ({"limit_price": "1.001"}, 422, "invalid_price_increment"),
             ({"trail": "1"}, 422, "replace_not_supported"),
             ({"time_in_force": "fok"}, 422, "invalid_time_in_force"),
             ({"side": "sell"}, 422, "unknown_field"),
             ({"qty": 20}, 403, "insufficient_buying_power")]
    for body, code, reason in cases:
        status, err = await patch(stack, acct, old["id"], body)
        assert (status, err.get("reason")) == (code, reason), (body, err)
    status, err = await patch(stack, acct, "00000000-0000-0000-0000-000000000000", {"qty": 8})
    assert status == 404
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{old['id']}", headers=headers(acct))
        assert r.status_code == 204, r.text
    await wait_order(stack, acct, old["id"], {"canceled"})
    status, err = await patch(stack, acct, old["id"], {"qty": 8})
    assert (status, err["reason"]) == (422, "not_replaceable")
    bal = await balances(stack, acct)
    assert bal["cash"] == 2000 and "cash_held" not in bal
    async with stack.http() as http:
        r = await http.get("/v2/orders", headers=headers(acct), params={"status": "all"})
    assert [o["id"] for o in r.json()] == [old["id"]]  # no replacement was created


async def test_a_fill_racing_the_replace_books_against_the_original(stack: TradingStack) -> None:
    """The venue fills 4 of the original before the replace reaches it, and its reports are slow:
    the customer replaces not knowing about the fill. The fill books against the original, the
    replacement trades what is left of the new total, and the holds come out to the cent.

    A symbol no other test trades: the venue sends its reports one at a time, each 1 s late in
    this block, so the quote move must fill this order alone (other tests' resting AAPL buys
    filled by it queued ahead of the replace's answer, past ``replace_s``: STUCK, in the suite)."""
    await stack.set_quote("QCOM", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="QCOM", qty=10, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    with stack.venues_behave(latency=1.0, engine={"fill_slices": [Decimal(4)], "fill_delay": 600}):
        await stack.set_quote("QCOM", "149.80", "149.90")  # the venue fills a first slice of 4
        venue = next(mm for mm in stack.venues.values() if mm.engine.order(old["id"]))
        order = venue.engine.order(old["id"])
        while order is not None and order.cum_qty < 4:
            await asyncio.sleep(0.01)
        status, new = await patch(stack, acct, old["id"], {"qty": 20})
        assert status == 200, new
        assert new["qty"] == "20"  # asked before the fill was known
        replaced = await wait_order(stack, acct, old["id"], {"replaced"})
        assert (replaced["filled_qty"], replaced["filled_avg_price"]) == ("4", "149.9")
        working = await wait_order(stack, acct, new["id"], {"new"})
        assert (working["qty"], working["filled_qty"]) == ("16", "0")
    bal = await balances(stack, acct)
    # 4 x 149.90 paid; the replacement holds 16 x 150
    assert (bal["cash"], bal["cash_held"]) == (Decimal("2000.40"), Decimal(2400))
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{new['id']}", headers=headers(acct))
        assert r.status_code == 204, r.text
    await wait_order(stack, acct, new["id"], {"canceled"})
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal("4400.40") and "cash_held" not in bal
    assert bal["shares_unsettled:QCOM"] == 4
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    # holds, fills and executions agree, order by order (about this account: the shared
    # shards carry other tests' raw seeds)
    assert await audit_rows_about(stack.router, acct, old["id"], new["id"]) == []


async def test_alpaca_py_replaces_an_order(stack: TradingStack, base_url: str) -> None:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
    from alpaca.trading.models import Order
    from alpaca.trading.requests import LimitOrderRequest, ReplaceOrderRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("5000")
    tc = trading_client(acct, base_url)
    old = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
        symbol="AAPL", qty=2, limit_price=150.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC))
    await wait_order(stack, acct, str(old.id), {"new"})
    new = await asyncio.to_thread(tc.replace_order_by_id, old.id, ReplaceOrderRequest(
        qty=3, limit_price=151.25))
    assert isinstance(new, Order) and new.replaces == old.id and new.qty == "3"
    await wait_order(stack, acct, str(new.id), {"new"})
    got = await asyncio.to_thread(tc.get_order_by_id, old.id)
    assert got.status == OrderStatus.REPLACED and got.replaced_by == new.id
    assert (await balances(stack, acct))["cash_held"] == Decimal("453.75")
    with pytest.raises(APIError) as err:  # the original is replaced: it cannot be again
        await asyncio.to_thread(tc.replace_order_by_id, old.id, ReplaceOrderRequest(qty=4))
    assert err.value.status_code == 422 and "not_replaceable" in str(err.value)
    await asyncio.to_thread(tc.cancel_order_by_id, new.id)
    await wait_order(stack, acct, str(new.id), {"canceled"})
    assert await balances(stack, acct) == {"cash": 5000}


async def test_a_cancel_while_the_replace_is_pending_is_refused(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    old = await place(stack, acct, symbol="AAPL", qty=7, side="buy", type="limit",
                      limit_price="150", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    with stack.venues_behave(never_ack=True):  # the venue never answers the replace
        status, new = await patch(stack, acct, old["id"], {"qty": 8})
        assert status == 200, new
        await wait_order(stack, acct, old["id"], {"pending_replace"})
        async with stack.http() as http:
            r = await http.delete(f"/v2/orders/{old['id']}", headers=headers(acct))
        assert (r.status_code, r.json()["reason"]) == (422, "pending_replace")
        status, err = await patch(stack, acct, old["id"], {"qty": 9})
        assert (status, err["reason"]) == (422, "not_replaceable")
    bal = await balances(stack, acct)
    assert (bal["cash"], bal["cash_held"]) == (Decimal(3800), Decimal(1200))  # 7 + 1 held
