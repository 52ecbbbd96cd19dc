"""Database roles: migrations run as the owner, services as a role that cannot rewrite the books.

Every Sherwood database (directory, shards, gateway, market data) is created and migrated by the
*owner* (the credentials in ``SHERWOOD_DB_OWNER_USER`` / ``SHERWOOD_DB_OWNER_PASSWORD``, put in
place of the user in each database URL). The processes connect with the URLs as configured: their
user is the *service role*, which :func:`ensure_service_role` creates (or updates: password,
attributes) and :func:`grant_service` grants:

- ``SELECT, INSERT`` on every table, ``USAGE, SELECT`` on every sequence;
- ``UPDATE`` / ``DELETE`` only where :data:`MUTABLE` says the services change rows (orders,
  transfers, balances, the outbox ...). The books (``ledger_entries``, ``ledger_transactions``,
  ``order_events``, settlements, snapshots ...) get no ``UPDATE``/``DELETE``; ``executions`` gets
  ``UPDATE`` on its booking columns only (the ledger transaction and the dates, written when a
  fill is booked), never on what the venue reported;
- nothing else: no ``TRUNCATE``, no DDL (not the tables' owner, so no ``ALTER TABLE`` and no
  ``DISABLE TRIGGER``), no writes to ``alembic_version``; the role is ``NOSUPERUSER NOCREATEDB
  NOCREATEROLE NOBYPASSRLS``.

Grants are recomputed on every migration (revoke everything, grant the plan, in one
transaction), so a table added by a later migration starts with ``SELECT, INSERT`` only and a
privilege removed here is removed from running databases too.

What it does not do: separate roles per process kind on one database (the API and the shard
workers share the shard's service role), or manage the owner role itself (the server's
administrator creates it; in ``sherwood dev`` and the tests it is the server's superuser), or
import psycopg before a function here connects (the settings import :class:`Login`, and every
``sherwood`` command imports the settings).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

# Per database kind: table (fnmatch pattern) -> the privileges services hold beyond SELECT, INSERT.
# Each entry names the code that needs it.
MUTABLE: dict[str, dict[str, str]] = {
    "shard": {
        "accounts": "UPDATE",  # row locks (SELECT ... FOR UPDATE) in risk, funding, settlement
        "balances": "UPDATE",  # cached balances (db/ledger.py)
        "orders": "UPDATE",  # the order row follows its workflow (db/orders.py)
        "executions": "UPDATE (ledger_txn_id, trade_date, settle_date)",  # booking a fill
        "outbox": "UPDATE",  # published_at (workers/outbox.py)
        "transfers": "UPDATE",  # transfer status (db/funding.py)
        "shortfalls": "UPDATE",  # covered_at (db/shortfalls.py)
        "settlement_runs": "UPDATE",  # the run's totals (db/settlement.py)
        "shard_halts": "UPDATE",  # clearing a halt (db/shard_status.py)
        "watchlists": "UPDATE, DELETE",  # /v2/watchlists
        "assets": "UPDATE",  # a symbol change deactivates the old asset (db/corporate_actions.py)
    },
    "directory": {
        "shards": "UPDATE",  # account_count (db/accounts.py)
        "symbol_controls": "UPDATE",  # halts and restrictions (db/controls.py)
        "settlement_report_runs": "UPDATE",  # a report run again (db/settlement.py)
        "settlement_reports": "DELETE",  # replaced when a report is run again
        "settlement_breaks": "DELETE",
        "ops_keys": "UPDATE",  # revocation and rotation (db/ops.py)
        "ops_resolutions": "UPDATE",  # a four-eyes approval (db/ops.py)
    },
    "gateway": {
        "gateway_orders": "UPDATE",  # attempts, venue state (db/gateway.py)
        "gateway_reports": "UPDATE",  # delivered_at (db/gateway.py)
    },
    "marketdata": {
        "bars_*": "UPDATE",  # a bar's upsert (marketdata/store.py)
        "trades": "DELETE",  # retention sweep
    },
}

# tables services only read
READ_ONLY = {"alembic_version"}


@dataclass(frozen=True)
class Login:
    user: str
    password: str | None = None


def login_of(url: str) -> Login:
    """The user and password in a Postgres URL."""
    parts = urlsplit(url)
    if not parts.username:
        raise ValueError("the database URL names no user")
    return Login(unquote(parts.username), unquote(parts.password) if parts.password else None)


def with_login(url: str, login: Login) -> str:
    """``url`` with its user and password replaced by ``login``'s."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    auth = quote(login.user, safe="")
    if login.password:
        auth += ":" + quote(login.password, safe="")
    return parts._replace(netloc=f"{auth}@{host}").geturl()


def table_privileges(kind: str, tables: list[str]) -> dict[str, list[str]]:
    """The plan: for each table, the privilege clauses the service role gets (pure)."""
    plan: dict[str, list[str]] = {}
    for table in tables:
        if table in READ_ONLY:
            plan[table] = ["SELECT"]
            continue
        privs = ["SELECT", "INSERT"]
        for pattern, extra in MUTABLE.get(kind, {}).items():
            if fnmatch.fnmatchcase(table, pattern):
                privs.append(extra)
        plan[table] = privs
    return plan


def _libpq(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def ensure_service_role(owner_url: str, service: Login) -> None:
    """Create the service role, or bring an existing one to the attributes (and password) here.
    Refuses when the service would connect as the owner."""
    import psycopg
    from psycopg import sql

    owner = login_of(owner_url)
    if service.user == owner.user:
        raise ValueError(f"services must not connect as the owner ({owner.user}): give them their own "
                         "user in the database URLs")
    conninfo = psycopg.conninfo.conninfo_to_dict(_libpq(owner_url))
    admin = {**conninfo, "dbname": "postgres"}
    attrs: sql.Composable = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION")
    if service.password is not None:
        attrs = sql.SQL("{} PASSWORD {}").format(attrs, sql.Literal(service.password))
    role = sql.Identifier(service.user)
    with psycopg.connect(**admin, autocommit=True, connect_timeout=5) as conn:  # type: ignore[arg-type]
        # two migrations at once may both try to create it: serialize on an advisory lock
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sherwood roles'))")
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (service.user,)).fetchone()
            verb = "ALTER ROLE {} WITH {}" if exists else "CREATE ROLE {} WITH {}"
            conn.execute(sql.SQL(verb).format(role, attrs))


def grant_service(kind: str, owner_url: str, service: str) -> dict[str, list[str]]:
    """Revoke everything ``service`` holds in the database of ``owner_url``, then grant the plan
    (one transaction). Returns the plan."""
    import psycopg
    from psycopg import sql

    role = sql.Identifier(service)
    with psycopg.connect(_libpq(owner_url), connect_timeout=5) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        plan = table_privileges(kind, tables)
        dbname = conn.info.dbname
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), role))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
        for table, privs in plan.items():
            conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ".join(privs)), sql.Identifier(table), role))
    return plan


def drop_role(owner_url: str, role: str) -> None:
    """Drop ``role`` (tests: after their databases are dropped; what it still holds elsewhere is
    revoked first)."""
    import psycopg
    from psycopg import sql

    conninfo = psycopg.conninfo.conninfo_to_dict(_libpq(owner_url))
    admin = {**conninfo, "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True, connect_timeout=5) as conn:  # type: ignore[arg-type]
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
