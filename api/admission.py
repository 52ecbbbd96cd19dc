"""Admission control for order writes: at most ``order_admission_per_shard`` orders of one shard
in transit at once, across every API process; past it POST /v2/orders waits at most
``order_admission_wait_s`` for a slot, then is refused (429 ``over_capacity`` with Retry-After)
instead of queueing in Temporal.

**Counted** from admission, before the order's workflow is started (so before any hold is
taken), until both the API has answered and the order is out of transit (``domain.admission``:
it rests at a venue, is held at the broker, waits for the open or its trigger, or ends). A market
order's work is nearly all there: the accept, the route, the gateway, the fill, the answer.
Counting only until the answer (as this did first) let accepted orders pile up behind the
answered ones; counting only while in transit (as it did next) let a market order filled in its
accept free its slot before its accept had finished and been answered.

The count is a sorted set per shard in Redis (``RedisKeys.admission``): order id -> when the slot
lapses, with two holds per slot (sherwood/admission_slots.py: the API's and the shard's). One
Lua script (one round trip, atomic, Redis's clock) drops lapsed slots, refuses at the limit,
else adds the order. The slot is freed:

- by the API's answer when it leaves nothing in transit (a refusal, a rejection, an order that
  rests, waits or ended: ``domain.admission.keeps_slot``): the whole slot;
- else by the API's answer letting its hold go, and the shard's worker letting its own go when a
  committed transition takes the order out of transit (``domain.admission.leaves_transit``; the
  outbox publisher runs the script in its pipeline of trade updates: no round trip of its own):
  whichever comes last frees the slot;
- by Redis's clock after ``order_admission_hold_max_s`` whatever happens: a crashed API or
  worker, a lost release or a slow venue cannot leak slots for longer.

**The short wait.** Refusing at once left slots idle: a refused client sleeps its Retry-After (a
whole second) while the shard frees several slots, so under overload throughput fell below what
the shard does at its limit. A request finding its shard full waits in its API process (FIFO per
shard) for a slot, at most ``order_admission_wait_s``, nothing written meanwhile. Every freeing
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
from sherwood.admission_slots import LET_GO, TAKE, let_go_keys
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

OVER_CAPACITY = "over_capacity"

# a waiting request tries again at least this often, woken or not (a lapsed slot, a lost message)
_POLL_S = 0.1

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
        self._script = redis.register_script(TAKE) if redis is not None else None
        self._let_go = redis.register_script(LET_GO) if redis is not None else None
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
        backoff = 1.0
        me = asyncio.current_task()

        def going_on() -> bool:
            # a cancel must end the loop even when redis-py's get_message swallows it (seen
            # here: the API's shutdown then waited on this loop for ever, and was killed)
            return (stop is None or not stop.is_set()) and not (me is not None and me.cancelling())

        while going_on():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.admission_freed_pattern())
                self.listening.set()
                backoff = 1.0
                while going_on():
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
                log.warning("admission wake-ups unavailable (Redis), waiters poll; again in "
                            "%.0fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
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
            if slot.owned:  # the API's hold goes; a slot not kept goes whole
                await self._let_go_of(shard, order_id, "hold" if slot.kept else "drop")

    async def _take(self, shard: int, order_id: str) -> Slot:
        if self.per_shard is None or self._script is None:
            return Slot(owned=False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.wait_s
        waited = False
        while True:
            try:
                got = int(await self._script(keys=[self.keys.admission(shard),
                                                   self.keys.admission_holds(shard)],
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

    async def _let_go_of(self, shard: int, order_id: str, mode: str) -> None:
        assert self._let_go is not None
        try:
            await self._let_go(keys=let_go_keys(self.keys, shard), args=[mode, order_id])
        except (RedisError, OSError) as exc:  # the slot lapses on its own
            log.warning("admission slot of %s not given back (Redis): %s", order_id, exc)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
