"""Token buckets in Redis, shared by every API process (one Lua script: atomic, one round trip).

Over the limit -> 429 with Alpaca's error shape and a Retry-After header. If Redis is down the
limiter lets requests through (it protects capacity; the money checks are elsewhere) and logs.

Two ways to use a bucket: :meth:`RateLimiter.hit` takes a token per request (request rates);
:meth:`RateLimiter.guard` only looks (refuses when the bucket is empty) and
:meth:`RateLimiter.spend` takes a token without refusing, for limits on outcomes known only
afterwards (failed logins: guard before the directory lookup, spend when it fails).
"""

from __future__ import annotations

import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ApiError
from sherwood import metrics
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV: rate per second, capacity, cost, need (default: cost). Allowed when the
# bucket holds ``need`` tokens; then ``cost`` are taken (never below 0). Returns {allowed, wait_ms}.
# The clock is Redis's own, so API processes (and requests queued in them) never disagree about
# "now".
_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local need = tonumber(ARGV[4] or ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = cap; ts = now end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= need then
  tokens = math.max(0, tokens - cost)
  allowed = 1
else
  wait = math.ceil((need - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
return {allowed, wait}
"""


class RateLimiter:
    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_LUA) if redis is not None else None

    async def _take(self, bucket: str, per_second: float, capacity: float, cost: int,
                    need: int) -> int | None:
        """Run the script; the wait in ms when refused, None when allowed (or Redis is down)."""
        if self._script is None:
            return None
        try:
            allowed, wait_ms = await self._script(
                keys=[RedisKeys(self.prefix).ratelimit(bucket)],
                args=[per_second, capacity, cost, need])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return None
        return None if int(allowed) else int(wait_ms)

    async def hit(self, bucket: str, *, per_second: float, capacity: float, what: str) -> None:
        """Take one token from ``bucket`` or raise a 429 ApiError."""
        wait_ms = await self._take(bucket, per_second, capacity, 1, 1)
        if wait_ms is not None:
            _refuse(wait_ms, "rate_limited", f"too many {what}", bucket)

    async def guard(self, bucket: str, *, per_second: float, capacity: float, what: str,
                    reason: str = "rate_limited") -> None:
        """Raise a 429 ApiError (``reason``) if ``bucket`` is empty; take nothing."""
        wait_ms = await self._take(bucket, per_second, capacity, 0, 1)
        if wait_ms is not None:
            _refuse(wait_ms, reason, f"too many {what}", bucket)

    async def spend(self, bucket: str, *, per_second: float, capacity: float) -> None:
        """Take one token from ``bucket`` (down to empty); never raises."""
        await self._take(bucket, per_second, capacity, 1, 0)


def _refuse(wait_ms: int, reason: str, message: str, bucket: str) -> None:
    # the limit's name is the bucket's kind (before the first ':'), never its key
    metrics.RATE_LIMIT_REFUSALS.labels(limit=metrics.label(bucket.split(":", 1)[0].replace("-", "_"))).inc()
    retry = max(1, math.ceil(wait_ms / 1000))
    raise ApiError(429, reason, f"{message}; retry in {retry}s", code=42910000,
                   headers={"Retry-After": str(retry)})
