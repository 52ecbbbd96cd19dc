"""A new order the workflow gave up routing (no venue within its deadline, or canceled by the
customer while routing) is reserved as ``abandoned``: no later send of its ClOrdID goes out.

Revision ID: g0003
"""

from __future__ import annotations

from alembic import op

revision = "g0003"
down_revision = "g0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE gateway_orders DROP CONSTRAINT gateway_orders_status_check;
        ALTER TABLE gateway_orders ADD CONSTRAINT gateway_orders_status_check
            CHECK (status IN ('sending', 'sent', 'abandoned'));
        """
    )


def downgrade() -> None:
    raise NotImplementedError("the gateway's record of what it sent is never dropped")
