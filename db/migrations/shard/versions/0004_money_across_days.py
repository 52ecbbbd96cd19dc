"""Money across days: settlement rows without a customer movement, holds that remember their
sources, one table of shortfalls.

- ``settlements.ledger_txn_id`` may be NULL: an execution whose unsettled position was already
  consumed (bought shares sold before they settled, sale proceeds already spent) settles with
  no customer movement, and must still be recorded as settled.
- ``orders.hold_sources``: what is still held for an order, per source it came from (``cash``,
  ``provisional``, an unsettled proceeds lot ``cash_unsettled@YYYY-MM-DD``, for a sell
  ``shares`` / ``shares_unsettled``); a release gives each part back where it came from. NULL
  on orders held before this migration (released to ``cash``, as they were held).
- ``shortfalls``: cash a customer owes (an ACH deposit returned after its money was used, a buy
  filled above what was held), one row per cause, open until settled cash covers it. While an
  account has an open shortfall it may only close positions. The ``ach_shortfalls`` rows move
  here.

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = r"""
ALTER TABLE settlements ALTER COLUMN ledger_txn_id DROP NOT NULL;

ALTER TABLE orders ADD COLUMN hold_sources jsonb;

CREATE TABLE shortfalls (
    id          bigserial PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts(id),
    cause       text NOT NULL CHECK (cause IN ('ach_return', 'fill_above_hold')),
    transfer_id uuid REFERENCES transfers(id),
    order_id    uuid REFERENCES orders(id),
    venue       text,
    exec_id     text,
    amount      numeric(38, 10) NOT NULL CHECK (amount > 0),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    covered_at  timestamptz,
    UNIQUE (transfer_id),
    UNIQUE (venue, exec_id),
    CHECK ((cause = 'ach_return') = (transfer_id IS NOT NULL)),
    CHECK ((cause = 'fill_above_hold') = (exec_id IS NOT NULL AND order_id IS NOT NULL))
);
CREATE INDEX shortfalls_open ON shortfalls (account_id) WHERE covered_at IS NULL;

INSERT INTO shortfalls (account_id, cause, transfer_id, amount, created_at, covered_at)
SELECT account_id, 'ach_return', transfer_id, shortfall, created_at, resolved_at
  FROM ach_shortfalls WHERE shortfall > 0;
DROP TABLE ach_shortfalls;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
