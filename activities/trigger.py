"""Broker-held triggers: the activity that watches a trailing stop's quotes until it fires.

``watch_trigger`` (a regular, heartbeating activity on the shard's ``shard-<n>-triggers`` task
queue, served by the shard worker process) follows the symbol's quotes from the read path --
the pub/sub channel ``RedisKeys.md_channel(symbol)``, and the latest-quote hash re-read every
``trigger_poll_s`` (which also catches up what a pub/sub reconnect lost) -- folds each into the
trigger (``domain.trigger.on_quote``), heartbeats the trigger (a retry after a worker crash
resumes from the last hwm it heartbeated, or the row's, whichever is better for the customer),
writes the hwm and stop to the order row when they move (at most once per
``trigger_write_interval_s``), and returns when the trigger fires, with the firing recorded on
the order (``domain.trailing.fired``). It never sends anything: the order workflow routes.

Quotes older than ``quote_max_age_s`` (ingest's ``it`` stamp), unreadable, crossed or missing
quotes, and every quote outside the regular session (``in_session``: a GTC trailing stop keeps
watching overnight but pre-market and after-hours prices neither move nor fire it, as at Alpaca)
are ignored. One Redis pub/sub connection per worker
process (:class:`QuoteFollower`) serves every watching activity.

Deliberately not here: cancel and expiry (the workflow cancels the activity), market hours
(the workflow waits for the open before it starts watching).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.orders import OrderStore
from domain import trailing
from domain.errors import DomainError
from domain.order_decision import Decision
from domain.order_row import OrderRow
from domain.trigger import TriggerSpec, on_quote
from marketdata.quotes import LatestQuotes, Quote, parse_quote
from sherwood.contracts import RedisKeys
from sherwood.faults import final_unless_transient

log = logging.getLogger(__name__)


@dataclass
class WatchTriggerInput:
    order_id: str
    spec: dict[str, str | None]  # TriggerSpec.to_wire(): where to start (a replace re-arms it)


@dataclass
class TriggerFired:
    """The trigger fired at this quote (decimals as strings; empty when a retried attempt
    found the firing recorded by the one before: its ``triggered`` audit event has them)."""

    spec: dict[str, str | None]
    bid: str
    ask: str


class QuoteFollower:
    """One pub/sub connection of a worker process, shared by every watching activity: a symbol
    is SUBSCRIBEd while someone watches it; each quote message goes to every watcher's queue.
    A Redis failure reconnects with backoff and resubscribes (watchers poll the latest-quote
    hash meanwhile)."""

    def __init__(self, redis: Redis, prefix: str, *, max_age_s: float) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self.max_age_s = max_age_s
        self._watchers: dict[str, set[asyncio.Queue[Quote]]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def watch(self, symbol: str) -> AsyncIterator[asyncio.Queue[Quote]]:
        """The quotes of ``symbol`` published while inside the block (subscribed on entry:
        a quote published after the entry is delivered)."""
        queue: asyncio.Queue[Quote] = asyncio.Queue(maxsize=1000)
        async with self._lock:
            first = symbol not in self._watchers
            self._watchers.setdefault(symbol, set()).add(queue)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._read(), name="trigger-quotes")
            if first and self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):  # the reader resubscribes
                    await self._pubsub.subscribe(self.keys.md_channel(symbol))
        try:
            yield queue
        finally:
            async with self._lock:
                group = self._watchers.get(symbol, set())
                group.discard(queue)
                if not group:
                    self._watchers.pop(symbol, None)
                    if self._pubsub is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await self._pubsub.unsubscribe(self.keys.md_channel(symbol))

    async def _read(self) -> None:
        backoff = 0.1
        prefix = self.keys.md_channel_prefix
        while True:
            try:
                async with self._lock:
                    self._pubsub = self.redis.pubsub()
                    channels = [self.keys.md_channel(s) for s in self._watchers]
                    if channels:
                        await self._pubsub.subscribe(*channels)
                backoff = 0.1
                while True:
                    msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    chan = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    self._deliver(chan.removeprefix(prefix), msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: reconnect, resubscribe; watchers poll meanwhile
                log.warning("trigger quotes: pub/sub failed (%s); reconnecting", exc)
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                    self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _deliver(self, symbol: str, raw: bytes | str) -> None:
        watchers = self._watchers.get(symbol)
        if not watchers:
            return
        try:
            if json.loads(raw).get("T") != "q":
                return  # trades, bars, statuses
        except (ValueError, AttributeError):
            return
        quote = parse_quote(symbol, raw, self.max_age_s)  # None: stale or unreadable
        if quote is None:
            return
        for q in watchers:
            if q.full():  # a watcher far behind keeps the newest quotes
                q.get_nowait()
            q.put_nowait(quote)


class TriggerActivities:
    def __init__(self, store: OrderStore, follower: QuoteFollower, quotes: LatestQuotes, *,
                 poll_s: float, write_interval_s: float,
                 in_session: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.follower = follower
        self.quotes = quotes
        self.poll_s = poll_s
        self.write_interval_s = write_interval_s
        self.in_session = in_session
        self.clock = clock

    @activity.defn(name="watch_trigger")
    @final_unless_transient
    async def watch_trigger(self, inp: WatchTriggerInput) -> TriggerFired | None:
        """Follow the quotes until the trigger fires (see the module docstring). ``None``: the
        order no longer waits (canceled or expired while this ran)."""
        try:
            row = await self.store.row(inp.order_id)
        except DomainError as exc:
            raise ApplicationError(exc.message, type=exc.code, non_retryable=True) from exc
        if not trailing.waiting(row):
            return None
        spec = _resume(TriggerSpec.from_wire(inp.spec), activity.info().heartbeat_details,
                       row.hwm)
        if activity.info().attempt > 1 and await self._fired_before(inp.order_id):
            # an attempt that recorded the firing died before it could answer: the firing stands
            return TriggerFired(spec.to_wire(), bid="", ask="")
        activity.heartbeat(spec.to_wire())
        # what the row shows (a resumed or re-armed watch may know better: written at once)
        written: TriggerSpec | None = spec if (row.hwm, row.stop_price) == (
            spec.hwm, spec.stop) else None
        last_write = float("-inf")
        async with self.follower.watch(spec.symbol) as live:
            quote: Quote | None = await self.quotes.get(spec.symbol)  # fresh or None
            while True:
                if quote is not None and not self.in_session():
                    quote = None  # outside the regular session: neither moves nor fires
                if quote is not None:
                    before = spec
                    spec, fired = on_quote(spec, quote.bid, quote.ask)
                    if spec != before:
                        activity.heartbeat(spec.to_wire())
                    if fired:
                        return await self._fire(inp.order_id, spec, quote)
                    if spec != written and self.clock() - last_write >= self.write_interval_s:
                        row = await self._follow(inp.order_id, spec)
                        if not trailing.waiting(row):
                            return None
                        written, last_write = spec, self.clock()
                try:
                    quote = await asyncio.wait_for(live.get(), timeout=self.poll_s)
                except TimeoutError:
                    # nothing published: the latest quote (a pub/sub message may have been lost),
                    # and a write the rate limit held back
                    activity.heartbeat(spec.to_wire())
                    quote = await self.quotes.get(spec.symbol)
                    if quote is None and spec != written:  # (a rate-limited write, or the row's)
                        await self._follow(inp.order_id, spec)
                        written, last_write = spec, self.clock()

    async def _follow(self, order_id: str, spec: TriggerSpec) -> OrderRow:
        def decide(order: OrderRow, _events: frozenset[str], now: datetime) -> Decision:
            return trailing.follow(order, spec, now)

        return await self.store.decide_with(order_id, decide)

    async def _fired_before(self, order_id: str) -> bool:
        seen: list[frozenset[str]] = []

        def decide(order: OrderRow, events: frozenset[str], now: datetime) -> Decision:
            seen.append(events)
            return Decision.nothing(order)

        await self.store.decide_with(order_id, decide)
        return trailing.TRIGGERED in seen[-1]

    async def _fire(self, order_id: str, spec: TriggerSpec, quote: Quote) -> TriggerFired:
        def decide(order: OrderRow, events: frozenset[str], now: datetime) -> Decision:
            return trailing.fired(order, spec, quote.bid, quote.ask, now, events=events)

        await self.store.decide_with(order_id, decide)
        activity.logger.info("trigger of %s fired at bid %s ask %s (hwm %s, stop %s)", order_id,
                             quote.bid, quote.ask, spec.hwm, spec.stop)
        return TriggerFired(spec.to_wire(), str(quote.bid), str(quote.ask))

    def all(self) -> list[Callable[..., Any]]:
        return [self.watch_trigger]


def _resume(start: TriggerSpec, details: Any, row_hwm: Decimal | None) -> TriggerSpec:
    """Where a (retried) watch starts: the best hwm of the workflow's spec, the last heartbeat
    (``details``: the previous attempt's) and the row's -- a retry never forgets a price the
    trigger has seen."""
    spec = start
    if details:
        with contextlib.suppress(Exception):
            beat = TriggerSpec.from_wire(details[0])
            if (beat.kind, beat.value) == (start.kind, start.value):  # not a re-armed trail
                spec = _better(spec, beat.hwm)
    return _better(spec, None if row_hwm is None else row_hwm.normalize())


def _better(spec: TriggerSpec, hwm: Decimal | None) -> TriggerSpec:
    if hwm is None:
        return spec
    if spec.hwm is None:
        return TriggerSpec(spec.symbol, spec.side, spec.kind, spec.value, hwm)
    best = max(spec.hwm, hwm) if spec.side == "sell" else min(spec.hwm, hwm)
    return TriggerSpec(spec.symbol, spec.side, spec.kind, spec.value, best)
