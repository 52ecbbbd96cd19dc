"""The latest quote per symbol, as the read path leaves it in Redis: hash
``<prefix>:quotes:latest``, field = symbol, value = JSON in Alpaca's quote shape
(``{"S","bp","bs","ap","as","t"}``, prices as strings or numbers).

Quotes written by marketdata ingest also carry ``it`` (ingest time, ns since the epoch) and
``mx`` (the ``quote_max_age_s`` setting ingest runs with): a quote older than that counts as no
quote (the feed or ingest is down), so the write path rejects market buys with ``no_quote``
(their cash hold cannot be sized) while limit orders keep working. ``LatestQuotes(...,
max_age_s=...)`` overrides ``mx``. Quotes without ``it`` (reference quotes, tests) never expire.
The age limit applies to hold sizing (:meth:`LatestQuotes.get`, the order symbol's quote of
:meth:`LatestQuotes.for_order`); valuation (:meth:`LatestQuotes.get_many`) shows the last known
price however old.

Advisory only: the write path may use it to size market-order holds and to value positions, and
must keep working without it (every read returns None on any Redis failure).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import DomainError
from domain.money import parse_decimal
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    t: str | None = None
    it: int | None = None  # when ingest wrote it (ns since the epoch), when it says

    def age_ms(self, now_ns: int) -> int | None:
        """How old the quote is at ``now_ns``: from its ingest time, else its own timestamp
        (RFC 3339), else None (a reference quote: no age)."""
        if self.it is not None:
            return max(0, (now_ns - self.it) // 1_000_000)
        if self.t:
            try:
                t = datetime.fromisoformat(self.t.replace("Z", "+00:00"))
            except ValueError:
                return None
            if t.tzinfo is None:
                return None
            return max(0, (now_ns - int(t.timestamp() * 1e9)) // 1_000_000)
        return None


def parse_quote(symbol: str, raw: bytes | str, max_age_s: float | None = None) -> Quote | None:
    try:
        d = json.loads(raw)
        it, limit = d.get("it"), max_age_s if max_age_s is not None else d.get("mx")
        if it is not None and limit is not None and time.time_ns() - int(it) > float(limit) * 1e9:
            log.debug("stale quote for %s ignored", symbol)
            return None
        return Quote(symbol, parse_decimal(str(d["bp"])), parse_decimal(str(d["ap"])), d.get("t"),
                     int(it) if it is not None else None)
    except (ValueError, KeyError, TypeError, DomainError):
        log.warning("unreadable quote for %s: %r", symbol, raw)
        return None


class LatestQuotes:
    def __init__(self, redis: Redis | None, prefix: str = "sherwood", *,
                 max_age_s: float | None = None) -> None:
        self.redis = redis
        self.key = RedisKeys(prefix).quotes_latest
        self.max_age_s = max_age_s

    async def get(self, symbol: str) -> Quote | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.hget(self.key, symbol)
        except (RedisError, OSError) as exc:
            log.warning("latest quotes unavailable: %s", exc)
            return None
        return parse_quote(symbol, raw, self.max_age_s) if raw is not None else None

    async def get_many(self, symbols: list[str]) -> dict[str, Quote]:
        """The last known quote of each symbol, however old (valuation, not a hold: a stale
        price is still the best price to show)."""
        raws = await self._read(symbols)
        return {sym: q for sym, raw in raws.items()
                if (q := parse_quote(sym, raw, float("inf"))) is not None}

    async def for_order(self, symbol: str, held: list[str]) -> tuple[Quote | None, dict[str, Quote]]:
        """One read for the accept path: ``symbol``'s quote for sizing a hold (None when absent
        or stale, as :meth:`get`) and the last known quote of it and of every ``held`` symbol
        (as :meth:`get_many`)."""
        raws = await self._read(sorted({symbol, *held}))
        own = raws.get(symbol)
        fresh = parse_quote(symbol, own, self.max_age_s) if own is not None else None
        return fresh, {sym: q for sym, raw in raws.items()
                       if (q := parse_quote(sym, raw, float("inf"))) is not None}

    async def _read(self, symbols: list[str]) -> dict[str, bytes | str]:
        if self.redis is None or not symbols:
            return {}
        try:
            raws = await self.redis.hmget(self.key, symbols)
        except (RedisError, OSError) as exc:
            log.warning("latest quotes unavailable: %s", exc)
            return {}
        return {sym: raw for sym, raw in zip(symbols, raws, strict=True) if raw is not None}

    async def put(self, symbol: str, bid: Decimal, ask: Decimal, t: str | None = None) -> None:
        """Write a quote (used by feeds, simulators and tests)."""
        assert self.redis is not None
        await self.redis.hset(self.key, symbol, json.dumps(
            {"S": symbol, "bp": str(bid), "ap": str(ask), "bs": 1, "as": 1, "t": t}))
