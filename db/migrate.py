"""Create and migrate the directory database and every shard database.

Shards share one Alembic history (``db/migrations/shard``); the directory has its own. Running
:func:`migrate_all` again is a no-op. Databases are created when the URL's server allows it.

With ``owner`` (:class:`db.roles.Login`), each database is created and migrated as the owner and
the URL's own user becomes the service role, granted what :mod:`db.roles` plans; with ``api``
too, that login becomes the API's role on the database (its own, narrower plan). Without it, the
URL's user does everything (a process checking that its database is at head: the service role
may read ``alembic_version`` and nothing more is needed when there is nothing to do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql

from db.engines import sqlalchemy_url
from db.roles import Login, ensure_service_role, grant_service, login_of, with_login

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _libpq(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. Returns True if created."""
    conninfo = psycopg.conninfo.conninfo_to_dict(_libpq(url))
    dbname = conninfo.get("dbname")
    if not dbname:
        raise ValueError(f"no database name in {url}")
    admin = {**conninfo, "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True, connect_timeout=5) as conn:  # type: ignore[arg-type]
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
        return True


def drop_database(url: str) -> None:
    conninfo = psycopg.conninfo.conninfo_to_dict(_libpq(url))
    admin = {**conninfo, "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True, connect_timeout=5) as conn:  # type: ignore[arg-type]
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(str(conninfo["dbname"]))
            )
        )


def alembic_config(kind: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / kind))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(kind: str, url: str, owner: Login | None = None, api: Login | None = None) -> None:
    """Create and migrate the database of ``url``; with ``owner``, as the owner, then grant the
    URL's user (the service role) its privileges, and ``api`` (the API's login) the API's."""
    if owner is None:
        ensure_database(url)
        command.upgrade(alembic_config(kind, url), "head")
        return
    if login_of(url).user == owner.user:  # before anything is created as it
        raise ValueError(f"services must not connect as the owner ({owner.user}): give them their own "
                         "user in the database URLs")
    if api is not None and api.user in (owner.user, login_of(url).user):
        raise ValueError(f"the API's database user ({api.user}) must be neither the owner nor the "
                         "services' user: SHERWOOD_API_DB_USER names a login of its own")
    admin = with_login(url, owner)
    ensure_database(admin)
    command.upgrade(alembic_config(kind, admin), "head")
    ensure_service_role(admin, login_of(url))
    grant_service(kind, admin, login_of(url).user)
    if api is not None:
        ensure_service_role(admin, api)
        grant_service(kind, admin, api.user, process="api")


def ensure_shards(directory_url: str, shards: int, owner: Login | None = None) -> None:
    """Register shards 0..N-1 in the directory (never removes one that holds accounts)."""
    url = with_login(directory_url, owner) if owner else directory_url
    with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=5) as conn:
        for n in range(shards):
            conn.execute("INSERT INTO shards (id) VALUES (%s) ON CONFLICT DO NOTHING", (n,))
        conn.execute("UPDATE shards SET status = 'closed' WHERE id >= %s AND status = 'active'",
                     (shards,))
        conn.execute("UPDATE shards SET status = 'active' WHERE id < %s", (shards,))


def migrate_all(
    directory_url: str, shard_urls: list[str], progress: Callable[[str], None] = log.info,
    owner: Login | None = None, api: Login | None = None,
) -> None:
    progress("migrating directory database")
    upgrade("directory", directory_url, owner, api)
    ensure_shards(directory_url, len(shard_urls), owner)
    for n, url in enumerate(shard_urls):
        progress(f"migrating shard {n}")
        upgrade("shard", url, owner, api)


def migrate_gateway(url: str, owner: Login | None = None, api: Login | None = None) -> None:
    """Create (if needed) and migrate the execution gateway's database (its own history)."""
    upgrade("gateway", url, owner, api)


def migrate_marketdata(url: str, owner: Login | None = None, api: Login | None = None) -> None:
    """Create (if needed) and migrate the market-data database (bars; its own history)."""
    upgrade("marketdata", url, owner, api)


def drop_database_as(url: str, owner: Login | None) -> None:
    """Drop the database of ``url`` as ``owner`` (or as the URL's user)."""
    drop_database(with_login(url, owner) if owner else url)
