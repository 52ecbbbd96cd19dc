"""Token buckets in Redis, shared by every API process (one Lua script: atomic, one round trip).

Over the limit -> 429 with Alpaca's error shape and a Retry-After header. If Redis is down the
limiter lets requests through (it protects capacity; the money checks are elsewhere) and logs.
"""

from __future__ import annotations

import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ApiError
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV: rate per second, capacity, cost. Returns {allowed, wait_ms}. The clock is
# Redis's own, so API processes (and requests queued in them) never disagree about "now".
_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = cap; ts = now end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate * 1000)
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

    async def hit(self, bucket: str, *, per_second: float, capacity: float, what: str) -> None:
        """Take one token from ``bucket`` or raise a 429 ApiError."""
        if self._script is None:
            return
        try:
            allowed, wait_ms = await self._script(
                keys=[RedisKeys(self.prefix).ratelimit(bucket)],
                args=[per_second, capacity, 1])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return
        if not int(allowed):
            retry = max(1, math.ceil(int(wait_ms) / 1000))
            raise ApiError(429, "rate_limited", f"too many {what}; retry in {retry}s", code=42910000,
                           headers={"Retry-After": str(retry)})
