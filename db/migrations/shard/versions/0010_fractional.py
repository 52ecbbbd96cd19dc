"""Fractional shares: securities are kept to 9 decimals and the listed assets are fractionable.

A fraction of a share is filled by the firm from its own inventory (``domain.fractional``; the
house ledger accounts ``inventory:SYM`` and ``inventory_cash`` are created on first use, like
every ledger account). Nothing else in the schema changes: every quantity column is already
``numeric(38, 10)``.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE currencies SET scale = 9 WHERE kind = 'security' AND scale < 9")
    op.execute("UPDATE assets SET fractionable = true WHERE tradable")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
