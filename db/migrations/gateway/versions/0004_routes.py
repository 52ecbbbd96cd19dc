"""Best execution: each new order's route as decided (venue, policy and why), with the NBBO at
routing time and its age; execution quality per fill is computed from this row and the fills
in ``gateway_reports`` (db/execution_quality.py).

Revision ID: g0004
"""

from __future__ import annotations

from alembic import op

revision = "g0004"
down_revision = "g0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE gateway_routes (
            order_id      text PRIMARY KEY,
            venue         text NOT NULL,
            policy        text NOT NULL,
            reason        text NOT NULL,
            symbol        text NOT NULL,
            side          text NOT NULL CHECK (side IN ('buy', 'sell')),
            order_type    text NOT NULL,
            time_in_force text NOT NULL,
            qty           numeric NOT NULL,
            limit_price   numeric,
            bid           numeric,
            ask           numeric,
            quote_age_ms  bigint,
            routed_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX gateway_routes_time ON gateway_routes (routed_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE gateway_routes;")
