"""Orders placed outside the regular session, through the whole stack: accepted with their hold,
queued on the workflow's durable timer, routed at the next open; canceled while queued with the
hold released at once; still queued (and routed at the open) across a restart of the shard
worker.

The clock is the test's: the shard workers' business clock runs ``market_clock_offset_s`` ahead
of (here: behind) the wall clock, so that it is 20:00 New York on the last session day, and the
wait for the open is capped at ``queued_open_wait_max_s`` (no real waits).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from domain import calendar
from sherwood.settings import Settings
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, events, post_order, wait_order
from workers.shard import ShardWorkers

NY = ZoneInfo(calendar.NY)
D = Decimal


def last_session_evening() -> datetime:
    """20:00 New York on the last session day before today (UTC)."""
    today = calendar.trade_date(datetime.now(UTC))
    d = calendar.next_session(today - timedelta(days=8))
    while calendar.next_session(d) < today:
        d = calendar.next_session(d)
    return datetime(d.year, d.month, d.day, 20, 0, tzinfo=NY).astimezone(UTC)


async def _swap_workers(stack: TradingStack, s: Settings) -> None:
    await stack.workers.stop()
    stack.workers = ShardWorkers(s, list(range(s.shard_count)), client=stack.temporal)
    await stack.workers.start()


@contextlib.asynccontextmanager
async def evening(stack: TradingStack, *, wait_s: float) -> AsyncIterator[tuple[Settings, datetime]]:
    """Inside the block it is 20:00 ET (market hours enforced) for the API and the shard
    workers, and a queued order waits at most ``wait_s`` for the open. Yields the settings and
    the open the orders wait for."""
    at = last_session_evening()
    s = stack.settings.model_copy(update={
        "enforce_market_hours": True, "queued_open_wait_max_s": wait_s,
        "market_clock_offset_s": (at - datetime.now(UTC)).total_seconds()})
    api = stack.app.state.sherwood
    await _swap_workers(stack, s)
    api.settings = s
    try:
        yield s, calendar.next_open(at)
    finally:
        api.settings = stack.settings
        await _swap_workers(stack, stack.settings)


def at_venues(stack: TradingStack, order_id: str) -> list[str]:
    return [name for name, mm in stack.venues.items() if mm.engine.order(order_id) is not None]


async def queued_buy(stack: TradingStack, acct, opens: datetime, **body) -> dict:
    async with stack.http() as http:
        r = await post_order(http, "/v2/orders", headers(acct), {k: v for k, v in {
            "symbol": "AAPL", "qty": "3", "side": "buy", "type": "market", "time_in_force": "day",
            **body}.items() if v is not None})
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["status"] == "accepted" and o["state"] == "FUNDS_HELD", o
    assert at_venues(stack, o["id"]) == []  # not sent: queued
    ev = await events(stack, acct.shard, o["id"])
    assert ev[-1] == ("funds_held", "VALIDATED", "FUNDS_HELD")
    return o


async def test_market_order_at_20_et_is_queued_then_routed_at_the_open(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with evening(stack, wait_s=3.0) as (_, opens):
        o = await queued_buy(stack, acct, opens)
        held = await balances(stack, acct)
        assert held["cash_held"] == D("590.63")  # 3 x 187.50 x 1.05, the last quote's collar, in cents
        assert held["cash"] == D(10000) - held["cash_held"]
        async with stack.router.engine(acct.shard).connect() as conn:
            reason = (await conn.execute(text(
                "SELECT reason FROM order_events WHERE order_id = :o AND event = 'funds_held'"),
                {"o": uuid.UUID(o["id"])})).scalar_one()
            expires = (await conn.execute(text("SELECT expires_at FROM orders WHERE id = :o"),
                                          {"o": uuid.UUID(o["id"])})).scalar_one()
        assert f"queued for the open at {opens.isoformat()}" in reason
        # a DAY order queued for the open expires at that session's close
        assert expires == calendar.next_close(opens)
        done = await wait_order(stack, acct, o["id"], {"filled"}, timeout=20)
    assert len(at_venues(stack, o["id"])) == 1
    states = [e[2] for e in await events(stack, acct.shard, o["id"])]
    assert states.index("FUNDS_HELD") < states.index("ROUTED") < states.index("FILLED")
    bal = await balances(stack, acct)
    assert "cash_held" not in bal and bal["shares_unsettled:AAPL"] == 3
    assert bal["cash"] == D(10000) - 3 * D(done["filled_avg_price"])


async def test_cancel_while_queued_releases_the_hold_at_once(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with evening(stack, wait_s=600.0) as (_, opens):
        o = await queued_buy(stack, acct, opens)
        # a DAY limit after the close is queued the same way (not rested at the venue)
        lim = await queued_buy(stack, acct, opens, type="limit", limit_price="150", qty="2")
        assert (await balances(stack, acct))["cash_held"] == D("590.63") + 300
        async with stack.http() as http:
            for order in (o, lim):
                started = time.monotonic()
                r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
                assert r.status_code in (200, 204), r.text
                assert time.monotonic() - started < 3.0  # no waiting for the open
                await wait_order(stack, acct, order["id"], {"canceled"}, timeout=5)
        assert await balances(stack, acct) == {"cash": D(10000)}
        assert at_venues(stack, o["id"]) == [] and at_venues(stack, lim["id"]) == []


async def test_restart_while_queued_keeps_it_queued_and_it_routes_at_the_open(
        stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with evening(stack, wait_s=4.0) as (s, opens):
        o = await queued_buy(stack, acct, opens)
        await stack.workers.stop()
        try:
            # no worker: the order stays queued, held, at no venue
            r = await wait_order(stack, acct, o["id"], {"accepted"}, timeout=1)
            assert r["state"] == "FUNDS_HELD" and at_venues(stack, o["id"]) == []
            assert (await balances(stack, acct))["cash_held"] > 0
        finally:
            stack.workers = ShardWorkers(s, list(range(s.shard_count)), client=stack.temporal)
            await stack.workers.start()
        await wait_order(stack, acct, o["id"], {"filled"}, timeout=30)
    assert len(at_venues(stack, o["id"])) == 1
    assert "cash_held" not in await balances(stack, acct)


async def test_auction_time_in_force_is_for_market_and_limit_orders(stack: TradingStack) -> None:
    """(Auction orders themselves: test_order_auctions.py.)"""
    acct = await stack.account("1000")
    async with stack.http() as http:
        for tif in ("opg", "cls"):
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "stop_limit", "stop_price": "5",
                "limit_price": "5", "time_in_force": tif})
            assert r.status_code == 422 and r.json()["reason"] == "invalid_time_in_force", r.text
    assert await balances(stack, acct) == {"cash": D(1000)}


async def test_a_halt_before_the_open_rejects_the_queued_order_at_the_open(stack: TradingStack) -> None:
    """What must be re-checked at the open is: the gateway refuses a halted symbol right before it
    sends, so a queued order ends REJECTED ``symbol_halted`` with its hold released."""
    from db.controls import ControlsStore

    await stack.set_quote("MSFT", "410.00", "410.10")
    acct = await stack.account("10000")
    controls = ControlsStore(stack.router.directory, stack.redis, stack.settings.redis_prefix)
    async with evening(stack, wait_s=3.0) as (_, opens):
        o = await queued_buy(stack, acct, opens, symbol="MSFT", qty="1")
        await controls.set("MSFT", actor="test", halted=True, reason="news pending")
        try:
            done = await wait_order(stack, acct, o["id"], {"rejected", "filled"}, timeout=20)
        finally:
            await controls.set("MSFT", actor="test", halted=False, reason="")
    assert done["reject_code"] == "symbol_halted", done
    assert at_venues(stack, o["id"]) == []
    assert await balances(stack, acct) == {"cash": D(10000)}


async def test_a_notional_order_at_20_et_is_queued_then_filled_by_the_firm_at_the_open(
        stack: TradingStack) -> None:
    """A fractional order placed after the close is held and queued like any order; at the
    open the firm fills it at the quote then (no venue ever sees it)."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with evening(stack, wait_s=3.0) as (_, opens):
        o = await queued_buy(stack, acct, opens, qty=None, notional="100")
        assert (await balances(stack, acct))["cash_held"] == D(100)
        await stack.set_quote("AAPL", "200.00", "200.10")  # the quote at the open
        done = await wait_order(stack, acct, o["id"], {"filled"}, timeout=20)
    assert done["filled_avg_price"] == "200.1" and done["qty"] == "0.499750124"  # 100 / 200.10
    assert at_venues(stack, o["id"]) == []
    bal = await balances(stack, acct)
    assert bal == {"cash": D(9900), "shares_unsettled:AAPL": D("0.499750124")}
