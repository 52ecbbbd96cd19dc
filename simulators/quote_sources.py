"""Where the simulated market makers get prices: the :class:`QuoteSource` protocol and its two
implementations, :class:`RandomWalkQuoteSource` (deterministic prices seeded from
``domain.assets``) and :class:`RedisQuoteSource` (the marketdata latest-quote hash and halt set,
falling back to a random walk).

Deliberately not here: matching (:mod:`simulators.matching`), FIX (:mod:`simulators.market_maker`)
and producing quotes (the exchange feed and ``marketdata/`` do that); nothing here writes to
Redis.
"""

from __future__ import annotations

import json
import logging
import random
import time as _time
from decimal import Decimal, InvalidOperation
from typing import Protocol

from domain.assets import ASSETS
from sherwood.contracts import RedisKeys
from simulators.matching import ZERO, Quote, tick_size

log = logging.getLogger(__name__)

DEFAULT_QUOTES_KEY = RedisKeys().quotes_latest
DEFAULT_HALTS_KEY = RedisKeys().halts


class QuoteSource(Protocol):
    """Where the simulator gets prices. Implementations never raise for a missing quote."""

    async def get_quote(self, symbol: str) -> Quote | None:
        """The current quote of ``symbol``, or None when the symbol is unknown."""
        ...

    async def halted_symbols(self) -> set[str]:
        """Symbols the quote source says are halted (empty when it has no such notion)."""
        ...

    def advance(self) -> None:
        """Move simulated prices one step (a no-op for a live feed)."""
        ...

    async def close(self) -> None: ...


class RandomWalkQuoteSource:
    """Deterministic random-walk quotes for the ``domain.assets`` universe (or given prices).

    Each :meth:`advance` moves every symbol's mid by a whole number of ticks (at most
    ``volatility_bps`` of the price), Decimal arithmetic only. The quote is mid ± one tick.
    It does not model volume, sizes or halts.
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        ref_prices: dict[str, Decimal] | None = None,
        volatility_bps: int = 5,
    ) -> None:
        self._rng = random.Random(seed)
        prices = ref_prices if ref_prices is not None else {
            a.symbol: a.ref_price for a in ASSETS if a.tradable}
        self._mid: dict[str, Decimal] = {s: self._on_tick(Decimal(p)) for s, p in prices.items()}
        self._vol = Decimal(volatility_bps) / Decimal(10_000)

    @staticmethod
    def _on_tick(px: Decimal) -> Decimal:
        tick = tick_size(px)
        return max((px / tick).to_integral_value() * tick, tick * 2)

    def symbols(self) -> set[str]:
        return set(self._mid)

    def set_mid(self, symbol: str, mid: Decimal) -> None:
        self._mid[symbol] = self._on_tick(Decimal(mid))

    def quote_now(self, symbol: str) -> Quote | None:
        mid = self._mid.get(symbol)
        if mid is None:
            return None
        tick = tick_size(mid)
        return Quote(symbol, mid - tick, mid + tick, 1, 1)

    async def get_quote(self, symbol: str) -> Quote | None:
        return self.quote_now(symbol)

    async def halted_symbols(self) -> set[str]:
        return set()

    def advance(self) -> None:
        for symbol, mid in self._mid.items():
            tick = tick_size(mid)
            max_ticks = max(1, int(mid * self._vol / tick))
            self._mid[symbol] = self._on_tick(mid + tick * self._rng.randint(-max_ticks, max_ticks))

    async def close(self) -> None:
        return None


class RedisQuoteSource:
    """Latest quotes from the marketdata Redis hash ``key`` (field = symbol, value = JSON).

    The value looks like ``{"S":"AAPL","bp":"187.10","bs":3,"ap":"187.12","as":2,"t":"..."}``.
    A missing/invalid field or an unreachable Redis falls back to ``fallback`` (a random walk by
    default); after a Redis error it is not retried for ``retry_after`` seconds, so a dead Redis
    costs one short timeout, not one per order. Halts are the members of the set ``halts_key``.
    It never writes to Redis.
    """

    def __init__(
        self,
        redis_url: str,
        key: str = DEFAULT_QUOTES_KEY,
        *,
        halts_key: str = DEFAULT_HALTS_KEY,
        fallback: QuoteSource | None = None,
        timeout: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        from sherwood.redis_client import RedisTimeouts, redis_from_url

        self.key = key
        self.halts_key = halts_key
        self.fallback: QuoteSource = fallback if fallback is not None else RandomWalkQuoteSource(0)
        self._redis = redis_from_url(redis_url, RedisTimeouts(timeout, timeout),
                                     decode_responses=True)
        self._retry_after = retry_after
        self._down_until = 0.0

    def _available(self) -> bool:
        return _time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._available():
            log.warning("redis quote source unavailable (%s); using the fallback for %.0fs",
                        exc, self._retry_after)
        self._down_until = _time.monotonic() + self._retry_after

    async def get_quote(self, symbol: str) -> Quote | None:
        if self._available():
            try:
                raw = await self._redis.hget(self.key, symbol)
            except Exception as exc:  # any redis/network error means "use the fallback"
                self._failed(exc)
            else:
                quote = self._parse(symbol, raw)
                if quote is not None:
                    return quote
        return await self.fallback.get_quote(symbol)

    @staticmethod
    def _parse(symbol: str, raw: bytes | str | None) -> Quote | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            bid, ask = Decimal(str(data["bp"])), Decimal(str(data["ap"]))
            if not (ZERO < bid <= ask):
                raise ValueError(f"crossed or empty quote {bid}/{ask}")
            return Quote(symbol, bid, ask, int(data.get("bs") or 0), int(data.get("as") or 0))
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            log.warning("ignoring bad quote for %s in redis: %r (%s)", symbol, raw, exc)
            return None

    async def halted_symbols(self) -> set[str]:
        if not self._available():
            return set()
        try:
            members = await self._redis.smembers(self.halts_key)
        except Exception as exc:
            self._failed(exc)
            return set()
        return {str(m).upper() for m in members}

    def advance(self) -> None:
        self.fallback.advance()

    async def close(self) -> None:
        await self._redis.aclose()
        await self.fallback.close()
