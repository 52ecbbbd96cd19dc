"""Order groups (bracket, oco, oto): an order names its class, its parent and its leg.

- ``orders.order_class``: Alpaca's order class (``simple`` for every order before this).
- ``orders.parent_id``: a leg's parent order (the entry of a bracket / oto, the take-profit of
  an oco); ``orders.leg``: ``take_profit`` | ``stop_loss``.
- The state ``HELD`` (a leg waiting at the broker, holding nothing) needs no schema change: the
  state column is free text checked by the application's state machine.

Revision ID: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE orders ADD COLUMN order_class text NOT NULL DEFAULT 'simple', "
               "ADD COLUMN parent_id uuid REFERENCES orders(id), "
               "ADD COLUMN leg text CHECK (leg IN ('take_profit', 'stop_loss'))")
    op.execute("CREATE INDEX orders_legs ON orders (parent_id) WHERE parent_id IS NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
