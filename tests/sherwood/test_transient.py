"""What the activities retry (sherwood/faults.py ``is_transient``): a database that cannot be
reached at the moment is a transient failure, however the driver raises it. Found by the chaos
run: Postgres restarting answered a new connection "FATAL: the database system is shutting
down"; SQLAlchemy's pool let psycopg's own OperationalError (no SQLSTATE) through unwrapped, and
the order's booking of a fill was failed for good instead of retried."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sherwood.embedded import free_port
from sherwood.faults import is_transient


async def test_a_connection_the_pool_cannot_open_is_transient() -> None:
    engine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(Exception) as raised:
            await engine.raw_connection()  # db/sql.py's checkout
    finally:
        await engine.dispose()
    assert isinstance(raised.value, psycopg.OperationalError), type(raised.value)  # unwrapped
    assert is_transient(raised.value)


def test_the_drivers_connection_errors_are_transient_and_a_statements_are_not() -> None:
    shutting_down = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  the '
        'database system is shutting down')
    assert is_transient(shutting_down)
    assert is_transient(psycopg.InterfaceError("the connection is closed"))
    assert not is_transient(psycopg.errors.UniqueViolation("duplicate key"))  # 23505
    assert not is_transient(psycopg.ProgrammingError("syntax"))
    assert not is_transient(RuntimeError("ours"))
