"""Publishes a shard's outbox rows (trade updates) to Redis pub/sub, at least once.

Rows are claimed (locked with SKIP LOCKED and marked) by one statement, then published, in one
transaction: a Redis failure rolls the mark back and leaves them for the next round, and several
publishers can run side by side. Published in id order. Channel:
``<prefix>:trade_updates:<account_id>``. Consumers must tolerate a repeat.

When to look: :meth:`OutboxPublisher.wake` (the shard worker's order store calls it after each
commit, so an update goes out at once), and every ``idle_s`` anyway (rows written by another
process, or a failed round). It does not poll the table in a tight loop: idle shards cost nothing.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from db import sql
from db.engines import DB_ERRORS

log = logging.getLogger(__name__)
# what a round may run into and the next round retries
_RETRIED: tuple[type[Exception], ...] = (RedisError, OSError, *DB_ERRORS)


_CLAIM = """
UPDATE outbox SET published_at = clock_timestamp()
 WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :n
              FOR UPDATE SKIP LOCKED)
RETURNING id, key, payload::text AS payload
"""


def trade_updates_channel(prefix: str, account_id: str) -> str:
    return f"{prefix}:trade_updates:{account_id}"


class OutboxPublisher:
    def __init__(self, engine: AsyncEngine, redis: Redis, *, prefix: str = "sherwood",
                 idle_s: float = 1.0, batch: int = 200) -> None:
        self.engine = engine
        self.redis = redis
        self.prefix = prefix
        self.idle_s = idle_s
        self.batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New rows were committed: publish now (callable from any coroutine of this loop)."""
        self._wake.set()

    async def publish_once(self) -> int:
        async with self.engine.begin() as conn:
            # Claimed and marked in one statement; a failed publish rolls the mark back. The
            # payload as jsonb's own text: published as stored, never parsed and re-encoded.
            rows = await sql.rows(conn, _CLAIM, {"n": self.batch})
            if not rows:
                return 0
            pipe = self.redis.pipeline(transaction=False)
            for r in sorted(rows, key=lambda r: r["id"]):
                pipe.publish(trade_updates_channel(self.prefix, r["key"]), r["payload"])
            await pipe.execute()
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()  # before the round: a commit during it wakes the next one
            try:
                n = await self.publish_once()
            except _RETRIED as exc:
                log.warning("outbox publish failed, will retry: %s", exc)
                n = 0
            if n >= self.batch:
                continue  # a backlog: keep going
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=self.idle_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
