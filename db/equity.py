"""End-of-day snapshots of one shard (``equity_snapshots``, ``position_snapshots``,
``closing_prices``: shard migrations 0006 and 0014), and the ledger read as of an instant.

:func:`snapshot_equity` writes, once per business date, every account's equity, cash and long
market value and its share positions *as of* an instant (the session's close): balances are the
ledger's at that instant (:func:`balances_as_of`: today's cached balances less every entry
booked after it), positions are marked at the symbol's closing price -- the close of its last
minute bar by then (the market-data database, passed in as ``bar_closes``), else the shard's
last fill by then -- and those prices are recorded in ``closing_prices``. A rerun for the same
date inserts nothing (the first snapshot stands; the tables are append-only).
:func:`last_equity` reads the latest snapshot before a date.

Does not decide when a snapshot is due (the EquitySnapshot workflow and its schedule do). An
entry committed after the snapshot's read but stamped before its instant (a transaction open
across the close) is not in it; the schedule runs minutes after the close, far beyond any
transaction's statement timeout.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.account import account_figures, share_positions

ZERO = Decimal(0)
BarCloses = Callable[[Sequence[str], datetime], Awaitable[Mapping[str, Decimal]]]

# every customer ledger account's balance at :t: the cached balance less what came after
_BALANCES_AS_OF = """
SELECT la.owner_id AS account_id, la.name,
       coalesce((SELECT sum(b.balance) FROM balances b WHERE b.ledger_account_id = la.id), 0)
       - coalesce((SELECT sum(e.amount) FROM ledger_entries e
                   WHERE e.ledger_account_id = la.id AND e.created_at > :t), 0) AS balance
FROM ledger_accounts la WHERE la.owner_id IS NOT NULL {only}
"""


async def balances_as_of(conn: AsyncConnection, at: datetime,
                         account_id: uuid.UUID | None = None) -> dict[uuid.UUID, dict[str, Decimal]]:
    """Customer balances by account and ledger account name as of ``at`` (every account of the
    shard, or one)."""
    sql = _BALANCES_AS_OF.format(only="" if account_id is None else "AND la.owner_id = :a")
    out: dict[uuid.UUID, dict[str, Decimal]] = defaultdict(dict)
    for r in (await conn.execute(text(sql), {"t": at, "a": account_id})).all():
        if r.balance != 0:
            out[r.account_id][r.name] = Decimal(r.balance)
    return out


async def last_fills(conn: AsyncConnection, symbols: Sequence[str], at: datetime) -> dict[str, Decimal]:
    """The shard's last fill price per symbol booked by ``at``."""
    if not symbols:
        return {}
    rows = (await conn.execute(text(
        "SELECT DISTINCT ON (symbol) symbol, price FROM executions WHERE symbol = ANY(:s) "
        "AND qty > 0 AND price IS NOT NULL AND received_at <= :t ORDER BY symbol, received_at DESC"),
        {"s": sorted(set(symbols)), "t": at})).all()
    return {r.symbol: Decimal(r.price) for r in rows}


async def snapshot_equity(engine: AsyncEngine, business_date: date, as_of: datetime,
                          bar_closes: BarCloses) -> int:
    """Snapshot every account of the shard for ``business_date`` as of ``as_of`` in one
    consistent read and one transaction; returns how many account snapshots were new."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            done = (await conn.execute(text(
                "SELECT symbol, price FROM closing_prices WHERE business_date = :d"),
                {"d": business_date})).all()
            balances = await balances_as_of(conn, as_of)
            held = sorted({s for bal in balances.values() for s in share_positions(bal)})
            if done:  # a rerun values positions at the prices the first run recorded
                marks = {r.symbol: (Decimal(r.price), "") for r in done}
            else:
                fills = await last_fills(conn, held, as_of)
                bars = await bar_closes(held, as_of) if held else {}
                marks = {s: (bars[s], "bar") for s in held if s in bars}
                marks |= {s: (fills[s], "last_fill") for s in held if s not in bars and s in fills}
                if marks:
                    await conn.execute(text(
                        "INSERT INTO closing_prices (business_date, symbol, price, source) "
                        "VALUES (:d, :s, :p, :src) ON CONFLICT DO NOTHING"),
                        [{"d": business_date, "s": s, "p": p, "src": src}
                         for s, (p, src) in sorted(marks.items())])
            equity, positions = [], []
            for account_id, bal in balances.items():
                mv: dict[str, Decimal] = {}
                for sym, qty in share_positions(bal).items():
                    price = marks.get(sym, (None, ""))[0]
                    value = qty * price if price is not None else ZERO
                    if price is not None:
                        mv[sym] = value
                    positions.append({"a": account_id, "d": business_date, "s": sym, "q": qty,
                                      "p": price, "v": value})
                fig = account_figures(bal, mv)
                equity.append({"a": account_id, "d": business_date, "e": fig.equity, "c": fig.cash,
                               "l": fig.long_market_value, "t": as_of})
            if not equity:
                return 0
            taken = set((await conn.execute(text(
                "SELECT account_id FROM equity_snapshots WHERE business_date = :d"),
                {"d": business_date})).scalars())
            equity = [e for e in equity if e["a"] not in taken]
            if not equity:
                return 0
            # a concurrent run of the same date: the conflict keeps the first snapshot
            await conn.execute(text(
                "INSERT INTO equity_snapshots (account_id, business_date, equity, cash, "
                "long_market_value, as_of) VALUES (:a, :d, :e, :c, :l, :t) "
                "ON CONFLICT (account_id, business_date) DO NOTHING"), equity)
            new = {e["a"] for e in equity}
            fresh = [p for p in positions if p["a"] in new]
            if fresh:
                await conn.execute(text(
                    "INSERT INTO position_snapshots (account_id, business_date, symbol, qty, "
                    "close_price, market_value) VALUES (:a, :d, :s, :q, :p, :v) "
                    "ON CONFLICT DO NOTHING"), fresh)
            return len(new)


async def last_equity(conn: AsyncConnection, account_id: uuid.UUID, before: date) -> Decimal | None:
    """The equity of the account's latest snapshot dated before ``before``; None without one."""
    v = (await conn.execute(text(
        "SELECT equity FROM equity_snapshots WHERE account_id = :a AND business_date < :d "
        "ORDER BY business_date DESC LIMIT 1"), {"a": account_id, "d": before})).scalar_one_or_none()
    return None if v is None else Decimal(v)


async def closing_prices_before(conn: AsyncConnection, symbols: Sequence[str], before: date
                                ) -> dict[str, Decimal]:
    """Per symbol, the closing price of the latest session before ``before`` that has one."""
    if not symbols:
        return {}
    rows = (await conn.execute(text(
        "SELECT DISTINCT ON (symbol) symbol, price FROM closing_prices WHERE symbol = ANY(:s) "
        "AND business_date < :d ORDER BY symbol, business_date DESC"),
        {"s": sorted(set(symbols)), "d": before})).all()
    return {r.symbol: Decimal(r.price) for r in rows}
