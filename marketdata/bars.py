"""1-minute OHLCV bars (VWAP, trade count): pure aggregation, no I/O.

A bar is built from trades in arrival order. :class:`BarAcc` values merge associatively
(``merge(a, b)`` is the bar of a's trades followed by b's), which is how ingest writes partial bars
as deltas and Postgres combines them (see ``marketdata.ingest.UPSERT_BARS``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

MINUTE_NS = 60_000_000_000


def minute_start(t_ns: int) -> int:
    return t_ns - t_ns % MINUTE_NS


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
