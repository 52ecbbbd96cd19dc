"""What the gateway reads from Redis right before it routes a new order, in one round trip: is
the symbol halted (the set ``<prefix>:halts``), and its latest quote (the hash
``<prefix>:quotes:latest``), the NBBO recorded with the route.

    RoutingMarket(redis, prefix, fallback=ControlsCache)
        await at_routing(symbol) -> MarketAtRouting(halted, quote)   one pipelined read
        await get(symbol) -> Quote | None                            the quote alone

The two answers mean what they meant as two reads (``db.controls.is_halted_now`` and
``marketdata.quotes.LatestQuotes(max_age_s=inf)``):

* the halt is Redis's answer now; when Redis fails, the controls cache's last known state
  (logged), never "not halted" by default when the cache knows better;
* the quote is advisory: absent, unreadable or Redis down -> None (logged), and routing goes on;
  a stale quote is still the quote (its age is recorded with the route, nothing refuses it).

It does not decide anything: refusing a halted symbol and recording the route is
:class:`activities.gateway.GatewayActivities`' job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from db.controls import ControlsCache
from marketdata.quotes import Quote, parse_quote
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarketAtRouting:
    """The symbol's halt and latest quote (None: none usable) as one read saw them."""

    halted: bool
    quote: Quote | None


class RoutingMarket:
    """The halt check and the latest quote of a symbol, read together (see the module doc)."""

    def __init__(self, redis: Redis, prefix: str, fallback: ControlsCache | None = None) -> None:
        self.redis = redis
        keys = RedisKeys(prefix)
        self.halts_key = keys.halts
        self.quotes_key = keys.quotes_latest
        self.fallback = fallback

    async def at_routing(self, symbol: str) -> MarketAtRouting:
        """SISMEMBER on the halts and HGET of the quote in one pipeline (no transaction: two
        reads, one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self.halts_key, symbol.upper())
        pipe.hget(self.quotes_key, symbol)
        try:
            member, raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("halt check fell back to the cache, no NBBO at routing: %s", exc)
            c = self.fallback.get(symbol) if self.fallback else None
            return MarketAtRouting(bool(c and c.halted), None)
        return MarketAtRouting(bool(member), self._quote(symbol, raw))

    async def get(self, symbol: str) -> Quote | None:
        """The latest quote alone (one HGET), as :meth:`at_routing` reads it."""
        try:
            raw = await self.redis.hget(self.quotes_key, symbol)
        except (RedisError, OSError) as exc:
            log.warning("latest quotes unavailable: %s", exc)
            return None
        return self._quote(symbol, raw)

    @staticmethod
    def _quote(symbol: str, raw: bytes | str | None) -> Quote | None:
        # however old: the route records its age (LatestQuotes(max_age_s=inf) did the same)
        return parse_quote(symbol, raw, float("inf")) if raw is not None else None
