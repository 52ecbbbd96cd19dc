"""Trailing stops: orders held at the broker until a trigger fires (domain.trigger).

- ``orders.order_type`` may be ``trailing_stop``.
- ``orders.trail_price`` / ``orders.trail_percent``: the trail (exactly one is set on a
  trailing stop); ``orders.hwm``: the best price the trigger has seen (the bid's high for a
  sell, the ask's low for a buy). ``stop_price`` holds the trailing stop's current stop.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_order_type_check, "
               "ADD CONSTRAINT orders_order_type_check CHECK (order_type IN "
               "('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')), "
               "ADD COLUMN trail_price numeric(38, 10), "
               "ADD COLUMN trail_percent numeric(38, 10), "
               "ADD COLUMN hwm numeric(38, 10), "
               "ADD CONSTRAINT orders_one_trail CHECK (trail_price IS NULL OR trail_percent IS NULL)")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
