"""Statements run on the psycopg connection beneath a SQLAlchemy transaction.

SQLAlchemy keeps the pool, the transaction and the retries (``run_in_transaction``); these
helpers skip only its per-statement execution layer, which costs about 0.11 ms more CPU per
statement than psycopg alone (234 vs 124 us for a one-row SELECT, measured here). The order path
runs 10-17 statements per transaction, so it goes through here; everything else need not.

Statements keep SQLAlchemy's ``:name`` parameters (and ``::type`` casts), so they read the same as
everywhere else; a literal ``%`` is fine. Rows come back as plain dicts. Errors are psycopg's
own (``psycopg.Error``); ``db.engines.sqlstate`` and ``run_in_transaction`` handle both kinds.
Deliberately not an ORM nor a query builder.

Every helper takes either a SQLAlchemy connection or the psycopg connection itself (:data:`Conn`):
:func:`transaction` and :func:`read` hand out the latter, checked out of an engine's pool without
SQLAlchemy's Connection and Transaction objects (about 0.2 ms of CPU less per transaction; the
order path runs three per order).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from db.engines import retrying_conflicts

T = TypeVar("T")
Row = dict[str, Any]
# a SQLAlchemy connection, or the psycopg connection of one (:func:`transaction`, :func:`read`)
Conn = AsyncConnection | psycopg.AsyncConnection[Any]
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """``:name`` -> ``%(name)s``, ``%`` -> ``%%``; ``::type`` casts and ``'a:b'`` are left alone."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def driver(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection of an open SQLAlchemy connection (same session, same transaction)."""
    fairy = conn.sync_connection.connection if conn.sync_connection is not None else None
    if fairy is None or fairy.driver_connection is None:
        raise RuntimeError("the SQLAlchemy connection is closed")
    return fairy.driver_connection  # type: ignore[no-any-return]


async def _cursor(conn: Conn, sql: str,
                  params: Mapping[str, Any] | None) -> psycopg.AsyncCursor[Row]:
    cur = (conn if isinstance(conn, psycopg.AsyncConnection) else driver(conn)).cursor(
        row_factory=dict_row)
    try:
        await cur.execute(to_psycopg(sql), params or {})
    except psycopg.OperationalError as exc:
        # (a psycopg connection's checkout does this itself: _checked_out)
        if cur.connection.broken and isinstance(conn, AsyncConnection):
            await _server_gone(conn, exc)
        raise
    return cur


async def _checked_out(engine: AsyncEngine, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                       *, begin: bool) -> T:
    """``fn`` on the psycopg connection of one checkout of ``engine``'s pool (the pool's own
    checkout and checkin: its idle ping, its reset), in a transaction when ``begin``."""
    fairy = await engine.raw_connection()
    conn: psycopg.AsyncConnection[Any] = fairy.driver_connection  # type: ignore[assignment]
    try:
        if not begin and conn.autocommit:
            return await fn(conn)
        # (a read on a connection that is not autocommit ends with COMMIT, not ROLLBACK: see
        # db.engines.reading)
        async with conn.transaction():
            return await fn(conn)
    except psycopg.OperationalError as exc:
        if conn.broken:  # as _server_gone: this connection dropped, the others replaced
            await greenlet_spawn(fairy.invalidate, exc)
            await engine.dispose(close=False)
        raise
    finally:
        await greenlet_spawn(fairy.close)


async def transaction(engine: AsyncEngine, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                      *, retries: int = 8) -> T:
    """:func:`db.engines.run_in_transaction` on the psycopg connection itself: ``fn`` in one
    transaction, all of it retried on serialization failure or deadlock (``fn`` must be safe to
    re-run: everything it did was rolled back). Other errors propagate unchanged."""
    return await retrying_conflicts(lambda: _checked_out(engine, fn, begin=True), retries=retries)


async def read(engine: AsyncEngine, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    """``fn``'s reads on the psycopg connection of one checkout: no BEGIN / COMMIT on an
    autocommit engine. Reads only (anything written is committed)."""
    return await _checked_out(engine, fn, begin=False)


async def _server_gone(conn: AsyncConnection, exc: Exception) -> None:
    """What SQLAlchemy does on a disconnect it sees itself (it does not see ours): the connection
    is dropped, and every pooled connection as old as it is replaced before its next use (a
    server restart killed them all; they are not pinged when recently used)."""
    await conn.invalidate(exc)
    await conn.engine.dispose(close=False)


async def rows(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    return await (await _cursor(conn, sql, params)).fetchall()


async def first(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
    return await (await _cursor(conn, sql, params)).fetchone()


async def one(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> Row:
    row = await first(conn, sql, params)
    if row is None:
        raise LookupError(f"no row from: {sql.strip().splitlines()[0]}")
    return row


async def scalar(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    row = await one(conn, sql, params)
    return next(iter(row.values()))


async def execute(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> int:
    """Run a statement; returns the number of rows it touched."""
    return (await _cursor(conn, sql, params)).rowcount
