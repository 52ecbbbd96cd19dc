"""Historical trades (Alpaca's ``/v2/stocks/trades``): every trade ingest accepts, kept for
``marketdata_trade_retention_s`` (ingest deletes older ones).

Revision ID: m0003
"""

from __future__ import annotations

from alembic import op

revision = "m0003"
down_revision = "m0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE trades (
    symbol  text NOT NULL,
    t       timestamptz NOT NULL,
    i       bigint NOT NULL,
    x       text NOT NULL,
    p       numeric NOT NULL CHECK (p > 0),
    s       bigint NOT NULL CHECK (s > 0),
    z       text NOT NULL,
    PRIMARY KEY (symbol, t, i)
)""")
    op.execute("CREATE INDEX trades_t ON trades (t)")  # the retention sweep


def downgrade() -> None:
    op.execute("DROP TABLE trades")
