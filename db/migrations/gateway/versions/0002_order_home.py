"""Where each order lives: the account and shard of a NewOrderSingle's order, so that a venue
report arriving after the order's workflow ended can start a new run of it on the right shard
(``workers.gateway``). Also admits OrderCancelReplaceRequest (G) reservations.

Revision ID: g0002
"""

from __future__ import annotations

from alembic import op

revision = "g0002"
down_revision = "g0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE gateway_orders ADD COLUMN account_id text, ADD COLUMN shard integer;
        ALTER TABLE gateway_orders DROP CONSTRAINT gateway_orders_msg_type_check;
        ALTER TABLE gateway_orders ADD CONSTRAINT gateway_orders_msg_type_check
            CHECK (msg_type IN ('D', 'F', 'G', 'H'));
        """
    )


def downgrade() -> None:
    raise NotImplementedError("the gateway's record of what it sent is never dropped")
