"""Engine construction and the retrying transaction runner shared by every database user."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (leaves an explicit driver alone)."""
    scheme, sep, rest = url.partition("://")
    if "+" in scheme or not sep:
        return url
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+{driver}://{rest}"
    return url


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40,
                autocommit: bool = False) -> AsyncEngine:
    """``autocommit``: every statement commits on its own (for stores whose every operation is
    one statement); ``engine.begin()`` then sends no BEGIN / COMMIT."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )


# Database errors as they reach us: SQLAlchemy's wrapper, or psycopg's own from ``db.sql``.
DB_ERRORS: tuple[type[Exception], ...] = (DBAPIError, psycopg.Error)


def sqlstate(exc: BaseException) -> str | None:
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) if orig is not None else None


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
    attempt = 0
    while True:
        try:
            async with engine.begin() as conn:
                return await fn(conn)
        except DB_ERRORS as exc:
            if sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt >= retries:
                raise
            attempt += 1
            delay = min(0.2, 0.002 * 2**attempt) * random.random()
            log.info("retrying transaction after %s (attempt %d)", sqlstate(exc), attempt)
            await asyncio.sleep(delay)
