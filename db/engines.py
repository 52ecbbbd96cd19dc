"""Engine construction and the retrying transaction runner shared by every database user."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sherwood.faults import sqlstate  # one reading of SQLSTATEs for the stores and the retries

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
# lock_timeout (lock_not_available) and statement_timeout (query_canceled): the server gave up
# waiting on a session's behalf. Transient: the same work may succeed a moment later.
TIMEOUT_SQLSTATES = frozenset({"55P03", "57014"})


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (leaves an explicit driver alone)."""
    scheme, sep, rest = url.partition("://")
    if "+" in scheme or not sep:
        return url
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+{driver}://{rest}"
    return url


# A pooled connection used less than this long ago is not pinged when checked out again.
PING_IDLE_S = 5.0


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40,
                autocommit: bool = False, statement_timeout_s: float | None = None,
                lock_timeout_s: float | None = None) -> AsyncEngine:
    """``autocommit``: every statement commits on its own (for stores whose every operation is
    one statement); ``engine.begin()`` then sends no BEGIN / COMMIT.

    ``statement_timeout_s`` / ``lock_timeout_s``: set on every session of the engine (request
    path engines: see ``Settings.db_statement_timeout_s``); the server cancels a statement that
    runs, or waits for a lock, longer (:func:`is_db_timeout`). None: the server's default.
    """
    options = "-c timezone=UTC"
    if statement_timeout_s is not None:
        options += f" -c statement_timeout={_ms(statement_timeout_s)}"
    if lock_timeout_s is not None:
        options += f" -c lock_timeout={_ms(lock_timeout_s)}"
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # UTC sessions: times read back format as the ones the code writes (``...Z``), whatever
        # the server's default time zone
        connect_args={"connect_timeout": 5, "options": options},
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    _ping_when_idle(engine, PING_IDLE_S)
    return engine


def _ms(seconds: float) -> int:
    """A duration setting as Postgres milliseconds (at least 1: 0 would mean no timeout)."""
    return max(1, round(seconds * 1000))


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """SQLAlchemy's pre-ping, paid only by connections that sat idle.

    ``pool_pre_ping`` costs a round trip on every checkout: one per transaction, a dozen per
    order. A connection checked in less than ``idle_s`` ago was alive then; one that broke during
    its last use carries psycopg's ``broken`` flag. Any other is pinged. A dead connection found
    at checkout is replaced by a fresh one (``DisconnectionError``: the pool retries), as with
    pre-ping. What this does not catch, like pre-ping, is a connection that dies after checkout.
    """
    sync = engine.sync_engine

    def _idle_from_now(dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    event.listen(sync, "connect", _idle_from_now)
    event.listen(sync, "checkin", _idle_from_now)

    @event.listens_for(sync, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        driver = record.driver_connection
        if driver is None or driver.broken or driver.closed:
            raise DisconnectionError("connection broken during its last use")
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle_s:
            return
        try:
            sync.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc


# Database errors as they reach us: SQLAlchemy's wrapper, or psycopg's own from ``db.sql``.
DB_ERRORS: tuple[type[Exception], ...] = (DBAPIError, psycopg.Error)


def reading(engine: AsyncEngine) -> AsyncContextManager[AsyncConnection]:
    """A connection for reads that ends with COMMIT, not ROLLBACK.

    psycopg forgets every prepared statement of a session on ROLLBACK (``DEALLOCATE ALL``), and a
    pooled connection used with ``engine.connect()`` ends with one: the hot read paths kept
    wiping the statements the order path had prepared on the same pooled connections. Reads
    only: anything written on it would be committed.
    """
    return engine.begin()


def is_db_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is the server canceling a statement for lock_timeout or statement_timeout
    (SQLSTATE 55P03 / 57014), directly or as the cause of a wrapper."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if sqlstate(seen) in TIMEOUT_SQLSTATES:
            return True
        seen = seen.__cause__
    return False


async def run_in_transaction(
    engine: AsyncEngine,
    fn: Callable[[AsyncConnection], Awaitable[T]],
    *,
    retries: int = 8,
) -> T:
    """Run ``fn`` in one transaction; retry the whole of it on serialization failure or deadlock.

    ``fn`` must be safe to re-run from the start (it is: everything it did was rolled back).
    Other errors propagate unchanged.
    """
    async def once() -> T:
        async with engine.begin() as conn:
            return await fn(conn)

    return await retrying_conflicts(once, retries=retries)


async def retrying_conflicts(attempt: Callable[[], Awaitable[T]], *, retries: int = 8) -> T:
    """``attempt()`` (one whole transaction), run again with a short random backoff while it
    fails on a serialization failure or deadlock, at most ``retries`` more times; other errors
    propagate unchanged."""
    n = 0
    while True:
        try:
            return await attempt()
        except DB_ERRORS as exc:
            if sqlstate(exc) not in RETRYABLE_SQLSTATES or n >= retries:
                raise
            n += 1
            log.info("retrying transaction after %s (attempt %d)", sqlstate(exc), n)
            await asyncio.sleep(min(0.2, 0.002 * 2**n) * random.random())
