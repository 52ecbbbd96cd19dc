"""Admission control for order writes: at most ``order_admission_per_shard`` orders of one shard
in transit at once, across every API process; past it POST /v2/orders waits at most
``order_admission_wait_s`` for a slot, then is refused (429 ``over_capacity`` with Retry-After)
instead of queueing in Temporal.

**In transit** (``domain.admission``): from admission, before the order's workflow is started (so
before any hold is taken), until the order rests at a venue, is held at the broker, waits for the
open or its trigger, or ends. A market order's work is nearly all there: the accept, the route,
the gateway, the fill. Counting only until the API's answer (as this did first) let the accepted
orders pile up behind the answered ones: under overload throughput fell and latency grew.

The count is a sorted set per shard in Redis (``RedisKeys.admission``): order id -> when the slot
lapses. One Lua script (one round trip, atomic, Redis's clock) drops lapsed slots, refuses at the
limit, else adds the order. The slot is given back:

- by the API at once when the answer leaves nothing in transit (a refusal, a rejection, an order
  that rests, waits or ended: ``domain.admission.keeps_slot``);
- by the shard's worker when a committed transition takes the order out of transit
  (``domain.admission.leaves_transit``; the outbox publisher sends the ZREM with the trade
  updates: no round trip of its own);
- by Redis's clock after ``order_admission_hold_max_s`` whatever happens: a crashed API or
  worker, a lost release or a slow venue cannot leak slots for longer.

**The short wait.** Refusing at once left slots idle: a refused client sleeps its Retry-After (a
whole second) while the shard frees several slots, so under overload throughput fell below what
the shard does at its limit. A request finding its shard full waits in its API process (FIFO per
shard) for a slot, at most ``order_admission_wait_s``, nothing written meanwhile. Every give-back
PUBLISHes how many slots it freed on the shard's ``admission_freed`` channel; one subscription per
API process (:meth:`Admission.run`) wakes that many waiters, which try the script again. A waiter
also tries again every ``poll_s`` (0.1 s) by itself: a slot that lapsed, a message lost while the
subscription reconnects. The wait bounds the latency it adds; past it the answer is the same 429.

The same order posted again (its client_order_id) is counted once: its id is the member. If
Redis is down, orders are admitted (like the rate limiter: this protects capacity; the money
checks are elsewhere) and the failure is logged. With no Redis (``redis=None``) the limit is
off. It bounds the work in transit, not its rate (``api/ratelimit.py`` does that); it does not
limit reads, cancels or replaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ApiError
from sherwood import metrics
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

OVER_CAPACITY = "over_capacity"

# a waiting request tries again at least this often, woken or not (a lapsed slot, a lost message)
_POLL_S = 0.1

# KEYS[1] the shard's set; ARGV: limit, hold (ms), order id. Returns 1 admitted (added), 2
# admitted (already counted: the same order again; its slot is renewed), 0 refused.
_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local again = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not again and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
redis.call('PEXPIRE', KEYS[1], hold + 1000)
if again then return 2 end
return 1
"""


class Slot:
    """One admitted order's slot: given back when the block ends unless :meth:`keep` was called
    (the order goes on in transit; its shard gives it back)."""

    def __init__(self, owned: bool) -> None:
        self.owned = owned  # this request added the order (not a repeat of one already counted)
        self.kept = False

    def keep(self) -> None:
        self.kept = True


class Admission:
    """Orders in transit per shard, with a limit (``None`` or 0, or no Redis: no limit)."""

    def __init__(self, per_shard: int | None, retry_after_s: int = 1, *,
                 redis: Redis | None = None, prefix: str = "sherwood",
                 hold_max_s: float = 30.0, wait_s: float = 0.0, poll_s: float = _POLL_S) -> None:
        self.per_shard = per_shard or None
        self.wait_s = max(0.0, wait_s)
        self.poll_s = poll_s
        self.retry_after_s = max(1, retry_after_s)
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self.hold_ms = max(1, round(hold_max_s * 1000))
        self._script = redis.register_script(_LUA) if redis is not None else None
        self.refused = 0  # since start (also sherwood_order_admission_refusals_total)
        self.waited = 0  # requests admitted after waiting for a slot, since start
        self._waiters: dict[int, deque[asyncio.Future[None]]] = {}
        self.listening = asyncio.Event()  # run()'s subscription is in place

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Wake this process's waiting requests when their shard frees slots, until cancelled or
        ``stop``: one pattern subscription to every shard's ``admission_freed`` channel, made
        again after a Redis failure (meanwhile waiters fall back on polling). Returns at once
        when nothing ever waits (no limit, no wait, no Redis)."""
        if not self.on or self.wait_s <= 0 or self.redis is None:
            return
        prefix = self.keys.admission_freed_pattern()[:-1]  # '<prefix>:admission_freed:'
        while stop is None or not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.admission_freed_pattern())
                self.listening.set()
                while stop is None or not stop.is_set():
                    m = await pubsub.get_message(timeout=1.0)
                    if m is None or m.get("type") != "pmessage":
                        continue
                    try:
                        shard = int(_text(m["channel"]).removeprefix(prefix))
                        freed = int(_text(m["data"]))
                    except ValueError:
                        continue
                    self._wake(shard, freed)
            except (RedisError, OSError) as exc:
                log.warning("admission wake-ups unavailable (Redis), waiters poll: %s", exc)
                await asyncio.sleep(1.0)
            finally:
                self.listening.clear()
                await pubsub.aclose()

    def _wake(self, shard: int, freed: int) -> None:
        """Wake up to ``freed`` of ``shard``'s waiters, the longest-waiting first."""
        waiters = self._waiters.get(shard)
        while waiters and freed > 0:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                freed -= 1

    @property
    def on(self) -> bool:
        return self.per_shard is not None and self._script is not None

    async def in_transit(self, shard: int) -> int:
        """Orders of ``shard`` counted now, lapsed slots included until the next admission."""
        if self.redis is None:
            return 0
        return int(await self.redis.zcard(self.keys.admission(shard)))

    @asynccontextmanager
    async def admit(self, shard: int, order_id: str) -> AsyncIterator[Slot]:
        """Count ``order_id`` against ``shard`` for the block, or raise a 429 ApiError at once.
        The slot is given back when the block ends, unless the block called ``keep()`` on it or
        ended with an error that may leave the order in transit (a 5xx, a timeout, the client
        gone): then the shard or the clock gives it back."""
        slot = await self._take(shard, order_id)
        try:
            yield slot
        except ApiError as exc:
            if exc.status >= 500:  # 504 order_pending and the like: the order may go on
                slot.kept = True
            raise
        except BaseException:  # cancelled (the client went away), an unexpected error
            slot.kept = True
            raise
        finally:
            if slot.owned and not slot.kept:
                await self._give_back(shard, order_id)

    async def _take(self, shard: int, order_id: str) -> Slot:
        if self.per_shard is None or self._script is None:
            return Slot(owned=False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.wait_s
        waited = False
        while True:
            try:
                got = int(await self._script(keys=[self.keys.admission(shard)],
                                             args=[self.per_shard, self.hold_ms, order_id]))
            except (RedisError, OSError) as exc:
                log.warning("admission control unavailable (Redis): admitting: %s", exc)
                return Slot(owned=False)
            left = deadline - loop.time()
            if got != 0 or left <= 0:
                break
            waited = True
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(shard, deque())
            waiters.append(fut)
            try:
                await asyncio.wait((fut,), timeout=min(left, self.poll_s))
            finally:
                if not fut.done():  # not woken (a woken one has left the queue)
                    fut.cancel()
                    waiters.remove(fut)
        if got == 0:
            self.refused += 1
            metrics.ADMISSION_REFUSALS.labels(shard=str(shard)).inc()
            raise ApiError(429, OVER_CAPACITY,
                           f"too many orders in transit on this account's shard; retry in "
                           f"{self.retry_after_s}s", code=42910000,
                           headers={"Retry-After": str(self.retry_after_s)})
        if waited:
            self.waited += 1
        metrics.ADMISSION_WAIT.observe(loop.time() - started)
        return Slot(owned=got == 1)

    async def _give_back(self, shard: int, order_id: str) -> None:
        assert self.redis is not None
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.admission(shard), order_id)
            if self.wait_s > 0:  # this process's waiters and every other's
                pipe.publish(self.keys.admission_freed(shard), "1")
            await pipe.execute()
        except (RedisError, OSError) as exc:  # the slot lapses on its own
            log.warning("admission slot of %s not given back (Redis): %s", order_id, exc)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
