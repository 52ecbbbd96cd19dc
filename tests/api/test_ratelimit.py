"""Token buckets (api/ratelimit.py): several buckets in one round trip behave as that many
calls in order -- taken up to the first empty one, whose 429 is raised."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from api.errors import ApiError
from api.ratelimit import RateLimiter
from sherwood.contracts import RedisKeys


async def _tokens(redis: Redis, prefix: str, bucket: str) -> float:
    return float(await redis.hget(RedisKeys(prefix).ratelimit(bucket), "tokens"))  # type: ignore[arg-type]


async def test_hit_all_takes_each_bucket_in_order_up_to_the_first_empty(redis: Redis) -> None:
    prefix = f"rl-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(redis, prefix)
    slow = 1e-6  # tokens per second: nothing comes back within the test
    key, orders = ("key:k", slow, 10.0, "requests"), ("orders:a", slow, 1.0, "orders")

    await limiter.hit_all([key, orders])  # both have tokens
    assert round(await _tokens(redis, prefix, "key:k")) == 9
    assert round(await _tokens(redis, prefix, "orders:a")) == 0

    with pytest.raises(ApiError) as refused:  # the second bucket is empty
        await limiter.hit_all([key, orders])
    assert refused.value.status == 429 and "too many orders" in refused.value.message
    assert int((refused.value.headers or {})["Retry-After"]) >= 1
    # the first bucket's token was taken, as a separate call before the refusal would have
    assert round(await _tokens(redis, prefix, "key:k")) == 8

    empty = ("key:e", slow, 1.0, "requests")
    await limiter.hit_all([empty])
    with pytest.raises(ApiError) as first:  # the first bucket refuses: the second is not touched
        await limiter.hit_all([empty, ("orders:b", slow, 5.0, "orders")])
    assert "too many requests" in first.value.message
    assert await redis.exists(RedisKeys(prefix).ratelimit("orders:b")) == 0
