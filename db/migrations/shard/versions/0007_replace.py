"""Cancel/replace: an order names the order it replaces and the one that replaces it.

- ``orders.replaces`` / ``orders.replaced_by``: the two orders of a replace (``PATCH
  /v2/orders/{id}``); ``replaced_by`` is set when the replace is requested (the original is then
  PENDING_REPLACE) and stays when the venue refuses it (the replacement ends REJECTED);
  ``replaced_at``: when the venue replaced the original (state REPLACED, which is terminal).
- ``orders.prior_filled_qty``: what the venue counts in CumQty for the orders a replacement
  replaced (its own fills are ``filled_qty``; the venue's CumQty is their sum).
- ``orders_open`` (open orders) leaves REPLACED orders out, like every terminal state.

Revision ID: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE orders ADD COLUMN replaces uuid REFERENCES orders(id), "
               "ADD COLUMN replaced_by uuid REFERENCES orders(id), "
               "ADD COLUMN replaced_at timestamptz, "
               "ADD COLUMN prior_filled_qty numeric(38, 10) NOT NULL DEFAULT 0")
    op.execute("DROP INDEX orders_open")
    op.execute("CREATE INDEX orders_open ON orders (state) "
               "WHERE state NOT IN ('FILLED', 'CANCELED', 'REJECTED', 'EXPIRED', 'FAILED', 'REPLACED')")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
