"""Best execution, continued: a replacement's route, and the recent routes per venue.

- ``gateway_orders.route_order_id``: for a cancel/replace request (a replacement's ClOrdID),
  the order that was routed -- the first of the chain -- so the replacement's fills count for
  that route (the live venue scores, the fills' route facts the shards store). NULL for every
  other row (a new order's route is its own).
- ``gateway_routes (venue, routed_at)``: a restarted gateway reads each venue's last routes to
  warm its venue scores.

Revision ID: g0005
"""

from __future__ import annotations

from alembic import op

revision = "g0005"
down_revision = "g0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE gateway_orders ADD COLUMN route_order_id text;
        CREATE INDEX gateway_orders_route ON gateway_orders (route_order_id)
            WHERE route_order_id IS NOT NULL;
        CREATE INDEX gateway_routes_venue_time ON gateway_routes (venue, routed_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX gateway_routes_venue_time;
        DROP INDEX gateway_orders_route;
        ALTER TABLE gateway_orders DROP COLUMN route_order_id;
        """
    )
