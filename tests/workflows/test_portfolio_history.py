"""End-of-day snapshots and the portfolio history on the real stack (back office + API).

Three simulated sessions: each trades, moves money, publishes a minute bar, and closes (the
back office's EquitySnapshot workflow for that date, as of now). The history's daily points
must equal the ledger reconstructed independently (every entry up to the close, summed from
nothing) with the positions at the closing prices; deposits are not profit; the positions
answer the last close as ``lastday_price``; alpaca-py reads the history unchanged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.accounts import OpenedAccount, open_account
from db.engines import make_engine
from db.router import ShardRouter
from domain import calendar
from domain.account import account_figures, share_positions
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from tests.api.test_positions import trade
from tests.owner import owner_engine
from tests.stack import served
from tests.workflows.conftest import Backoffice
from tests.workflows.test_funding import auth

SYMBOL = "ADBE"  # no other test trades it: its closing prices here are this test's


@pytest.fixture(scope="module")
async def md(backoffice: Backoffice) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(backoffice.settings.marketdata_db_url_resolved(), pool_size=1, max_overflow=1)
    yield engine
    await engine.dispose()


def sessions_before(today: date, n: int) -> list[date]:
    out: list[date] = []
    d = today
    while len(out) < n:
        d -= timedelta(days=1)
        if calendar.is_session(d):
            out.append(d)
    return sorted(out)


async def close_session(backoffice: Backoffice, business_date: date) -> datetime:
    """The back office's end-of-day snapshot of ``business_date``, its close being now."""
    from workflows.equity import EquityRunInput, EquitySnapshotWorkflow

    as_of = datetime.now(UTC)
    await backoffice.client.execute_workflow(
        EquitySnapshotWorkflow.run,
        EquityRunInput(backoffice.settings.shard_count, business_date.isoformat(), as_of.isoformat()),
        id=f"eod-test-{uuid.uuid4()}", task_queue=BACKOFFICE_TASK_QUEUE)
    return as_of


async def bar(md: AsyncEngine, minute: datetime, close: str) -> None:
    async with md.begin() as conn:
        await conn.execute(text(
            "INSERT INTO bars_1min (symbol, t, o, h, l, c, v, n, pv, vw) "
            "VALUES (:s, :t, :c, :c, :c, :c, 100, 1, :pv, :c)"),
            {"s": SYMBOL, "t": minute, "c": Decimal(close), "pv": Decimal(close) * 100})


async def reconstructed(router: ShardRouter, acct: OpenedAccount, at: datetime, close: Decimal) -> Decimal:
    """The account's equity at ``at``: every ledger entry up to it, summed from nothing, with
    the shares at ``close``."""
    async with router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT la.name, sum(e.amount) AS amount FROM ledger_entries e "
            "JOIN ledger_accounts la ON la.id = e.ledger_account_id "
            "WHERE la.owner_id = :a AND e.created_at <= :t GROUP BY la.name"),
            {"a": acct.account_id, "t": at})).all()
    bal = {r.name: Decimal(r.amount) for r in rows}
    shares = share_positions(bal)
    return account_figures(bal, {s: q * close for s, q in shares.items()}).equity


async def test_three_sessions_of_history_equal_the_ledger_at_each_close(
    http: httpx.AsyncClient, funding_app: FastAPI, router: ShardRouter, backoffice: Backoffice,
    md: AsyncEngine,
) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    days = sessions_before(calendar.trade_date(datetime.now(UTC)), 6)[:3]
    first_bar = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    closes = [Decimal("101.5"), Decimal("106.25"), Decimal("99")]

    await ledger.deposit(f"ph:{acct.account_id}:d1", acct.account_id, "10000")
    await ledger.settle_deposit(f"ph:{acct.account_id}:s1", acct.account_id, "10000")
    await trade(router, acct, SYMBOL, "buy", 10, "100.00", [(10, "100.00")])
    await bar(md, first_bar, "101.5")
    at1 = await close_session(backoffice, days[0])

    await trade(router, acct, SYMBOL, "sell", 4, "105.00", [(4, "105.00")])
    await ledger.deposit(f"ph:{acct.account_id}:d2", acct.account_id, "500")  # money in: no profit
    await bar(md, first_bar + timedelta(minutes=1), "106.25")
    at2 = await close_session(backoffice, days[1])

    await bar(md, first_bar + timedelta(minutes=2), "99")
    at3 = await close_session(backoffice, days[2])

    expected = [await reconstructed(router, acct, t, c) for t, c in zip((at1, at2, at3), closes, strict=True)]
    assert expected == [Decimal("10015.00"), Decimal("10557.50"), Decimal("10514.00")]
    r = await http.get("/v2/account/portfolio/history", headers=auth(acct),
                       params={"period": "1W", "timeframe": "1D", "date_end": days[2].isoformat()})
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["timeframe"] == "1D"
    assert [Decimal(str(e)) for e in h["equity"]] == expected
    assert h["timestamp"] == [int(datetime.combine(d, datetime.min.time(), calendar._NY).timestamp())
                              for d in days]
    # no close before the first: the first point is the base; the 500 deposit is not profit
    assert Decimal(str(h["base_value"])) == expected[0]
    assert [Decimal(str(p)) for p in h["profit_loss"]] == [0, Decimal("42.50"), Decimal("-1.00")]

    # the closes are recorded once: the positions answer the last one as lastday_price
    async with router.engine(acct.shard).connect() as conn:
        recorded = (await conn.execute(text(
            "SELECT business_date, price, source FROM closing_prices WHERE symbol = :s "
            "ORDER BY business_date"), {"s": SYMBOL})).all()
    assert [(r.business_date, Decimal(r.price), r.source) for r in recorded] == [
        (d, c, "bar") for d, c in zip(days, closes, strict=True)]
    pos = (await http.get(f"/v2/positions/{SYMBOL}", headers=auth(acct))).json()
    assert pos["lastday_price"] == "99"
    if pos["current_price"] is not None:
        current = Decimal(pos["current_price"])
        assert Decimal(pos["unrealized_intraday_pl"]) == 6 * (current - 99)

    # a rerun of a closed session changes nothing (append-only, once per date)
    await close_session(backoffice, days[1])
    again = (await http.get("/v2/account/portfolio/history", headers=auth(acct), params={
        "period": "1W", "timeframe": "1D", "date_end": days[2].isoformat()})).json()
    assert again["equity"] == h["equity"]
    # the services may not (no UPDATE grant), and the trigger refuses even the owner
    async with router.engine(acct.shard).connect() as conn:
        with pytest.raises(Exception, match="permission denied"):
            await conn.execute(text("UPDATE equity_snapshots SET equity = 0 WHERE account_id = :a"),
                               {"a": acct.account_id})
    async with owner_engine(backoffice.settings, backoffice.settings.shard_url(acct.shard)) as owner, \
            owner.connect() as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute(text("UPDATE equity_snapshots SET equity = 0 WHERE account_id = :a"),
                               {"a": acct.account_id})

    # alpaca-py reads the same history (its own model, unchanged)
    from alpaca.trading.client import TradingClient
    from alpaca.trading.requests import GetPortfolioHistoryRequest

    async with served(funding_app) as url:
        tc = TradingClient(acct.credentials.key_id, acct.credentials.secret_key, url_override=url)
        got = await asyncio.to_thread(tc.get_portfolio_history, GetPortfolioHistoryRequest(
            period="1W", timeframe="1D", date_end=days[2]))
    assert [Decimal(str(e)) for e in got.equity] == expected  # type: ignore[union-attr]


async def test_intraday_history_replays_the_ledger(
    http: httpx.AsyncClient, router: ShardRouter,
) -> None:
    """An account opened now had nothing during any past session: every intraday point of the
    previous session is 0; today's points (if the session is on) end at today's equity."""
    acct = await open_account(router)
    prev = sessions_before(calendar.trade_date(datetime.now(UTC)), 1)[0]
    r = await http.get("/v2/account/portfolio/history", headers=auth(acct), params={
        "period": "1D", "timeframe": "15Min", "date_end": prev.isoformat()})
    assert r.status_code == 200, r.text
    h = r.json()
    hours = calendar.session_hours(prev)
    assert hours is not None
    assert len(h["timestamp"]) == (hours[1] - hours[0]) // timedelta(minutes=15)
    assert h["timestamp"][0] == int(hours[0].timestamp())
    assert set(h["equity"]) == {0} and set(h["profit_loss"]) == {0}


@pytest.mark.parametrize(("params", "code"), [
    ({"period": "5Y"}, "invalid_period"),
    ({"timeframe": "2H"}, "invalid_timeframe"),
    ({"date_end": "not-a-date"}, "invalid_date_end"),
    ({"period": "1A", "timeframe": "1Min"}, "too_many_points"),
    ({"extended_hours": "maybe"}, "invalid_extended_hours"),
])
async def test_bad_history_parameters_get_a_422_with_a_code(
    http: httpx.AsyncClient, router: ShardRouter, params: dict[str, str], code: str,
) -> None:
    acct = await open_account(router)
    r = await http.get("/v2/account/portfolio/history", headers=auth(acct), params=params)
    assert r.status_code == 422 and r.json()["reason"] == code, r.text
