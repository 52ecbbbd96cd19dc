"""Least privilege (db/roles.py): the services' role can read and append, not rewrite the books.

The test run's databases are migrated by the owner and the stack connects as the run's service
role (tests/conftest.py), so these tests try, as that role, what a compromised process would.
"""

from __future__ import annotations

import psycopg
import pytest

from db.roles import MUTABLE, READ_ONLY, login_of, table_privileges, with_login
from sherwood.settings import Settings
from tests.owner import owner_url


def _libpq(url: str) -> str:
    return "postgresql://" + url.partition("://")[2]


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_entries SET amount = amount WHERE false",
    "DELETE FROM ledger_entries WHERE false",
    "TRUNCATE ledger_entries",
    "UPDATE ledger_transactions SET memo = memo WHERE false",
    "DELETE FROM order_events WHERE false",
    "UPDATE order_events SET reason = reason WHERE false",
    "UPDATE executions SET price = price WHERE false",
    "DELETE FROM executions WHERE false",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ALL",
    "DROP TRIGGER ledger_entries_append_only ON ledger_entries",
    "SET session_replication_role = replica",
    "CREATE TABLE sneaky (x int)",
    "INSERT INTO alembic_version VALUES ('x')",
])
def test_the_service_role_cannot_rewrite_the_books(migrated: Settings, statement: str) -> None:
    with psycopg.connect(_libpq(migrated.shard_url(0))) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_service_role_is_not_the_owner_nor_privileged(migrated: Settings) -> None:
    service = login_of(migrated.shard_url(0)).user
    assert service != migrated.db_owner_user
    with psycopg.connect(_libpq(migrated.shard_url(0))) as conn:
        row = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication "
                           "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, False, False)
        owners = {r[0] for r in conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()}
        assert service not in owners


def test_the_service_role_does_what_the_services_do(migrated: Settings) -> None:
    """Reads, appends and the granted updates work (rolled back): the grants are not too tight."""
    with psycopg.connect(_libpq(migrated.shard_url(0))) as conn:
        conn.execute("SELECT count(*) FROM ledger_entries").fetchone()
        conn.execute("UPDATE orders SET filled_qty = filled_qty WHERE false")
        conn.execute("UPDATE executions SET ledger_txn_id = ledger_txn_id WHERE false")
        conn.execute("SELECT 1 FROM accounts FOR UPDATE").fetchall()
        conn.rollback()


def test_grants_match_the_plan(migrated: Settings) -> None:
    """Every table's UPDATE/DELETE/TRUNCATE privileges are exactly what db/roles.py plans: a new
    table gets SELECT, INSERT only until it is listed there."""
    service = login_of(migrated.shard_url(0)).user
    with psycopg.connect(_libpq(owner_url(migrated, migrated.shard_url(0)))) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        plan = table_privileges("shard", tables)
        for table in tables:
            held = {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                                "TRIGGER")
                    if conn.execute("SELECT has_table_privilege(%s, %s, %s)",
                                    (service, f"public.{table}", p)).fetchone()[0]}  # type: ignore[index]
            # a column grant ("UPDATE (a, b)") is no table-level privilege
            planned = {p for clause in plan[table] if "(" not in clause for p in clause.split(", ")}
            assert held == planned, (table, held, plan[table])
    for table in ("ledger_entries", "ledger_transactions", "order_events", "executions"):
        assert "UPDATE" not in plan[table] and "DELETE" not in " ".join(plan[table])
    assert plan["alembic_version"] == ["SELECT"] and "alembic_version" in READ_ONLY
    assert set(MUTABLE["shard"]) <= set(tables)


def test_the_owner_may_still_tamper(migrated: Settings) -> None:
    """The tests that damage the books on purpose do it as the owner (tests/owner.py)."""
    with psycopg.connect(_libpq(owner_url(migrated, migrated.shard_url(0)))) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE ledger_entries SET amount = amount WHERE false")
        conn.rollback()


def test_urls_carry_the_login() -> None:
    url = "postgresql://svc:p%40ss@db.internal:5432/sherwood_shard?sslmode=require"
    assert login_of(url).user == "svc" and login_of(url).password == "p@ss"
    owner = with_login(url, login_of("postgresql://own:s3cret@x"))
    assert owner == "postgresql://own:s3cret@db.internal:5432/sherwood_shard?sslmode=require"
