"""Ingest's writes to the market-data database: bars of every timeframe and historical trades.

What it does: :meth:`MarketDataStore.write` upserts one flush's minute-bar deltas into
``bars_1min`` and, rolled up per bucket (:func:`marketdata.bars.rollup`), into ``bars_5min``,
``bars_15min``, ``bars_1hour`` and ``bars_1day``, and inserts the flush's accepted trades into
``trades`` -- all in one statement, so a failed flush leaves nothing half written and is written
again whole. :meth:`day_bars` reads the New York day's bar so far (the ``T:"d"`` message);
:meth:`sweep_trades` deletes trades older than the retention.

What it deliberately does not do: aggregate (the deltas come merged from :mod:`marketdata.ingest`)
or publish anything.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketdata.bars import TIMEFRAMES, BarAcc, rollup

# A flush is ONE statement: a data-modifying CTE per table, the rows as arrays (unnest). One
# round trip and one plan per flush, not one per table or per row: ingest's event loop is busy
# with the feed, and every extra await of a flush waits behind it.
UPSERT = """
INSERT INTO {table} AS b (symbol, t, o, h, l, c, v, n, pv, vw)
SELECT symbol, t, o, h, l, c, v, n, pv, pv / v
FROM unnest(CAST(:{p}symbol AS text[]), CAST(:{p}t AS timestamptz[]), CAST(:{p}o AS numeric[]),
            CAST(:{p}h AS numeric[]), CAST(:{p}l AS numeric[]), CAST(:{p}c AS numeric[]),
            CAST(:{p}v AS numeric[]), CAST(:{p}n AS integer[]), CAST(:{p}pv AS numeric[]))
     AS u(symbol, t, o, h, l, c, v, n, pv)
ON CONFLICT (symbol, t) DO UPDATE SET
    h = GREATEST(b.h, EXCLUDED.h), l = LEAST(b.l, EXCLUDED.l), c = EXCLUDED.c,
    v = b.v + EXCLUDED.v, n = b.n + EXCLUDED.n, pv = b.pv + EXCLUDED.pv,
    vw = (b.pv + EXCLUDED.pv) / (b.v + EXCLUDED.v), updated_at = now()
"""
# a trade written twice (a flush retried after its commit was lost) is one trade
INSERT_TRADES = """
INSERT INTO trades (symbol, t, i, x, p, s, z)
SELECT * FROM unnest(CAST(:tr_symbol AS text[]), CAST(:tr_t AS timestamptz[]), CAST(:tr_i AS bigint[]),
                     CAST(:tr_x AS text[]), CAST(:tr_p AS numeric[]), CAST(:tr_s AS bigint[]),
                     CAST(:tr_z AS text[]))
ON CONFLICT DO NOTHING
"""
BAR_TABLES = ("bars_1min", *TIMEFRAMES)


@functools.cache
def flush_statement(bars: bool, trades: bool) -> TextClause:
    parts = [f"b{k} AS ({UPSERT.format(table=table, p=f'b{k}_')})"
             for k, table in enumerate(BAR_TABLES)] if bars else []
    if trades:
        parts.append(f"tr AS ({INSERT_TRADES})")
    return text("WITH " + ", ".join(parts) + " SELECT 1")


DAY_BARS = text("SELECT symbol, o, h, l, c, v, n, pv FROM bars_1day WHERE symbol = ANY(:syms) AND t = :day")
SWEEP_TRADES = text("DELETE FROM trades WHERE t < :before")

# an accepted trade waiting for the next flush: symbol, t (ns), id, exchange, price, size, tape
TradeRow = tuple[str, int, int, str, Decimal, int, str]


def _ts(t_ns: int) -> datetime:
    sec, ns = divmod(t_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).replace(microsecond=ns // 1000)


def bar_rows(bars: dict[tuple[str, int], BarAcc], p: str) -> dict[str, list[Any]]:
    """The bars as the column arrays of :data:`UPSERT` (parameter names prefixed ``p``)."""
    cols: dict[str, list[Any]] = {p + k: [] for k in ("symbol", "t", "o", "h", "l", "c", "v", "n", "pv")}
    sym, t, o, h, lo, c, v, n, pv = cols.values()
    for (s, m), b in bars.items():
        sym.append(s)
        t.append(_ts(m))
        o.append(b.o)
        h.append(b.h)
        lo.append(b.l)
        c.append(b.c)
        v.append(b.v)
        n.append(b.n)
        pv.append(b.pv)
    return cols


class MarketDataStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, delta: dict[tuple[str, int], BarAcc], trades: list[TradeRow]) -> None:
        if not delta and not trades:
            return
        params: dict[str, Any] = {}
        if delta:
            params.update(bar_rows(delta, "b0_"))
            for k, bucket in enumerate(TIMEFRAMES.values(), start=1):
                params.update(bar_rows(rollup(delta, bucket), f"b{k}_"))
        if trades:
            sym, t, i, x, p, n, z = zip(*trades, strict=True)
            params.update({"tr_symbol": list(sym), "tr_t": [_ts(v) for v in t], "tr_i": list(i),
                           "tr_x": list(x), "tr_p": list(p), "tr_s": list(n), "tr_z": list(z)})
        async with self.engine.begin() as conn:
            await conn.execute(flush_statement(bool(delta), bool(trades)), params)

    async def day_bars(self, day_ns: int, symbols: list[str]) -> dict[str, BarAcc]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(DAY_BARS, {"syms": symbols, "day": _ts(day_ns)})).all()
        return {r.symbol: BarAcc(r.o, r.h, r.l, r.c, int(r.v), int(r.n), r.pv) for r in rows}

    async def sweep_trades(self, before_ns: int) -> int:
        """Delete trades older than ``before_ns``; how many went."""
        async with self.engine.begin() as conn:
            return int((await conn.execute(SWEEP_TRADES, {"before": _ts(before_ns)})).rowcount)
