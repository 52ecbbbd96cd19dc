"""Alembic environment of this history: the shared one (db.migrations.env_common)."""

from db.migrations.env_common import run_migrations

run_migrations()
