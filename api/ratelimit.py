"""Token buckets in Redis, shared by every API process (one Lua script: atomic, one round trip).

Over the limit -> 429 with Alpaca's error shape and a Retry-After header. If Redis is down the
limiter lets requests through (it protects capacity; the money checks are elsewhere) and logs.

Two ways to use a bucket: :meth:`RateLimiter.hit` takes a token per request (request rates);
:meth:`RateLimiter.guard` only looks (refuses when the bucket is empty) and
:meth:`RateLimiter.spend` takes a token without refusing, for limits on outcomes known only
afterwards (failed logins: guard before the directory lookup, spend when it fails).
:meth:`RateLimiter.hit_all` takes a token from several buckets in one round trip, in order, as
that many :meth:`RateLimiter.hit` calls would (an order: its API key's request rate and its
account's order rate); the buckets must live on one Redis node (no Redis Cluster slots).
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

# KEYS[i] bucket i; ARGV[4i-3..4i]: its rate per second, capacity, cost, need. A bucket allows
# when it holds ``need`` tokens; then ``cost`` are taken (never below 0). The buckets are taken
# in order up to the first that refuses (those before it keep their token, as separate calls
# would). Returns {allowed, wait_ms, index of the refusing bucket (0: none)}. The clock is
# Redis's own, so API processes (and requests queued in them) never disagree about "now".
_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local rate = tonumber(ARGV[4 * i - 3])
  local cap = tonumber(ARGV[4 * i - 2])
  local cost = tonumber(ARGV[4 * i - 1])
  local need = tonumber(ARGV[4 * i])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(b[1])
  local ts = tonumber(b[2])
  if tokens == nil then tokens = cap; ts = now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  local allowed = tokens >= need
  if allowed then tokens = math.max(0, tokens - cost) end
  redis.call('HSET', KEYS[i], 'tokens', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 1000)
  if not allowed then
    return {0, math.ceil((need - tokens) / rate * 1000), i}
  end
end
return {1, 0, 0}
"""


class RateLimiter:
    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_LUA) if redis is not None else None

    async def _take_all(self, buckets: list[tuple[str, float, float, int, int]],
                        ) -> tuple[int, int] | None:
        """Run the script over ``(bucket, per_second, capacity, cost, need)``s; (index of the
        bucket that refused, its wait in ms), None when all allowed (or Redis is down)."""
        if self._script is None or not buckets:
            return None
        keys = RedisKeys(self.prefix)
        try:
            allowed, wait_ms, index = await self._script(
                keys=[keys.ratelimit(b[0]) for b in buckets],
                args=[x for b in buckets for x in b[1:]])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return None
        return None if int(allowed) else (int(index) - 1, int(wait_ms))

    async def _take(self, bucket: str, per_second: float, capacity: float, cost: int,
                    need: int) -> int | None:
        """The wait in ms when ``bucket`` refuses, None when it allows (or Redis is down)."""
        refused = await self._take_all([(bucket, per_second, capacity, cost, need)])
        return None if refused is None else refused[1]

    async def hit_all(self, hits: list[tuple[str, float, float, str]]) -> None:
        """Take one token from each ``(bucket, per_second, capacity, what)`` in order, in one
        round trip, or raise the 429 ApiError of the first bucket that is empty."""
        refused = await self._take_all([(b, rate, cap, 1, 1) for b, rate, cap, _ in hits])
        if refused is not None:
            i, wait_ms = refused
            _refuse(wait_ms, "rate_limited", f"too many {hits[i][3]}", hits[i][0])

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
