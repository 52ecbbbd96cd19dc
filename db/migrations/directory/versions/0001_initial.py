"""Directory schema: shards, account -> shard, API keys (secrets stored hashed).

Revision ID: d0001
"""

from __future__ import annotations

from alembic import op

revision = "d0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE shards (
            id            integer PRIMARY KEY,
            account_count integer NOT NULL DEFAULT 0,
            status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed'))
        );
        CREATE TABLE accounts (
            id             uuid PRIMARY KEY,
            shard          integer NOT NULL REFERENCES shards(id),
            account_number text NOT NULL UNIQUE,
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX accounts_shard ON accounts (shard);
        CREATE TABLE api_keys (
            key_id      text PRIMARY KEY,
            account_id  uuid REFERENCES accounts(id),
            secret_hash text NOT NULL,
            role        text NOT NULL CHECK (role IN ('trader', 'ops')),
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz,
            CHECK (role = 'ops' OR account_id IS NOT NULL)
        );
        CREATE INDEX api_keys_account ON api_keys (account_id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE api_keys; DROP TABLE accounts; DROP TABLE shards;")
