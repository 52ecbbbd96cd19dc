"""Least privilege (db/roles.py): the services' role can read and append, not rewrite the books.

The test run's databases are migrated by the owner and the stack connects as the run's service
role (tests/conftest.py), so these tests try, as that role, what a compromised process would.
"""

from __future__ import annotations

import psycopg
import pytest

from db.roles import API_WRITES, MUTABLE, READ_ONLY, login_of, table_privileges, with_login
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


# --- the API's own role: reads, and writes only what the API writes itself -------------------


def _api_url(migrated: Settings, db: str = "shard") -> str:
    s = migrated.for_api()
    return _libpq(s.directory_db_url() if db == "directory" else s.shard_url(0))


@pytest.mark.parametrize("db, statement", [
    ("shard", "INSERT INTO ledger_entries SELECT * FROM ledger_entries WHERE false"),
    ("shard", "INSERT INTO ledger_transactions SELECT * FROM ledger_transactions WHERE false"),
    ("shard", "INSERT INTO order_events SELECT * FROM order_events WHERE false"),
    ("shard", "INSERT INTO executions SELECT * FROM executions WHERE false"),
    ("shard", "UPDATE balances SET balance = balance WHERE false"),
    ("shard", "INSERT INTO balances SELECT * FROM balances WHERE false"),
    ("shard", "INSERT INTO orders SELECT * FROM orders WHERE false"),
    ("shard", "UPDATE orders SET filled_qty = filled_qty WHERE false"),
    ("shard", "INSERT INTO transfers SELECT * FROM transfers WHERE false"),
    ("shard", "UPDATE accounts SET status = status WHERE false"),
    ("shard", "SELECT 1 FROM accounts FOR UPDATE"),
    ("shard", "INSERT INTO outbox SELECT * FROM outbox WHERE false"),
    ("shard", "ALTER TABLE ledger_entries DISABLE TRIGGER ALL"),
    ("shard", "ALTER TABLE watchlists DISABLE TRIGGER ALL"),
    ("shard", "SET session_replication_role = replica"),
    ("shard", "CREATE TABLE sneaky (x int)"),
    ("shard", "SELECT nextval(pg_get_serial_sequence('ledger_entries', 'id'))"),
    ("directory", "INSERT INTO api_keys SELECT * FROM api_keys WHERE false"),
    ("directory", "INSERT INTO accounts SELECT * FROM accounts WHERE false"),
    ("directory", "UPDATE shards SET account_count = account_count WHERE false"),
    ("directory", "UPDATE ops_audit SET reason = reason WHERE false"),
])
def test_the_api_role_cannot_write_the_books(migrated: Settings, db: str, statement: str) -> None:
    """What a compromised API process would try, as the API's login: refused by the server.
    (Each statement is one the service role may run, or the owner: the test can fail.)"""
    with psycopg.connect(_api_url(migrated, db)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_api_role_is_its_own_unprivileged_login(migrated: Settings) -> None:
    api = migrated.api_login()
    assert api is not None and api.user not in (migrated.db_owner_user,
                                                login_of(migrated.shard_url(0)).user)
    for db in ("shard", "directory"):
        with psycopg.connect(_api_url(migrated, db)) as conn:
            row = conn.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, "
                               "rolreplication FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row == (api.user, False, False, False, False, False)


def test_the_api_role_does_what_the_api_does(migrated: Settings) -> None:
    """Reads everywhere, and the writes the API makes itself (rolled back)."""
    with psycopg.connect(_api_url(migrated)) as conn:
        for table in ("ledger_entries", "orders", "balances", "executions", "accounts", "transfers",
                      "alembic_version"):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.execute("INSERT INTO watchlists SELECT * FROM watchlists WHERE false")
        conn.execute("UPDATE watchlists SET name = name WHERE false")
        conn.execute("DELETE FROM watchlists WHERE false")
        conn.execute("SELECT 1 FROM watchlists FOR UPDATE").fetchall()
        conn.execute("UPDATE shard_halts SET cleared_at = cleared_at WHERE false")
        conn.rollback()
    with psycopg.connect(_api_url(migrated, "directory")) as conn:
        conn.execute("SELECT count(*) FROM api_keys").fetchone()
        conn.execute("INSERT INTO ops_audit (actor, action, target, reason) VALUES ('t', 't', 't', 't')")
        conn.execute("INSERT INTO symbol_control_events SELECT * FROM symbol_control_events WHERE false")
        conn.execute("INSERT INTO symbol_controls SELECT * FROM symbol_controls WHERE false "
                     "ON CONFLICT (symbol) DO UPDATE SET halted = excluded.halted")
        conn.execute("SELECT 1 FROM ops_keys FOR UPDATE").fetchall()
        conn.execute("UPDATE ops_resolutions SET status = status WHERE false")
        conn.rollback()


@pytest.mark.parametrize("kind", ["shard", "directory"])
def test_api_grants_match_the_plan(migrated: Settings, kind: str) -> None:
    """The API's login holds exactly what db/roles.py plans for it: SELECT everywhere, writes
    only where API_WRITES says."""
    api = migrated.api_login()
    assert api is not None
    url = migrated.shard_url(0) if kind == "shard" else migrated.directory_db_url()
    with psycopg.connect(_libpq(owner_url(migrated, url))) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        plan = table_privileges(kind, tables, process="api")
        for table in tables:
            held = {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                                "TRIGGER")
                    if conn.execute("SELECT has_table_privilege(%s, %s, %s)",
                                    (api.user, f"public.{table}", p)).fetchone()[0]}  # type: ignore[index]
            planned = {p for clause in plan[table] for p in clause.split(", ")}
            assert held == planned, (table, held, plan[table])
            if table not in API_WRITES[kind]:
                assert held == {"SELECT"}, table
    assert set(API_WRITES[kind]) <= set(tables)
