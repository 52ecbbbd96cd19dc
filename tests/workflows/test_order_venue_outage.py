"""No venue reachable: an order is never sent later against a stale hold. Market orders are
abandoned after their routing deadline (REJECTED ``venue_unavailable``, funds released), limit
orders route once a venue is back, a customer's cancel is answered at once while the order is
still routing, and repeated cancels of a pending cancel are one request."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.exceptions import ApplicationError

from api.services.orders import order_id_for
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place, wait_order

# 2.5 s: the gateway retries at 0, 0.2, 0.6 and 1.4 s; the next try (3.0 s) would pass the
# deadline, so Temporal ends the send with the last retryable error, not a timeout
ROUTE_MARKET_S = 2.5


@contextlib.contextmanager
def no_venue(stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every venue unreachable from the gateway (as when their FIX sessions are down): it cannot
    send, and says so as a retryable error."""
    acts = stack.gateway.activities

    def unavailable(*_a: Any, **_k: Any) -> Any:
        raise ApplicationError("no venue is logged on", type="VenueUnavailable")

    with monkeypatch.context() as m:
        m.setattr(acts, "choose_venue", unavailable)
        m.setattr(acts, "_logged_on", unavailable)
        yield


@contextlib.contextmanager
def fast_routing(stack: TradingStack) -> Iterator[None]:
    svc = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc.model_copy(update={
        "venue_route_market_timeout_s": ROUTE_MARKET_S, "venue_route_limit_timeout_s": 120.0})
    try:
        yield
    finally:
        stack.app.state.sherwood.settings = svc


async def test_market_orders_are_abandoned_and_limits_route_once_a_venue_is_back(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with fast_routing(stack), no_venue(stack, monkeypatch):
        market = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                             time_in_force="day")
        limit = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                            limit_price="150.00", time_in_force="gtc")
        t0 = time.monotonic()
        done = await wait_order(stack, acct, market["id"], {"rejected", "filled", "new"}, timeout=20)
        assert (done["status"], done["reject_code"]) == ("rejected", "venue_unavailable"), done
        assert time.monotonic() - t0 < ROUTE_MARKET_S + 5
        assert (await balances(stack, acct))["cash_held"] == 450  # only the limit's hold is left
        await asyncio.sleep(1.0)  # the limit order is still waiting for a venue
        assert (await wait_order(stack, acct, limit["id"], {"accepted"}))["state"] == "FUNDS_HELD"
    # a venue is back: the limit order routes (once), the market order stays abandoned
    await wait_order(stack, acct, limit["id"], {"new"}, timeout=20)
    async with stack.gateway.store.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT order_id, status FROM gateway_orders WHERE order_id = ANY(:o) AND msg_type = 'D'"),
            {"o": [market["id"], limit["id"]]})).all()
    statuses = sorted((r.order_id == market["id"], r.status) for r in rows)
    assert statuses == [(False, "sent"), (True, "abandoned")]
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{limit['id']}", headers=headers(acct))
    await wait_order(stack, acct, limit["id"], {"canceled"})
    assert await balances(stack, acct) == {"cash": Decimal(5000)}


async def test_a_cancel_while_no_venue_can_take_the_order_is_answered_at_once(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with fast_routing(stack), no_venue(stack, monkeypatch):
        limit = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                            limit_price="150.00", time_in_force="gtc")
        await asyncio.sleep(0.5)  # it is trying to route
        async with stack.http() as http:
            t0 = time.monotonic()
            r = await http.delete(f"/v2/orders/{limit['id']}", headers=headers(acct))
            took = time.monotonic() - t0
        assert r.status_code == 204 and took < 1.0, (r.status_code, took)
        await wait_order(stack, acct, limit["id"], {"canceled"}, timeout=10)
    assert await balances(stack, acct) == {"cash": Decimal(5000)}


async def test_repeated_cancels_of_a_pending_cancel_are_one_request(stack: TradingStack) -> None:
    """A venue that does not answer cancels: four DELETEs in a row send one cancel and leave the
    order PENDING_CANCEL (today they pushed it into STUCK), each answered within a second."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    order = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")
    await wait_order(stack, acct, order["id"], {"new"})
    with stack.venues_behave(never_ack=True):  # the venue ignores what comes now
        async with stack.http() as http:
            for _ in range(4):
                t0 = time.monotonic()
                r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
                assert r.status_code == 204 and time.monotonic() - t0 < 1.0, r.text
            body = (await http.get(f"/v2/orders/{order['id']}", headers=headers(acct))).json()
        assert body["state"] == "PENDING_CANCEL", body
        async with stack.gateway.store.engine.connect() as conn:
            cancels = (await conn.execute(text(
                "SELECT cl_ord_id FROM gateway_orders WHERE order_id = :o AND msg_type = 'F'"),
                {"o": order["id"]})).scalars().all()
        assert cancels == [f"{order['id']}:C1"]


async def test_a_fill_that_comes_while_a_cancel_abandons_the_send_is_booked(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the chaos run (1 in 4): the customer cancels while the gateway's activity is
    sending the order (its ClOrdID reserved, not yet marked sent). The workflow gives up the
    send and asks the gateway to abandon; the gateway answers that the order reached a venue, with
    the reports recorded so far (none). The send then goes out, the venue fills at once, and the
    fill is handed over in the result of the send the workflow no longer reads: never booked, the
    order left open at the venue. The abandon must wait for the send in flight and return its
    answers."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    acts = stack.gateway.activities
    reserved, looked, oid = asyncio.Event(), asyncio.Event(), {"id": ""}
    record_route, abandon = acts._record_route, acts.store.abandon

    async def held_send(order: Any, *args: Any) -> None:  # reserved 'sending', not yet sent
        if order.order_id == oid["id"]:
            reserved.set()
            await asyncio.wait_for(looked.wait(), 20)
        await record_route(order, *args)

    async def abandon_seen(cl_ord_id: str, order_id: str) -> Any:
        res = await abandon(cl_ord_id, order_id)
        if order_id == oid["id"]:
            looked.set()  # the gateway has looked at the reservation: the send may go now
        return res

    async def no_link(order: Any) -> Any:  # the direct link fails: the activity sends
        raise RuntimeError("no direct link in this test")

    monkeypatch.setattr(acts, "_record_route", held_send)
    monkeypatch.setattr(acts.store, "abandon", abandon_seen)
    assert stack.gateway.link is not None
    monkeypatch.setattr(stack.gateway.link, "send", no_link)
    coid = f"race-{uuid.uuid4().hex[:8]}"
    oid["id"] = str(order_id_for(acct.account_id, coid))
    order = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                        time_in_force="day", client_order_id=coid)
    assert order["id"] == oid["id"]
    await asyncio.wait_for(reserved.wait(), 10)
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
    assert r.status_code == 204, r.text
    done = await wait_order(stack, acct, order["id"], {"filled", "canceled"}, timeout=20)
    assert done["status"] == "filled" and done["filled_qty"] == "2", done
    # booked once, no hold left: 2 shares bought at the ask
    assert await balances(stack, acct) == {"cash": Decimal("4625"), "shares_unsettled:AAPL": 2}
