"""The market-data universe: the seeded assets first, then deterministic synthetic symbols.

``universe(n)`` is the same on every process and every run, so the exchange feed simulator and
marketdata ingest agree on which symbols exist without sharing a database: ingest drops a tick
for any symbol outside ``universe(settings.marketdata_universe_size)`` as ``unknown_symbol``.
Synthetic symbols are ``Z`` + three letters (``ZAAA``, ``ZAAB``, ...); no seeded symbol starts
with ``Z``. Reference prices only seed the simulator's random walk; they are never money.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from domain.assets import ASSETS

MAX_UNIVERSE = 10_000
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Listing:
    symbol: str
    ref_price: Decimal
    exchange: str
    synthetic: bool


def synthetic_symbol(i: int) -> str:
    a, rest = divmod(i, 26 * 26)
    b, c = divmod(rest, 26)
    return "Z" + _LETTERS[a] + _LETTERS[b] + _LETTERS[c]


def _synthetic_price(symbol: str) -> Decimal:
    h = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:4], "big")
    return Decimal(5 + h % 49_500) / 100  # 0.05 .. 495.04


@lru_cache(maxsize=8)
def universe(n: int = MAX_UNIVERSE) -> tuple[Listing, ...]:
    """The first ``n`` listings (seeded assets first), ``n`` capped at :data:`MAX_UNIVERSE`."""
    n = max(0, min(n, MAX_UNIVERSE))
    out = [Listing(a.symbol, a.ref_price, a.exchange, False) for a in ASSETS][:n]
    i = 0
    while len(out) < n:
        sym = synthetic_symbol(i)
        out.append(Listing(sym, _synthetic_price(sym), "SYNTH", True))
        i += 1
    return tuple(out)


@lru_cache(maxsize=8)
def known_symbols(n: int = MAX_UNIVERSE) -> frozenset[str]:
    return frozenset(x.symbol for x in universe(n))
