"""Pooled connections: no ping when used recently, a ping after idling, and a dead server found
through a db.sql statement retires the whole pool (as SQLAlchemy does for what it sees)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import db.engines as engines
from db import sql
from db.engines import run_in_transaction


async def _pid(engine: AsyncEngine) -> int:
    return int(await run_in_transaction(engine, lambda c: sql.scalar(c, "SELECT pg_backend_pid()")))


async def _kill(engine: AsyncEngine, pids: list[int]) -> None:
    async with engine.connect() as conn:
        for pid in pids:
            await sql.execute(conn, "SELECT pg_terminate_backend(:p)", {"p": pid})


@pytest.fixture
async def pools(pg_server_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """A pool of 3 under test and a separate one to kill its backends with."""
    url = f"{pg_server_url.rstrip('/')}/postgres"
    engine, admin = engines.make_engine(url, pool_size=3, max_overflow=0), engines.make_engine(url)
    yield engine, admin
    await engine.dispose()
    await admin.dispose()


async def _three_backends(engine: AsyncEngine) -> list[int]:
    conns = [await engine.connect() for _ in range(3)]
    pids = [int(await sql.scalar(c, "SELECT pg_backend_pid()")) for c in conns]
    for c in conns:
        await c.close()
    return pids


async def test_only_a_connection_that_sat_idle_is_pinged(
    pg_server_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    monkeypatch.setattr(engines, "PING_IDLE_S", 0.3)
    engine = engines.make_engine(f"{pg_server_url.rstrip('/')}/postgres", pool_size=1, max_overflow=0)
    dialect = engine.sync_engine.dialect
    pings: list[object] = []
    real_ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or real_ping(conn))
    try:
        first = await _pid(engine)
        for _ in range(5):
            assert await _pid(engine) == first
        assert pings == []  # one round trip saved per transaction
        await asyncio.sleep(0.4)
        assert await _pid(engine) == first
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_server_gone_costs_one_failure_then_every_pooled_connection_is_fresh(
    pools: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, admin = pools
    pids = await _three_backends(engine)
    await _kill(admin, pids)  # a server restart, as the pool sees it
    outcomes: list[str] = []
    for _ in range(4):
        try:
            outcomes.append("old" if await _pid(engine) in pids else "fresh")
        except Exception as exc:  # the one statement that found out
            outcomes.append(type(exc).__name__)
    assert outcomes[1:] == ["fresh", "fresh", "fresh"], outcomes
    assert outcomes[0] != "old"


async def test_an_idle_connection_is_pinged_and_replaced_transparently(
    pg_server_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    monkeypatch.setattr(engines, "PING_IDLE_S", 0.2)
    url = f"{pg_server_url.rstrip('/')}/postgres"
    engine, admin = engines.make_engine(url, pool_size=1, max_overflow=0), engines.make_engine(url)
    try:
        pid = await _pid(engine)
        await _kill(admin, [pid])
        await asyncio.sleep(0.3)
        assert await _pid(engine) != pid  # no error: the ping found it dead
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_reads_through_reading_keep_the_sessions_prepared_statements(pg_server_url: str) -> None:
    """psycopg drops every prepared statement on ROLLBACK; a plain ``connect()`` read ends with
    one, ``reading()`` ends with COMMIT."""
    from db.engines import reading

    engine = engines.make_engine(f"{pg_server_url.rstrip('/')}/postgres", pool_size=1, max_overflow=0)

    async def prepared() -> int:
        async with reading(engine) as conn:
            return int(await sql.scalar(conn, "SELECT count(*) AS n FROM pg_prepared_statements"))

    try:
        for _ in range(6):  # psycopg prepares a statement on its 5th execution
            await _pid(engine)
        assert await prepared() > 0
        async with reading(engine) as conn:
            await sql.scalar(conn, "SELECT 1 AS one")
        assert await prepared() > 0
        async with engine.connect() as conn:  # ends with ROLLBACK
            await sql.scalar(conn, "SELECT 1 AS one")
        assert await prepared() == 0
    finally:
        await engine.dispose()
