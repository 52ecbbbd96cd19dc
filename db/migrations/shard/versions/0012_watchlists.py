"""Watchlists (Alpaca's ``/v2/watchlists``): an account's named, ordered lists of symbols.

- ``watchlists``: one row per list, on the account's shard (per-account data, rule 2); ``symbols``
  keeps the customer's order; a name is unique per account. Rows are updated in place (a
  watchlist is a preference, not a record of money: no audit trail is kept). Limits on the number
  of lists and of symbols are settings, checked by :mod:`domain.watchlists` under a per-account
  advisory lock (:mod:`db.watchlists`); the CHECKs here only bound what any setting may allow.

Revision ID: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE watchlists (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts(id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    symbols     text[] NOT NULL DEFAULT '{}' CHECK (cardinality(symbols) <= 10000),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (account_id, name)
)""")


def downgrade() -> None:
    op.execute("DROP TABLE watchlists")
