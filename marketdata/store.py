"""Ingest's writes to the market-data database: bars of every timeframe and historical trades.

What it does: :meth:`MarketDataStore.write` upserts one flush's minute-bar deltas into
``bars_1min`` and, rolled up per bucket (:func:`marketdata.bars.rollup`), into ``bars_5min``,
``bars_15min``, ``bars_1hour`` and ``bars_1day``, and inserts the flush's accepted trades into
``trades`` -- all in one transaction, so a failed flush leaves nothing half written and is written
again whole. :meth:`day_bars` reads the New York day's bar so far (the ``T:"d"`` message);
:meth:`sweep_trades` deletes trades older than the retention.

What it deliberately does not do: aggregate (the deltas come merged from :mod:`marketdata.ingest`)
or publish anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketdata.bars import TIMEFRAMES, BarAcc, rollup

# one statement per table, the rows as arrays (unnest): a flush of thousands of bars or trades
# is one round trip and one plan, not one per row
UPSERT = """
INSERT INTO {table} AS b (symbol, t, o, h, l, c, v, n, pv, vw)
SELECT symbol, t, o, h, l, c, v, n, pv, pv / v
FROM unnest(CAST(:symbol AS text[]), CAST(:t AS timestamptz[]), CAST(:o AS numeric[]),
            CAST(:h AS numeric[]), CAST(:l AS numeric[]), CAST(:c AS numeric[]),
            CAST(:v AS numeric[]), CAST(:n AS integer[]), CAST(:pv AS numeric[]))
     AS u(symbol, t, o, h, l, c, v, n, pv)
ON CONFLICT (symbol, t) DO UPDATE SET
    h = GREATEST(b.h, EXCLUDED.h), l = LEAST(b.l, EXCLUDED.l), c = EXCLUDED.c,
    v = b.v + EXCLUDED.v, n = b.n + EXCLUDED.n, pv = b.pv + EXCLUDED.pv,
    vw = (b.pv + EXCLUDED.pv) / (b.v + EXCLUDED.v), updated_at = now()
"""
UPSERT_BARS = text(UPSERT.format(table="bars_1min"))
UPSERT_ROLLUPS = {table: text(UPSERT.format(table=table)) for table in TIMEFRAMES}
DAY_BARS = text("SELECT symbol, o, h, l, c, v, n, pv FROM bars_1day WHERE symbol = ANY(:syms) AND t = :day")
# a trade written twice (a flush retried after its commit was lost) is one trade
INSERT_TRADES = text("""
INSERT INTO trades (symbol, t, i, x, p, s, z)
SELECT * FROM unnest(CAST(:symbol AS text[]), CAST(:t AS timestamptz[]), CAST(:i AS bigint[]),
                     CAST(:x AS text[]), CAST(:p AS numeric[]), CAST(:s AS bigint[]), CAST(:z AS text[]))
ON CONFLICT DO NOTHING
""")
SWEEP_TRADES = text("DELETE FROM trades WHERE t < :before")

# an accepted trade waiting for the next flush: symbol, t (ns), id, exchange, price, size, tape
TradeRow = tuple[str, int, int, str, Decimal, int, str]


def _ts(t_ns: int) -> datetime:
    sec, ns = divmod(t_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).replace(microsecond=ns // 1000)


def bar_rows(bars: dict[tuple[str, int], BarAcc]) -> dict[str, list[Any]]:
    """The bars as the column arrays of :data:`UPSERT`."""
    cols: dict[str, list[Any]] = {k: [] for k in ("symbol", "t", "o", "h", "l", "c", "v", "n", "pv")}
    for (s, m), b in bars.items():
        cols["symbol"].append(s)
        cols["t"].append(_ts(m))
        cols["o"].append(b.o)
        cols["h"].append(b.h)
        cols["l"].append(b.l)
        cols["c"].append(b.c)
        cols["v"].append(b.v)
        cols["n"].append(b.n)
        cols["pv"].append(b.pv)
    return cols


class MarketDataStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, delta: dict[tuple[str, int], BarAcc], trades: list[TradeRow]) -> None:
        async with self.engine.begin() as conn:
            if delta:
                await conn.execute(UPSERT_BARS, bar_rows(delta))
                for table, bucket in TIMEFRAMES.items():
                    await conn.execute(UPSERT_ROLLUPS[table], bar_rows(rollup(delta, bucket)))
            if trades:
                sym, t, i, x, p, n, z = zip(*trades, strict=True)
                await conn.execute(INSERT_TRADES, {
                    "symbol": list(sym), "t": [_ts(v) for v in t], "i": list(i), "x": list(x),
                    "p": list(p), "s": list(n), "z": list(z)})

    async def day_bars(self, day_ns: int, symbols: list[str]) -> dict[str, BarAcc]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(DAY_BARS, {"syms": symbols, "day": _ts(day_ns)})).all()
        return {r.symbol: BarAcc(r.o, r.h, r.l, r.c, int(r.v), int(r.n), r.pv) for r in rows}

    async def sweep_trades(self, before_ns: int) -> int:
        """Delete trades older than ``before_ns``; how many went."""
        async with self.engine.begin() as conn:
            return int((await conn.execute(SWEEP_TRADES, {"before": _ts(before_ns)})).rowcount)
