"""Static reference quotes for a stack without an exchange feed: one bid/ask per listed symbol,
around the seeded universe's reference price, written only where no quote exists yet.

It lets `sherwood dev` size market-order holds (and the market makers fill at the same price)
right after start; a real feed overwrites these with live quotes.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from domain.assets import ASSETS
from marketdata.quotes import LatestQuotes
from sherwood.redis_client import RedisTimeouts, redis_from_url


def spread_around(ref: Decimal) -> tuple[Decimal, Decimal]:
    tick = Decimal("0.01") if ref >= 1 else Decimal("0.0001")
    mid = ref.quantize(tick, rounding=ROUND_HALF_UP)
    return mid - tick, mid + tick


async def seed_reference_quotes(redis_url: str, prefix: str) -> int:
    """Write a quote for every asset that has none. Returns how many were written."""
    redis = redis_from_url(redis_url, RedisTimeouts())
    try:
        quotes = LatestQuotes(redis, prefix)
        existing = await quotes.get_many([a.symbol for a in ASSETS])
        written = 0
        for asset in ASSETS:
            if asset.symbol not in existing:
                bid, ask = spread_around(asset.ref_price)
                await quotes.put(asset.symbol, bid, ask)
                written += 1
        return written
    finally:
        await redis.aclose()
