"""Market-data schema: 1-minute OHLCV bars with VWAP and trade count (not a shard database).

``pv`` (sum of price x size) is kept so that partial bars written as deltas merge exactly.

Revision ID: m0001
"""

from __future__ import annotations

from alembic import op

revision = "m0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE bars_1min (
            symbol  text NOT NULL,
            t       timestamptz NOT NULL,
            o       numeric NOT NULL CHECK (o > 0),
            h       numeric NOT NULL,
            l       numeric NOT NULL,
            c       numeric NOT NULL,
            v       numeric NOT NULL CHECK (v >= 0),
            n       integer NOT NULL CHECK (n >= 0),
            pv      numeric NOT NULL,
            vw      numeric NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, t),
            CHECK (l <= h)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE bars_1min;")
