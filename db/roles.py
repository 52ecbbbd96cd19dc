"""Database roles: migrations run as the owner, services as a role that cannot rewrite the books,
the API as a role that cannot write them at all.

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

The REST API has a role of its own when one is configured (``SHERWOOD_API_DB_USER`` /
``SHERWOOD_API_DB_PASSWORD``; the API process connects with it in place of each URL's user,
``Settings.for_api``). It gets ``SELECT`` on every table and writes only where :data:`API_WRITES`
says (watchlists, the operations tables): orders, transfers and resolutions reach the books
through workflows the workers run, so the API holds no ``INSERT``/``UPDATE`` on the ledger, order
events, executions, orders, balances or transfers. ``USAGE`` on a sequence only where it inserts
into the sequence's table. Same attributes as the service role.

Grants are recomputed on every migration (revoke everything, grant the plan, in one
transaction), so a table added by a later migration starts with ``SELECT, INSERT`` (the API:
``SELECT``) only and a privilege removed here is removed from running databases too.

What it does not do: separate roles among the workers (the shard workers, the gateway, the back
office and market data share the service role of a database), or manage the owner role itself
(the server's administrator creates it; in ``sherwood dev`` and the tests it is the server's
superuser), or
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

# The API's writes, per database kind: table (fnmatch pattern) -> its privileges beyond SELECT.
# Only what an API route writes itself (each entry names the code); everything else it changes
# goes through a workflow. The gateway and market-data databases it only reads (the execution
# quality report, bars).
API_WRITES: dict[str, dict[str, str]] = {
    "shard": {
        "watchlists": "INSERT, UPDATE, DELETE",  # /v2/watchlists (db/watchlists.py)
        "shard_halts": "UPDATE",  # POST /ops/shards/{n}/clear-halt (db/shard_status.clear_halts)
    },
    "directory": {
        "ops_audit": "INSERT",  # every /ops action is recorded first (db/ops.record)
        "ops_keys": "INSERT, UPDATE",  # /ops/keys: issue, rotate, revoke (db/ops.py)
        "ops_resolutions": "INSERT, UPDATE",  # a resolution awaiting, then given, a 2nd approval
        "symbol_controls": "INSERT, UPDATE",  # /ops/halts, /ops/restrictions (db/controls.py)
        "symbol_control_events": "INSERT",  # their history (db/controls.py)
    },
    "gateway": {},
    "marketdata": {},
}

# tables services only read
READ_ONLY = {"alembic_version"}

# the kinds of process a database grants to: every worker, or the REST API
PROCESSES = ("service", "api")


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


def table_privileges(kind: str, tables: list[str], process: str = "service") -> dict[str, list[str]]:
    """The plan: for each table, the privilege clauses the role of ``process`` (a name in
    :data:`PROCESSES`) gets on a database of ``kind`` (pure)."""
    if process not in PROCESSES:
        raise ValueError(f"no process kind {process!r}")
    plan: dict[str, list[str]] = {}
    for table in tables:
        if table in READ_ONLY:
            plan[table] = ["SELECT"]
            continue
        privs = ["SELECT", "INSERT"] if process == "service" else ["SELECT"]
        extras = MUTABLE if process == "service" else API_WRITES
        for pattern, extra in extras.get(kind, {}).items():
            if fnmatch.fnmatchcase(table, pattern):
                privs.append(extra)
        plan[table] = privs
    return plan


def may_insert(privs: list[str]) -> bool:
    return any("INSERT" in clause.split(", ") for clause in privs)


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


# sequences owned by a column (serial, identity) -> the table
_OWNED_SEQUENCES = """
    SELECT s.relname, t.relname FROM pg_class s
      JOIN pg_namespace n ON n.oid = s.relnamespace AND n.nspname = 'public'
      JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      JOIN pg_class t ON t.oid = d.refobjid
     WHERE s.relkind = 'S' ORDER BY 1"""


def grant_service(kind: str, owner_url: str, service: str, process: str = "service") -> dict[str, list[str]]:
    """Revoke everything ``service`` holds in the database of ``owner_url``, then grant the plan
    of ``process`` (one transaction). Returns the plan."""
    import psycopg
    from psycopg import sql

    role = sql.Identifier(service)
    with psycopg.connect(_libpq(owner_url), connect_timeout=5) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        plan = table_privileges(kind, tables, process)
        dbname = conn.info.dbname
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), role))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        if process == "service":
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
        else:  # the sequences of the tables it inserts into
            for seq, table in conn.execute(_OWNED_SEQUENCES).fetchall():
                if may_insert(plan.get(table, [])):
                    conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                        sql.Identifier(seq), role))
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
