"""Create and migrate the directory database and every shard database.

Shards share one Alembic history (``db/migrations/shard``); the directory has its own. Running
:func:`migrate_all` again is a no-op. Databases are created when the URL's server allows it.
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


def upgrade(kind: str, url: str) -> None:
    ensure_database(url)
    command.upgrade(alembic_config(kind, url), "head")


def ensure_shards(directory_url: str, shards: int) -> None:
    """Register shards 0..N-1 in the directory (never removes one that holds accounts)."""
    with psycopg.connect(_libpq(directory_url), autocommit=True, connect_timeout=5) as conn:
        for n in range(shards):
            conn.execute("INSERT INTO shards (id) VALUES (%s) ON CONFLICT DO NOTHING", (n,))
        conn.execute("UPDATE shards SET status = 'closed' WHERE id >= %s AND status = 'active'",
                     (shards,))
        conn.execute("UPDATE shards SET status = 'active' WHERE id < %s", (shards,))


def migrate_all(
    directory_url: str, shard_urls: list[str], progress: Callable[[str], None] = log.info
) -> None:
    progress("migrating directory database")
    upgrade("directory", directory_url)
    ensure_shards(directory_url, len(shard_urls))
    for n, url in enumerate(shard_urls):
        progress(f"migrating shard {n}")
        upgrade("shard", url)


def migrate_gateway(url: str) -> None:
    """Create (if needed) and migrate the execution gateway's database (its own history)."""
    upgrade("gateway", url)


def migrate_marketdata(url: str) -> None:
    """Create (if needed) and migrate the market-data database (bars; its own history)."""
    upgrade("marketdata", url)
