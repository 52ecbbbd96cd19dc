"""OHLCV bars (VWAP, trade count): pure aggregation, no I/O.

A bar is built from trades in arrival order. :class:`BarAcc` values merge associatively
(``merge(a, b)`` is the bar of a's trades followed by b's), which is how ingest writes partial bars
as deltas and Postgres combines them (see ``marketdata.store.UPSERT``). The same minute
deltas, merged per bucket in time order (:func:`rollup`), are the deltas of the longer
timeframes (:data:`TIMEFRAMES`: 5 and 15 minutes and the hour aligned on UTC, the New York day).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

MINUTE_NS = 60_000_000_000
NEW_YORK = ZoneInfo("America/New_York")


def minute_start(t_ns: int) -> int:
    return t_ns - t_ns % MINUTE_NS


def ny_midnight(t_ns: int) -> int:
    """The start (ns since the epoch) of the New York calendar day holding ``t_ns``: the ``t`` of
    its daily bar, as Alpaca stamps daily bars."""
    d = datetime.fromtimestamp(t_ns // 1_000_000_000, NEW_YORK)
    return int(d.replace(hour=0, minute=0, second=0).timestamp()) * 1_000_000_000


def next_ny_midnight(day_ns: int) -> int:
    """The start of the New York day after the one starting at ``day_ns`` (days are 23 to 25 h)."""
    return ny_midnight(day_ns + 26 * 3600 * 1_000_000_000)


def _floor(n: int) -> Callable[[int], int]:
    return lambda t: t - t % n


# the longer timeframes: table -> the start of the bucket holding a minute
TIMEFRAMES: dict[str, Callable[[int], int]] = {
    "bars_5min": _floor(5 * MINUTE_NS),
    "bars_15min": _floor(15 * MINUTE_NS),
    "bars_1hour": _floor(60 * MINUTE_NS),
    "bars_1day": ny_midnight,
}


def rollup(minutes: dict[tuple[str, int], BarAcc],
           bucket: Callable[[int], int]) -> dict[tuple[str, int], BarAcc]:
    """Minute bars (or deltas) merged per (symbol, bucket), in time order."""
    out: dict[tuple[str, int], BarAcc] = {}
    for (sym, m), b in sorted(minutes.items(), key=lambda kv: kv[0][1]):
        key = (sym, bucket(m))
        acc = out.get(key)
        if acc is None:
            out[key] = BarAcc(b.o, b.h, b.l, b.c, b.v, b.n, b.pv)
        else:
            acc.merge(b)
    return out


@dataclass
class BarAcc:
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741
    c: Decimal
    v: int
    n: int
    pv: Decimal

    @classmethod
    def first(cls, price: Decimal, size: int) -> BarAcc:
        return cls(price, price, price, price, size, 1, price * size)

    def add(self, price: Decimal, size: int) -> None:
        if price > self.h:
            self.h = price
        if price < self.l:
            self.l = price
        self.c = price
        self.v += size
        self.n += 1
        self.pv += price * size

    def merge(self, later: BarAcc) -> None:
        self.h = max(self.h, later.h)
        self.l = min(self.l, later.l)
        self.c = later.c
        self.v += later.v
        self.n += later.n
        self.pv += later.pv

    @property
    def vw(self) -> Decimal:
        return self.pv / self.v if self.v else self.c


def recompute(trades: Iterable[tuple[str, int, Decimal, int]]) -> dict[tuple[str, int], BarAcc]:
    """Bars from raw trades ``(symbol, t_ns, price, size)`` in arrival order, the slow obvious way."""
    grouped: dict[tuple[str, int], list[tuple[Decimal, int]]] = {}
    for sym, t, p, s in trades:
        grouped.setdefault((sym, minute_start(t)), []).append((p, s))
    out = {}
    for key, ts in grouped.items():
        prices = [p for p, _ in ts]
        out[key] = BarAcc(prices[0], max(prices), min(prices), prices[-1], sum(s for _, s in ts),
                          len(ts), sum((p * s for p, s in ts), Decimal(0)))
    return out
