"""``GET /v2/account/portfolio/history``: the account's equity over time, from its shard.

- Daily (``timeframe=1D``): one point per session, the back office's end-of-day snapshot
  (:mod:`db.equity`: ledger balances at the close, positions at the closing prices); a session
  still in progress (today, no snapshot yet) gets the live equity (the account's own figures,
  positions at the bid) as its last point.
- Intraday (1Min/5Min/15Min/1H): replayed from the ledger (:func:`domain.portfolio_history.replay`):
  the balances at the window's start, then every entry as booked, positions marked at the last
  minute-bar close or fill known at each point (the previous close before the first).
- ``base_value``: the previous close's equity before the window (else the first point's);
  profit/loss is against it, less deposits and withdrawals since.

Reads only, one REPEATABLE READ snapshot of the shard; the market-data database's bars are read
beside it (advisory marks: unreachable means fills and closes only).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.errors import ApiError
from api.services.positions import long_market_values
from db.bar_prices import closes_between
from db.equity import balances_as_of, closing_prices_before, last_fills
from db.router import ShardRouter
from domain import portfolio_history as ph
from domain.account import account_figures, share_positions
from domain.calendar import trade_date
from marketdata.quotes import LatestQuotes

ZERO = Decimal(0)


def _num(x: Decimal) -> float | int:
    return int(x) if x == x.to_integral_value() else float(x)


async def _flows(conn: AsyncConnection, account_id: uuid.UUID, after: datetime | None,
                 until: datetime) -> list[tuple[datetime, Decimal]]:
    """Money moved in (+) or out (-) of the account's cash by deposits, returned deposits and
    withdrawals in ``(after, until]``: (time, amount), ascending."""
    rows = (await conn.execute(text(
        "SELECT e.created_at AS at, e.amount FROM ledger_entries e "
        "JOIN ledger_accounts la ON la.id = e.ledger_account_id "
        "JOIN ledger_transactions t ON t.id = e.txn_id "
        "WHERE la.owner_id = :a AND t.kind = ANY(:k) AND e.created_at <= :u "
        "AND (CAST(:f AS timestamptz) IS NULL OR e.created_at > :f) ORDER BY e.created_at"),
        {"a": account_id, "k": sorted(ph.EXTERNAL_KINDS), "u": until, "f": after})).all()
    return [(r.at, Decimal(r.amount)) for r in rows]


def _flow_until(flows: Sequence[tuple[datetime, Decimal]], t: datetime | None) -> Decimal:
    return sum((a for at, a in flows if t is None or at <= t), ZERO)


async def history(router: ShardRouter, marketdata: AsyncEngine | None, account_id: uuid.UUID,
                  quotes: LatestQuotes, *, period: str | None, timeframe: str | None,
                  date_end: str | None, extended_hours: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        q = ph.parse_query(period=period, timeframe=timeframe, date_end=date_end,
                           extended_hours=extended_hours, today=trade_date(now))
    except ph.HistoryError as exc:
        raise ApiError(422, exc.code, str(exc), code=42210000) from exc
    shard = await router.shard_for(account_id)
    async with router.engine(shard).connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            base = (await conn.execute(text(
                "SELECT equity, as_of FROM equity_snapshots WHERE account_id = :a "
                "AND business_date < :d ORDER BY business_date DESC LIMIT 1"),
                {"a": account_id, "d": q.sessions[0]})).one_or_none()
            base_at = base.as_of if base is not None else None
            if q.intraday:
                out = await _intraday(conn, marketdata, account_id, q, now, base_at)
            else:
                out = await _daily(conn, router, account_id, quotes, q, now, base_at)
    stamps, equity, flows = out
    if base is None and flows:  # the first point is the base: money moved before it is not P/L
        flows = [f - flows[0] for f in flows]
    base_value = Decimal(base.equity) if base is not None else (equity[0] if equity else ZERO)
    pl, pct = ph.profit_loss(equity, flows, base_value)
    return {"timestamp": stamps, "equity": [_num(e.quantize(Decimal("0.01"))) for e in equity],
            "profit_loss": [_num(p) for p in pl],
            "profit_loss_pct": [None if p is None else float(p) for p in pct],
            "base_value": _num(base_value.quantize(Decimal("0.01"))), "timeframe": q.timeframe,
            "cashflow": {}}


async def _daily(conn: AsyncConnection, router: ShardRouter, account_id: uuid.UUID,
                 quotes: LatestQuotes, q: ph.HistoryQuery, now: datetime, base_at: datetime | None
                 ) -> tuple[list[int], list[Decimal], list[Decimal]]:
    rows = (await conn.execute(text(
        "SELECT business_date, equity, as_of FROM equity_snapshots WHERE account_id = :a "
        "AND business_date = ANY(:d) ORDER BY business_date"),
        {"a": account_id, "d": list(q.sessions)})).all()
    flows = await _flows(conn, account_id, base_at, now)
    stamps = [ph.day_stamp(r.business_date) for r in rows]
    equity = [Decimal(r.equity) for r in rows]
    cash = [_flow_until(flows, r.as_of) for r in rows]
    today = trade_date(now)
    if q.sessions[-1] == today and (not rows or rows[-1].business_date != today):
        bal = (await balances_as_of(conn, now, account_id)).get(account_id, {})
        live = account_figures(bal, await long_market_values(router, account_id, quotes))
        stamps.append(ph.day_stamp(today))
        equity.append(live.equity)
        cash.append(_flow_until(flows, None))
    return stamps, equity, cash


async def _intraday(conn: AsyncConnection, marketdata: AsyncEngine | None, account_id: uuid.UUID,
                    q: ph.HistoryQuery, now: datetime, base_at: datetime | None
                    ) -> tuple[list[int], list[Decimal], list[Decimal]]:
    points = ph.intraday_points(q, now)
    if not points:
        return [], [], []
    step = ph.TIMEFRAMES[q.timeframe]
    assert step is not None
    marks = [min(t + step, now) for t in points]  # each point's equity: at its window's end
    start, end = points[0], marks[-1]
    bal = (await balances_as_of(conn, start, account_id)).get(account_id, {})
    moves = [ph.LedgerMove(r.at, r.name, Decimal(r.amount), r.kind in ph.EXTERNAL_KINDS)
             for r in (await conn.execute(text(
                 "SELECT e.created_at AS at, la.name, e.amount, t.kind FROM ledger_entries e "
                 "JOIN ledger_accounts la ON la.id = e.ledger_account_id "
                 "JOIN ledger_transactions t ON t.id = e.txn_id "
                 "WHERE la.owner_id = :a AND e.created_at > :s AND e.created_at <= :e "
                 "ORDER BY e.created_at, e.id"), {"a": account_id, "s": start, "e": end})).all()]
    symbols = sorted(set(share_positions(bal)) | {m.name.partition(":")[2] for m in moves
                                                  if m.name.startswith("shares")})
    book = ph.PriceBook()
    book.fallback = await closing_prices_before(conn, symbols, q.sessions[0])
    book.fallback |= {s: p for s, p in (await last_fills(conn, symbols, start)).items()
                      if s not in book.fallback}
    for r in (await conn.execute(text(
            "SELECT symbol, received_at, price FROM executions WHERE symbol = ANY(:s) AND qty > 0 "
            "AND price IS NOT NULL AND received_at > :a AND received_at <= :b"),
            {"s": symbols, "a": start, "b": end})).all():
        book.add(r.symbol, r.received_at, Decimal(r.price))
    if marketdata is not None and symbols:
        try:
            for sym, at, close in await closes_between(marketdata, symbols, start, end):
                book.add(sym, at, close)
        except (OSError, DBAPIError):
            pass  # advisory: fills and closes still mark the positions
    book.freeze()
    replayed = ph.replay(bal, moves, book, marks)
    before = await _flows(conn, account_id, base_at, start) if base_at is not None else []
    offset = _flow_until(before, None)
    return ([int(t.timestamp()) for t in points], [p.equity for p in replayed],
            [offset + p.cashflow for p in replayed])


def marketdata_engine_of(app_state: Any, url: str) -> AsyncEngine:
    """The API's market-data engine (created once, on first use)."""
    from api.services.marketdata import marketdata_engine

    engine = getattr(app_state, "marketdata_engine", None)
    if engine is None:
        engine = marketdata_engine(url)
        app_state.marketdata_engine = engine
    return engine
