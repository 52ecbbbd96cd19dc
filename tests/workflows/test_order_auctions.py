"""Auction orders through the whole stack: ``opg`` (market/limit on the open) and ``cls`` (on
the close) go to the venue at once with FIX TimeInForce 2 / 7; the simulated market maker holds
them until its business clock passes the open or the close, then executes them or expires them
(hold released). Placed inside Alpaca's cut-off (opg from 9:28, cls from 15:50, until 19:00 ET)
they are refused with ``auction_window_closed`` and nothing is held.

The clocks are the test's: the shard workers' and the API's business clock runs
``market_clock_offset_s`` from the wall clock, and each venue's auction clock is stepped by hand
(``MarketMaker.set_business_clock``), so that nothing waits for real hours.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain import calendar
from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, post_order, wait_order
from tests.workflows.test_order_queued import _swap_workers, at_venues, last_session_evening

NY = ZoneInfo(calendar.NY)
D = Decimal


@contextlib.asynccontextmanager
async def business_time(stack: TradingStack, at: datetime) -> AsyncIterator[None]:
    """Inside the block it is ``at`` (market hours enforced) for the API and the shard workers."""
    s = stack.settings.model_copy(update={
        "enforce_market_hours": True,
        "market_clock_offset_s": (at - datetime.now(UTC)).total_seconds()})
    api = stack.app.state.sherwood
    await _swap_workers(stack, s)
    api.settings = s
    try:
        yield
    finally:
        api.settings = stack.settings
        await _swap_workers(stack, stack.settings)


@contextlib.contextmanager
def venue_clock(stack: TradingStack, at: datetime) -> Iterator[list[datetime]]:
    """Every venue's auction clock reads ``now[0]`` (``at`` to begin with); step it by
    assigning. Back to the wall clock after the block."""
    now = [at]
    for mm in stack.venues.values():
        mm.set_business_clock(lambda: now[0])
    try:
        yield now
    finally:
        for mm in stack.venues.values():
            mm.set_business_clock(lambda: datetime.now(UTC))


async def order(stack: TradingStack, acct, **body) -> dict:
    async with stack.http() as http:
        r = await post_order(http, "/v2/orders", headers(acct), {
            "symbol": "AAPL", "side": "buy", **body})
    assert r.status_code == 200, r.text
    return r.json()


def session_midday() -> datetime:
    """11:00 New York on the last full session day before today."""
    at = last_session_evening()
    d = at.astimezone(NY).date()
    while calendar.next_close(datetime(d.year, d.month, d.day, 11, 0, tzinfo=NY)).astimezone(NY).hour != 16:
        d = d - timedelta(days=1)
        while not calendar.is_session(d):
            d = d - timedelta(days=1)
    return datetime(d.year, d.month, d.day, 11, 0, tzinfo=NY).astimezone(UTC)


async def test_opg_orders_placed_in_the_evening_execute_or_expire_at_the_open(
    stack: TradingStack,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    evening = last_session_evening()
    opens = calendar.next_open(evening)
    async with business_time(stack, evening):
        with venue_clock(stack, evening) as now:
            mkt = await order(stack, acct, qty="3", type="market", time_in_force="opg")
            lim = await order(stack, acct, qty="2", type="limit", limit_price="150",
                              time_in_force="opg")
            for o in (mkt, lim):  # at the venue at once (not queued by us), waiting for the open
                assert o["time_in_force"] == "opg"
                await wait_order(stack, acct, o["id"], {"new"})
                assert len(at_venues(stack, o["id"])) == 1
            held = await balances(stack, acct)
            assert held["cash_held"] == D("590.63") + 300  # 3 x 187.50 x 1.05; 2 x 150
            now[0] = opens + timedelta(seconds=1)  # the venue's opening auction
            filled = await wait_order(stack, acct, mkt["id"], {"filled"})
            expired = await wait_order(stack, acct, lim["id"], {"expired"})
    assert filled["filled_qty"] == "3" and expired["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert "cash_held" not in bal and bal["shares_unsettled:AAPL"] == 3
    assert bal["cash"] == D(10000) - 3 * D(filled["filled_avg_price"])
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert await audit_rows_about(stack.router, acct, mkt["id"], lim["id"]) == []


async def test_cls_orders_in_the_session_execute_or_expire_at_the_close_opg_is_refused(
    stack: TradingStack,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    midday = session_midday()
    closes = calendar.next_close(midday)
    async with business_time(stack, midday):
        async with stack.http() as http:
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "market",
                "time_in_force": "opg"})
            assert (r.status_code, r.json()["reason"]) == (403, "auction_window_closed"), r.text
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "stop", "stop_price": "190",
                "time_in_force": "cls"})
            assert (r.status_code, r.json()["reason"]) == (422, "invalid_time_in_force"), r.text
        assert await balances(stack, acct) == {"cash": D(10000)}
        with venue_clock(stack, midday) as now:
            mkt = await order(stack, acct, qty="4", type="market", time_in_force="cls")
            lim = await order(stack, acct, qty="1", type="limit", limit_price="150",
                              time_in_force="cls")
            await wait_order(stack, acct, mkt["id"], {"new"})  # not filled in the session
            await wait_order(stack, acct, lim["id"], {"new"})
            now[0] = closes + timedelta(seconds=1)  # the venue's closing auction
            filled = await wait_order(stack, acct, mkt["id"], {"filled"})
            await wait_order(stack, acct, lim["id"], {"expired"})
    bal = await balances(stack, acct)
    assert "cash_held" not in bal and bal["shares_unsettled:AAPL"] == 4
    assert bal["cash"] == D(10000) - 4 * D(filled["filled_avg_price"])
