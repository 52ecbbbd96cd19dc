"""Publishes a shard's outbox rows (trade updates) to Redis pub/sub, at least once.

Two paths, one table:

* **As they commit** (:meth:`OutboxPublisher.committed`): the shard worker's order store hands
  over the rows its transaction just wrote (id, key, payload as stored); they are published at
  once, in commit order. Their marks are batched: one autocommit statement marks every row
  published in the last ``mark_delay_s`` (well inside the sweep's grace), or ``batch`` of them,
  whichever comes first, and whatever is left when the publisher stops. No claim transaction
  per commit (that was three round trips per order step), and no mark statement per commit
  either (two per order). A crash before the mark leaves rows published but unmarked: the sweep
  publishes them again, which consumers tolerate.
* **The sweep**, every ``idle_s``: rows still unmarked after ``grace_s`` (a crash between publish
  and mark, a Redis failure, rows written by another process) are claimed (locked with SKIP
  LOCKED and marked) by one statement and published in the same transaction, in id order: a
  Redis failure rolls the mark back and leaves them for the next round, and several publishers
  can run side by side. The grace keeps the sweep off rows the first path is about to mark.

The rows handed over wait in memory, at most ``max_queue`` of them (``outbox_queue_max``): the
order path never waits for the publisher, and a publisher stuck on a slow or dead Redis does not
grow without bound. Past the bound, and after any failed round, the publisher **catches up from
the table**: what is queued is dropped (counted in ``dropped``, logged), rows handed over meanwhile
are not queued, and the next round claims every unmarked row regardless of age, in id order,
until none is left; then the at-commit path resumes. Nothing is lost (the row is the truth) and
rows keep their commit order; a row both queued and claimed goes out twice, which consumers
already tolerate.

**Admission slots** (api/admission.py): for the order ids a commit took out of transit
(:meth:`OutboxPublisher.release`), the shard lets go of its hold on their admission slots in the
same pipeline as the next at-commit round (one script, sherwood/admission_slots.py, no round trip
of its own); slots freed are announced on the shard's ``admission_freed`` channel for the API's
requests waiting for one. Best effort:
ids queued when a round fails, or while catching up, are dropped; their slots lapse on Redis's
clock.

Channel: ``<prefix>:trade_updates:<account_id>``. Consumers must tolerate a repeat (a crash
after publishing, before marking). It does not poll the table in a tight loop: idle shards cost
one statement per ``idle_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from db import sql
from db.engines import DB_ERRORS
from db.sql import Row
from sherwood import metrics
from sherwood.admission_slots import LET_GO
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)
# what a round may run into and the next round retries
_RETRIED: tuple[type[Exception], ...] = (RedisError, OSError, *DB_ERRORS)


_CLAIM = """
UPDATE outbox SET published_at = clock_timestamp()
 WHERE id IN (SELECT id FROM outbox
               WHERE published_at IS NULL AND created_at <= clock_timestamp() - make_interval(secs => :age)
               ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED)
RETURNING id, key, payload::text AS payload
"""
_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(:ids) AND published_at IS NULL"


class OutboxPublisher:
    """``mark_engine``: an autocommit engine on the same database for the marks of committed
    rows (one statement each round); without one they take a transaction of their own."""

    def __init__(self, engine: AsyncEngine, redis: Redis, *, prefix: str = "sherwood",
                 idle_s: float = 1.0, batch: int = 200, grace_s: float = 5.0,
                 mark_engine: AsyncEngine | None = None, max_queue: int = 10_000,
                 retry_s: float = 1.0, mark_delay_s: float = 0.5,
                 admission_keys: list[str] | None = None) -> None:
        self.engine = engine
        self.mark_engine = mark_engine or engine
        self.redis = redis
        self.prefix = prefix
        self.idle_s = idle_s
        self.batch = batch
        self.grace_s = grace_s
        self.max_queue = max_queue
        self.retry_s = retry_s  # after a failed round, the catch-up is tried again this soon
        self._wake = asyncio.Event()
        self._fresh: list[Row] = []
        self.overflowed = False  # catching up from the table: handed-over rows are not queued
        self.dropped = 0  # rows handed over but left to the table (they are published from it)
        self._fresh_since = 0.0  # when the oldest queued row was handed over (the lag metric)
        # published at commit, not marked yet; marked at the latest this long after the first
        # (kept well inside the sweep's grace, so that the sweep leaves them alone)
        self.mark_delay_s = max(0.0, min(mark_delay_s, grace_s / 4))
        self._unmarked: list[int] = []
        self._unmarked_since = 0.0
        # the shard's admission keys (sherwood.admission_slots.let_go_keys) and the order ids
        # whose hold on their slot to let go
        self.admission_keys = admission_keys
        self._let_go = redis.register_script(LET_GO)
        self._releases: list[str] = []

    @property
    def queued(self) -> int:
        """Rows handed over and waiting in memory (at most ``max_queue``)."""
        return len(self._fresh)

    def committed(self, rows: list[Row]) -> None:
        """Rows a transaction of this process just committed: publish them now (callable from
        any coroutine of this loop). Never blocks; past ``max_queue`` they are left to the table."""
        if not rows:
            return
        if self.overflowed:  # the catch-up publishes them; no wake: a dead Redis is not spun on
            self.dropped += len(rows)
            return
        if len(self._fresh) + len(rows) > self.max_queue:
            log.warning("outbox queue full (%d rows): catching up from the table", len(self._fresh))
            self._catch_up()
            self.dropped += len(rows)
        else:
            if not self._fresh:
                self._fresh_since = time.monotonic()
            self._fresh.extend(rows)
        self._wake.set()

    def release(self, order_ids: list[str]) -> None:
        """Orders a transaction of this process took out of transit: their admission slots go
        back with the next round (never blocks; dropped while catching up, bounded by
        ``max_queue``)."""
        if self.admission_keys is None or self.overflowed or len(self._releases) >= self.max_queue:
            return
        self._releases.extend(order_ids)
        self._wake.set()

    def _catch_up(self) -> None:
        """Drop what is queued; the next round publishes every unmarked row from the table."""
        self.dropped += len(self._fresh)
        self._fresh = []
        self._releases = []  # their slots lapse on Redis's clock
        self.overflowed = True

    def _pipeline_of(self, rows: list[Row]) -> Any:
        pipe = self.redis.pipeline(transaction=False)
        for r in rows:
            pipe.publish(RedisKeys(self.prefix).trade_updates(r["key"]), r["payload"])
        return pipe

    async def publish_committed(self, *, mark: bool = True) -> int:
        """Publish the rows handed over by :meth:`committed`; then mark every row published so
        far (``mark=False``: only once :meth:`mark_due`). On a failure they stay unmarked in the
        table, for the sweep."""
        rows, self._fresh = self._fresh, []
        releases, self._releases = self._releases, []
        if rows or releases:  # one pipeline: the trade updates, then the slots they free
            pipe = self._pipeline_of(rows)
            if releases:  # the shard's holds on their slots go (and freed ones are announced)
                await self._let_go(keys=self.admission_keys, args=["hold", *releases], client=pipe)
            await pipe.execute()
        if rows:
            since = self._fresh_since
            metrics.OUTBOX_LAG.observe(time.monotonic() - since)  # the oldest row's wait
            metrics.OUTBOX_PUBLISHED.inc(len(rows))
            if not self._unmarked:
                self._unmarked_since = time.monotonic()
            self._unmarked.extend(r["id"] for r in rows)
        if mark or self.mark_due():
            await self.mark_published()
        return len(rows)

    def mark_due(self) -> bool:
        """Whether the rows published at commit are to be marked now (the oldest has waited
        ``mark_delay_s``, or there are ``batch`` of them)."""
        return bool(self._unmarked) and (
            len(self._unmarked) >= self.batch
            or time.monotonic() - self._unmarked_since >= self.mark_delay_s)

    async def mark_published(self) -> None:
        """Mark every row published at commit so far, in one statement."""
        ids, self._unmarked = self._unmarked, []
        if ids:
            async with self.mark_engine.begin() as conn:
                await sql.execute(conn, _MARK, {"ids": ids})

    async def publish_once(self, min_age_s: float = 0.0) -> int:
        """Claim, publish and mark up to ``batch`` unmarked rows at least ``min_age_s`` old."""
        async with self.engine.begin() as conn:
            # Claimed and marked in one statement; a failed publish rolls the mark back. The
            # payload as jsonb's own text: published as stored, never parsed and re-encoded.
            rows = await sql.rows(conn, _CLAIM, {"n": self.batch, "age": min_age_s})
            if not rows:
                return 0
            await self._pipeline_of(sorted(rows, key=lambda r: r["id"])).execute()
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        sweep_at = loop.time()  # at once: what a previous process left
        while not stop.is_set():
            self._wake.clear()  # before the round: a commit during it wakes the next one
            backlog = False
            try:
                if self.overflowed:
                    await self.mark_published()  # published already: not claimed again
                    # Handed-over rows are queued again from now: the claim below sees every row
                    # committed before it (a row both claimed and queued goes out twice).
                    self.overflowed = False
                    backlog = await self.publish_once(0.0) >= self.batch
                    if backlog:  # more in the table: keep catching up before anything queued
                        self._catch_up()
                    sweep_at = loop.time() + (0 if backlog else self.idle_s)
                else:
                    await self.publish_committed(mark=False)
                    if loop.time() >= sweep_at:
                        backlog = await self.publish_once(self.grace_s) >= self.batch
                        sweep_at = loop.time() + (0 if backlog else self.idle_s)
            except _RETRIED as exc:
                log.warning("outbox publish failed, will retry from the table: %s", exc)
                self._catch_up()  # later rows must not overtake the ones left unmarked
                sweep_at = loop.time() + min(self.idle_s, self.retry_s)
            if backlog:
                continue
            wake_at = sweep_at
            if self._unmarked:  # the marks' deadline
                wake_at = min(wake_at, loop.time() + self.mark_delay_s
                              - (time.monotonic() - self._unmarked_since))
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, wake_at - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        try:  # what was published at commit is marked before the publisher goes
            await self.mark_published()
        except _RETRIED as exc:
            log.warning("outbox: marking published rows at stop failed (the sweep publishes "
                        "them again): %s", exc)
