"""Assets are neither marginable nor shortable (the firm offers neither); end-of-day equity.

- ``assets``: ``marginable``, ``shortable``, ``easy_to_borrow`` false for every asset (0001 seeded
  them true), and CHECKed so: the firm offers no margin and no short selling.
- ``equity_snapshots``: each account's equity at a session's close, written once per
  (account, business date) by the back office (:mod:`db.equity`); ``GET /v2/account`` answers
  the latest one before today as ``last_equity``. Never updated (a rerun inserts nothing).

Revision ID: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE assets SET marginable = false, shortable = false, easy_to_borrow = false")
    op.execute("ALTER TABLE assets ADD CONSTRAINT assets_no_margin_no_short "
               "CHECK (NOT marginable AND NOT shortable AND NOT easy_to_borrow)")
    op.execute("""
CREATE TABLE equity_snapshots (
    account_id        uuid NOT NULL REFERENCES accounts(id),
    business_date     date NOT NULL,
    equity            numeric(38, 10) NOT NULL,
    cash              numeric(38, 10) NOT NULL,
    long_market_value numeric(38, 10) NOT NULL,
    taken_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, business_date)
)""")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
