"""Ingest's Redis link: pipelined writes whose replies are counted, not awaited.

What it does: :class:`PipelinedWriter` keeps one RESP connection; :meth:`PipelinedWriter.send`
writes a batch of encoded commands in one write and returns at once (after the socket drains),
while a reader task counts the replies (every ingest command answers one line: an integer or an
error, which is logged). At most ``max_outstanding`` replies may be owed: past that ``send`` waits
for Redis to catch up, so a slow Redis slows ingest down instead of growing a buffer. A failed
write, a reset or a closed connection drops the link; the next ``send`` reconnects, no sooner
than a backoff (50 ms doubling to 2 s) after the failure, and until then ``send`` answers False
at once (the caller counts those messages as dropped: ``redis_unavailable``).

What it deliberately does not do: retry or buffer a batch it could not write (the read path is
approximate: the ticks of that moment are lost, the next ones flow), read replies' values, or
know what the commands are (ingest encodes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from marketdata.resp import Reply, RespConnection, RespError, encode

log = logging.getLogger("marketdata.ingest")  # ingest's logger, as before the split


class PipelinedWriter:
    """One pipelined Redis connection of the ingest (see the module docstring)."""

    def __init__(self, redis_url: str, *, max_outstanding: int = 100_000) -> None:
        self.redis_url = redis_url
        self.max_outstanding = max_outstanding
        self._conn: RespConnection | None = None
        self._down_until = 0.0
        self._backoff = 0.05
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self._outstanding = 0

    async def connect(self) -> RespConnection | None:
        """The connection, (re)connected if the backoff allows; None while Redis is unavailable."""
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._down_until:
            return None
        try:
            self._conn = await RespConnection.connect(self.redis_url, connect_timeout=1.0)
            self._backoff = 0.05
            log.info("ingest connected to Redis")
            return self._conn
        except (TimeoutError, OSError, RespError) as exc:
            self._down_until = time.monotonic() + self._backoff
            log.warning("Redis unavailable (%s); retrying in %.2fs", exc, self._backoff)
            self._backoff = min(self._backoff * 2, 2.0)
            return None

    async def query(self, commands: list[bytes]) -> list[Reply]:
        """Commands whose replies are wanted (start-up state, before any pipelined write)."""
        assert self._conn is not None and self._reader_task is None
        return await self._conn.pipeline(commands)

    async def send(self, parts: list[bytes], n_commands: int) -> bool:
        """Write ``n_commands`` encoded commands (``parts`` joined) in one write; replies are
        consumed by a reader task (no round trip per batch). False when nothing was written
        (Redis unavailable or the write failed)."""
        async with self._lock:
            conn = await self.connect()
            if conn is None:
                return False
            try:
                if self._reader_task is not None and self._reader_task.done():
                    # the reply reader ended (EOF or a reset): this connection is dead
                    raise RespError("the Redis connection was closed")
                if self._reader_task is None:
                    self._reader_task = asyncio.create_task(self._consume_replies(conn))
                conn.write(b"".join(parts))
                self._outstanding += n_commands
                await asyncio.wait_for(conn.writer.drain(), 5.0)
                while self._outstanding > self.max_outstanding and not self._reader_task.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if self._reader_task.done():
                    raise RespError("reply reader stopped")
            # RuntimeError: uvloop's write on a transport it closed after a reset
            except (TimeoutError, OSError, RespError, RuntimeError) as exc:
                log.warning("Redis write failed (%s); reconnecting", exc)
                self._drop(conn)
                return False
            return True

    def _drop(self, conn: RespConnection) -> None:
        conn.close()
        if self._conn is conn:
            self._conn = None
            self._outstanding = 0
            self._down_until = time.monotonic() + self._backoff
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    async def _consume_replies(self, conn: RespConnection) -> None:
        """Every ingest command answers one integer line (or one error line): count lines."""
        reader = conn.reader
        tail = b""
        while True:
            try:
                chunk = await reader.read(1 << 20)
            except OSError as exc:  # a reset: the next write drops the connection
                log.warning("the ingest connection to Redis failed: %s", exc)
                return
            if not chunk:
                log.warning("Redis closed the ingest connection")
                return
            data = tail + chunk
            self._outstanding -= data.count(b"\r\n")
            cut = data.rfind(b"\r\n")
            tail = data[cut + 2:]
            if data.startswith(b"-") or b"\r\n-" in data:
                log.warning("Redis error reply in ingest pipeline: %r", data[data.find(b"-"):][:200])

    async def sync(self) -> None:
        """Wait until Redis has answered every command written so far."""
        while self._outstanding > 0 and self._reader_task is not None and not self._reader_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Wait (up to 2 s) for the replies owed, then close."""
        if self._conn is None:
            return
        conn = self._conn
        with contextlib.suppress(OSError, RespError, asyncio.TimeoutError):
            await asyncio.wait_for(conn.pipeline([encode("PING")]) if self._reader_task is None
                                   else self.sync(), 2.0)
        self._drop(conn)
        await conn.aclose()
