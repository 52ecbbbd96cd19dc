"""The one Alembic environment of every history (shard, directory, gateway, market data): each
history's ``env.py`` calls :func:`run_migrations`. The URL comes from the Config the caller built
(see :mod:`db.migrate`); online mode only, one transaction per migration."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "db.migrate sets sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
