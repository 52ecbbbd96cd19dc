"""End-of-day equity snapshots of one shard (table ``equity_snapshots``, shard migration 0006).

:func:`snapshot_equity` writes every account's equity for a business date, once: cash (available
+ held + unsettled, :func:`domain.account.account_figures`) plus its long positions marked at
the shard's last fill price of each symbol (the back office reads no quotes: the last trade
booked on the shard before the snapshot stands for the close). A rerun for the same date inserts
nothing (the first snapshot stands). :func:`last_equity` reads the latest snapshot before a date.
Does not decide when a snapshot is due (the EquitySnapshot workflow and its schedule do).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.account import account_figures, share_positions

ZERO = Decimal(0)


async def snapshot_equity(engine: AsyncEngine, business_date: date) -> int:
    """Snapshot every account of the shard for ``business_date`` in one consistent read and
    one transaction; returns how many snapshots were new."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            rows = (await conn.execute(text(
                "SELECT a.id AS account_id, la.name, coalesce(sum(b.balance), 0) AS balance "
                "FROM accounts a LEFT JOIN ledger_accounts la ON la.owner_id = a.id "
                "LEFT JOIN balances b ON b.ledger_account_id = la.id "
                "GROUP BY a.id, la.name"))).all()
            marks = {r.symbol: Decimal(r.price) for r in (await conn.execute(text(
                "SELECT DISTINCT ON (symbol) symbol, price FROM executions "
                "WHERE qty > 0 AND price IS NOT NULL ORDER BY symbol, received_at DESC"))).all()}
            balances: dict[uuid.UUID, dict[str, Decimal]] = defaultdict(dict)
            for r in rows:
                balances[r.account_id]
                if r.name is not None:
                    balances[r.account_id][r.name] = Decimal(r.balance)
            values = []
            for account_id, bal in balances.items():
                mv = {s: q * marks[s] for s, q in share_positions(bal).items() if s in marks}
                fig = account_figures(bal, mv)
                values.append({"a": account_id, "d": business_date, "e": fig.equity, "c": fig.cash,
                               "l": fig.long_market_value})
            if not values:
                return 0
            result = await conn.execute(text(
                "INSERT INTO equity_snapshots (account_id, business_date, equity, cash, long_market_value) "
                "VALUES (:a, :d, :e, :c, :l) ON CONFLICT (account_id, business_date) DO NOTHING"), values)
            return int(result.rowcount or 0)


async def last_equity(conn: AsyncConnection, account_id: uuid.UUID, before: date) -> Decimal | None:
    """The equity of the account's latest snapshot dated before ``before``; None without one."""
    v = (await conn.execute(text(
        "SELECT equity FROM equity_snapshots WHERE account_id = :a AND business_date < :d "
        "ORDER BY business_date DESC LIMIT 1"), {"a": account_id, "d": before})).scalar_one_or_none()
    return None if v is None else Decimal(v)
