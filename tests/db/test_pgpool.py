"""The statement pool (db/pgpool.py): one autocommit statement per checkout, a connection that
sat idle is pinged (a dead one replaced), serialization failures retried."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import db.pgpool as pgpool
from db.pgpool import StatementPool


def _url(pg_server_url: str) -> str:
    return f"{pg_server_url.rstrip('/')}/postgres"


async def test_each_statement_commits_on_its_own(pg_server_url: str, unique: str) -> None:
    pool = StatementPool(_url(pg_server_url), min_size=1, max_size=2)
    table = f"pgpool_{unique}"
    other = await psycopg.AsyncConnection.connect(_url(pg_server_url), autocommit=True)
    try:
        await pool.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, n int)")
        assert await pool.execute(f"INSERT INTO {table} VALUES (:k, :n), ('b', 2)",
                                  {"k": "a", "n": 1}) == 2
        # visible to another session at once: no transaction left open
        assert (await (await other.execute(f"SELECT count(*) FROM {table}")).fetchone()) == (2,)
        assert await pool.first(f"SELECT n FROM {table} WHERE k = :k", {"k": "a"}) == {"n": 1}
        assert await pool.first(f"SELECT n FROM {table} WHERE k = 'zz'") is None
        assert [r["k"] for r in await pool.rows(f"SELECT k FROM {table} ORDER BY k")] == ["a", "b"]
        # the server's errors are psycopg's own, raised at once (not retried)
        with pytest.raises(psycopg.errors.UniqueViolation):
            await pool.execute(f"INSERT INTO {table} VALUES ('a', 3)")
    finally:
        await other.execute(f"DROP TABLE IF EXISTS {table}")
        await other.close()
        await pool.close()


async def test_a_connection_killed_while_idle_is_replaced(
    pg_server_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgpool, "PING_IDLE_S", 0.2)
    pool = StatementPool(_url(pg_server_url), min_size=1, max_size=1)
    admin = await psycopg.AsyncConnection.connect(_url(pg_server_url), autocommit=True)
    try:
        first = (await pool.first("SELECT pg_backend_pid() AS pid"))["pid"]  # type: ignore[index]
        # used again at once: the same connection, not pinged
        assert (await pool.first("SELECT pg_backend_pid() AS pid"))["pid"] == first  # type: ignore[index]
        await admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        await asyncio.sleep(0.3)  # idle past PING_IDLE_S: the ping finds it dead
        second = (await pool.first("SELECT pg_backend_pid() AS pid"))["pid"]  # type: ignore[index]
        assert second != first
    finally:
        await admin.close()
        await pool.close()


async def test_a_serialization_failure_is_retried(pg_server_url: str) -> None:
    pool = StatementPool(_url(pg_server_url), min_size=1, max_size=1)
    calls: list[int] = []
    real = psycopg.AsyncCursor.execute

    async def flaky(self, query, params=None, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return await real(self, query, params, **kw)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(psycopg.AsyncCursor, "execute", flaky)
            assert await pool.first("SELECT 7 AS n") == {"n": 7}
        assert len(calls) == 2
    finally:
        await pool.close()
