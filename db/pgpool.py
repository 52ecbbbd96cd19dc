"""A psycopg connection pool for stores whose every operation is ONE autocommit statement.

SQLAlchemy's ``engine.begin()`` costs about 0.27 ms of CPU per use on top of the statement
itself (pool checkout and checkin events, the Connection and Transaction objects, greenlet
hops: 386 vs 119 us for a one-row SELECT in autocommit, measured here), and the execution
gateway runs half a dozen single statements per order. This pool hands out psycopg connections
directly (``psycopg_pool``: about 35 us per checkout) and runs one statement per checkout.

Same behaviour as :func:`db.engines.make_engine` where it matters: UTC sessions, a 5 s connect
timeout, a connection idle for more than :data:`db.engines.PING_IDLE_S` is pinged before it is
used again (one that fails is replaced), a connection that broke is dropped at its return, and a
statement that fails on a serialization failure or deadlock is retried. Statements keep
SQLAlchemy's ``:name`` parameters (:func:`db.sql.to_psycopg`). Deliberately no transactions:
every statement commits on its own (use an engine for multi-statement transactions).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from db.engines import PING_IDLE_S, RETRYABLE_SQLSTATES
from db.sql import Row, to_psycopg

log = logging.getLogger(__name__)

_LAST_USED = "_sherwood_last_used"


async def _check(conn: psycopg.AsyncConnection[Any]) -> None:
    """Ping a connection that sat idle (the pool replaces it when this raises)."""
    last = getattr(conn, _LAST_USED, None)
    if last is not None and time.monotonic() - last < PING_IDLE_S:
        return
    await conn.execute("SELECT 1")


async def _returned(conn: psycopg.AsyncConnection[Any]) -> None:
    setattr(conn, _LAST_USED, time.monotonic())


class StatementPool:
    """One autocommit statement per checkout, over a lazily opened psycopg pool."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10,
                 retries: int = 8, wait_s: float = 5.0) -> None:
        """``url``: ``postgresql://...`` (a SQLAlchemy driver suffix such as ``+psycopg`` is
        dropped). ``wait_s``: how long a statement waits for a connection (the database down:
        it fails after that, as a connect would)."""
        self.retries = retries
        scheme, sep, rest = url.partition("://")
        self._pool = AsyncConnectionPool(
            f"{scheme.split('+', 1)[0]}{sep}{rest}", min_size=min_size,
            max_size=max(min_size, max_size), open=False, timeout=wait_s,
            kwargs={"autocommit": True, "connect_timeout": 5, "options": "-c timezone=UTC"},
            check=_check, reset=_returned, name="sherwood-statements")
        self._opened = False
        self._opening: asyncio.Lock | None = None

    async def _open(self) -> None:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True

    async def _run(self, statement: str, params: Mapping[str, Any] | None,
                   fetch: str) -> Any:
        if not self._opened:
            await self._open()
        query = to_psycopg(statement)
        attempt = 0
        while True:
            try:
                async with self._pool.connection() as conn:
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(query, params or {})
                    if fetch == "rows":
                        return await cur.fetchall()
                    if fetch == "first":
                        return await cur.fetchone()
                    return cur.rowcount
            except psycopg.Error as exc:
                if exc.sqlstate not in RETRYABLE_SQLSTATES or attempt >= self.retries:
                    raise
                attempt += 1
                log.info("retrying statement after %s (attempt %d)", exc.sqlstate, attempt)
                await asyncio.sleep(min(0.2, 0.002 * 2**attempt) * random.random())

    async def first(self, statement: str, params: Mapping[str, Any] | None = None) -> Row | None:
        return await self._run(statement, params, "first")  # type: ignore[no-any-return]

    async def rows(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await self._run(statement, params, "rows")  # type: ignore[no-any-return]

    async def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        return await self._run(statement, params, "count")  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._pool.close()
