"""The gateway's read before routing (activities/gateway_market.py): the halt and the NBBO in one
round trip mean what the two reads they replace meant (``db.controls.is_halted_now`` and
``LatestQuotes(max_age_s=inf)``), on a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from activities.gateway_market import MarketAtRouting, RoutingMarket
from db.controls import ControlsCache, is_halted_now
from marketdata.quotes import LatestQuotes
from sherwood.contracts import RedisKeys
from sherwood.redis_client import RedisTimeouts, redis_from_url

D = Decimal


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    r = redis_from_url(redis_url, RedisTimeouts())
    yield r
    await r.aclose()


async def two_reads(r: Redis, prefix: str, symbol: str,
                    cache: ControlsCache | None = None) -> MarketAtRouting:
    """What the gateway read before: the halt check, then the latest quote."""
    halted = await is_halted_now(r, prefix, symbol, cache)
    return MarketAtRouting(halted, await LatestQuotes(r, prefix, max_age_s=float("inf")).get(symbol))


async def test_one_read_means_what_the_two_reads_meant(client: Redis, unique: str) -> None:
    prefix = f"t-{unique}"
    keys = RedisKeys(prefix)
    old_ns = time.time_ns() - 3_600 * 10**9
    await client.sadd(keys.halts, "HALT")
    await client.hset(keys.quotes_latest, mapping={
        "HALT": json.dumps({"S": "HALT", "bp": "10.00", "ap": "10.02"}),
        "AAPL": json.dumps({"S": "AAPL", "bp": "187.10", "ap": "187.12", "it": time.time_ns()}),
        # an hour old with a 5 s limit: stale for hold sizing, still the NBBO at routing
        "OLD": json.dumps({"S": "OLD", "bp": "5.00", "ap": "5.01", "it": old_ns, "mx": 5}),
        "BAD": "{not json",
        "halt": json.dumps({"S": "halt", "bp": "1.00", "ap": "1.01"}),
    })
    market = RoutingMarket(client, prefix)
    try:
        for symbol in ("HALT", "halt", "AAPL", "OLD", "BAD", "NONE"):
            assert await market.at_routing(symbol) == await two_reads(client, prefix, symbol), symbol
            assert await market.get(symbol) == (await two_reads(client, prefix, symbol)).quote
        halted = await market.at_routing("HALT")
        assert halted.halted and halted.quote is not None and halted.quote.ask == D("10.02")
        assert (await market.at_routing("halt")).halted  # halts are by upper-case symbol
        old = await market.at_routing("OLD")
        assert not old.halted and old.quote is not None and old.quote.bid == D("5.00")
        assert old.quote.age_ms(time.time_ns()) is not None
        assert await market.at_routing("BAD") == MarketAtRouting(False, None)
        assert await market.at_routing("NONE") == MarketAtRouting(False, None)
    finally:
        await client.delete(keys.halts, keys.quotes_latest)


async def test_redis_down_halts_from_the_cache_and_routes_without_an_nbbo(
        client: Redis, unique: str) -> None:
    prefix = f"t-{unique}"
    keys = RedisKeys(prefix)
    await client.sadd(keys.halts, "HALT")
    cache = ControlsCache(client, prefix)
    await cache.start()  # learns the halt
    await cache.stop()
    await client.delete(keys.halts)
    dead = redis_from_url("redis://127.0.0.1:1/0", RedisTimeouts())  # nothing listens there
    try:
        market = RoutingMarket(dead, prefix, fallback=cache)
        for symbol in ("HALT", "AAPL"):
            assert await market.at_routing(symbol) == await two_reads(dead, prefix, symbol, cache)
        assert await market.at_routing("HALT") == MarketAtRouting(True, None)
        assert await market.at_routing("AAPL") == MarketAtRouting(False, None)
        assert await RoutingMarket(dead, prefix).at_routing("HALT") == MarketAtRouting(False, None)
        assert await market.get("AAPL") is None
    finally:
        await dead.aclose()
