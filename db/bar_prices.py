"""Prices from the market-data database's minute bars (``bars_1min``, written by ingest), for
the back office's closing prices and the portfolio history's intraday marks.

A bar stands for its minute ``[t, t + 1 min)``; its close is known at the minute's end, so a bar
counts at an instant only once its minute has ended. Reads only; an unreachable market-data
database raises (the caller decides whether that is transient).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MINUTE = timedelta(minutes=1)
LOOKBACK = timedelta(days=7)  # a symbol with no bar in the last week has no bar close


async def last_closes(engine: AsyncEngine, symbols: Sequence[str], at: datetime) -> dict[str, Decimal]:
    """Per symbol, the close of its last minute bar that ended by ``at`` (within a week)."""
    if not symbols:
        return {}
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT DISTINCT ON (symbol) symbol, c FROM bars_1min WHERE symbol = ANY(:s) "
            "AND t <= :last AND t > :first ORDER BY symbol, t DESC"),
            {"s": sorted(set(symbols)), "last": at - MINUTE, "first": at - LOOKBACK})).all()
    return {r.symbol: Decimal(r.c) for r in rows}


async def closes_between(engine: AsyncEngine, symbols: Sequence[str], start: datetime,
                         end: datetime) -> list[tuple[str, datetime, Decimal]]:
    """Every minute bar of ``symbols`` ending in ``(start, end]``: (symbol, end of minute, close)."""
    if not symbols:
        return []
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT symbol, t AS minute, c FROM bars_1min WHERE symbol = ANY(:s) AND t > :a AND t <= :b "
            "ORDER BY t"), {"s": sorted(set(symbols)), "a": start - MINUTE, "b": end - MINUTE})).all()
    return [(r.symbol, r.minute + MINUTE, Decimal(r.c)) for r in rows]
