"""Degraded mode: an ingested quote older than quote_max_age_s is no quote for hold sizing (the
write path then rejects market orders with ``no_quote`` and keeps accepting limit orders)."""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis

from marketdata.quotes import LatestQuotes
from sherwood.contracts import RedisKeys


async def test_stale_ingested_quote_counts_as_no_quote(redis: Redis, prefix: str) -> None:
    key = RedisKeys(prefix).quotes_latest
    fresh = {"S": "AAPL", "bp": 187.1, "ap": 187.12, "it": time.time_ns(), "mx": 30}
    stale = {"S": "MSFT", "bp": 415.1, "ap": 415.2, "it": time.time_ns() - 31 * 10**9, "mx": 30}
    await redis.hset(key, mapping={"AAPL": json.dumps(fresh), "MSFT": json.dumps(stale),
                                   "TSLA": json.dumps({"S": "TSLA", "bp": "1", "ap": "2"})})
    quotes = LatestQuotes(redis, prefix)
    assert (await quotes.get("AAPL")) is not None
    assert (await quotes.get("MSFT")) is None  # the feed stopped: no quote for holds
    assert (await quotes.get("TSLA")) is not None  # reference quotes never expire
    assert (await LatestQuotes(redis, prefix, max_age_s=100).get("MSFT")) is not None
    assert set(await quotes.get_many(["AAPL", "MSFT"])) == {"AAPL", "MSFT"}  # valuation: last price
    assert (await LatestQuotes(None, prefix).get("AAPL")) is None  # no Redis at all

