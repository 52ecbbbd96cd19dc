"""End-of-day snapshots at the close: closing prices and positions beside equity.

- ``closing_prices``: one price per (business date, symbol) of the shard, written once by the
  back office's end-of-day snapshot: the close of the symbol's last 1-minute bar of the session
  (``source = 'bar'``), else the shard's last fill before the close (``'last_fill'``).
  ``GET /v2/positions`` answers it as ``lastday_price``.
- ``position_snapshots``: each account's share positions at the close, valued at those prices
  (``GET /v2/account/portfolio/history`` reads the day's figures from here and from
  ``equity_snapshots``).
- ``equity_snapshots.as_of``: the instant the snapshot values (the session's close, or the run's
  time when that is earlier); balances are the ledger's as of that instant. Older rows have none.

All three tables are append-only (the database refuses UPDATE, DELETE and TRUNCATE): a snapshot
is a record of what was, never corrected in place.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE closing_prices (
    business_date date NOT NULL,
    symbol        text NOT NULL,
    price         numeric(38, 10) NOT NULL CHECK (price > 0),
    source        text NOT NULL CHECK (source IN ('bar', 'last_fill')),
    taken_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_date, symbol)
);
CREATE TABLE position_snapshots (
    account_id    uuid NOT NULL REFERENCES accounts(id),
    business_date date NOT NULL,
    symbol        text NOT NULL,
    qty           numeric(38, 10) NOT NULL,
    close_price   numeric(38, 10),
    market_value  numeric(38, 10) NOT NULL,
    PRIMARY KEY (account_id, business_date, symbol)
);
ALTER TABLE equity_snapshots ADD COLUMN as_of timestamptz;
CREATE TRIGGER closing_prices_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON closing_prices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER position_snapshots_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON position_snapshots FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
CREATE TRIGGER equity_snapshots_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON equity_snapshots FOR EACH STATEMENT EXECUTE FUNCTION refuse_modification();
""")


def downgrade() -> None:
    raise NotImplementedError("the shard schema holds the ledger of record; it is never dropped")
