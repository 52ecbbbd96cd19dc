"""The end-of-day reconciliation records the invariants audit (``db/audit.py``) it ran too.

- ``reconciliation_runs.violations``: the invariants the audit found violated, each with its
  name, description, count and first rows (``[]`` when every invariant holds, and on runs
  recorded before this migration, which ran no audit).

Revision ID: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE reconciliation_runs ADD COLUMN violations jsonb NOT NULL DEFAULT '[]'")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
