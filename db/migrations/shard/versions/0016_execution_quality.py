"""Best execution, stored per shard with the execution: each fill's route and quality.

Nullable columns on ``executions``, written with the execution row (in the booking's
transaction) from the route the gateway attached to the fill (``domain.execution.RouteFacts``)
by ``domain.execution_quality.fill_record``; NULL for everything else (acks, cancels, refused
fills, the firm's fractional fills, operators' resolutions, fills booked before this revision):

- ``route_venue``, ``route_order_id``, ``route_order_type``: the route the fill belongs to (a
  replacement's fills: the first order of its chain), its venue and order type at routing;
- ``nbbo_bid``, ``nbbo_ask``, ``nbbo_age_ms``: the NBBO the gateway saw at routing and its age
  (NULL when it had none usable);
- ``routed_at`` (the gateway's clock) and ``since_routed_ms``: routing to this fill's arrival at
  the gateway;
- ``improvement_per_share``: vs the far side of the NBBO at routing, for marketable orders (buy:
  ask - price, sell: price - bid); ``effective_spread``: 2 x |price - NBBO midpoint|.

The execution-quality report reads these (``db/execution_quality.py``), selecting by
``routed_at`` (partial index).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE executions
    ADD COLUMN route_venue           text,
    ADD COLUMN route_order_id        text,
    ADD COLUMN route_order_type      text,
    ADD COLUMN nbbo_bid              numeric(38, 10),
    ADD COLUMN nbbo_ask              numeric(38, 10),
    ADD COLUMN nbbo_age_ms           bigint,
    ADD COLUMN routed_at             timestamptz,
    ADD COLUMN since_routed_ms       bigint,
    ADD COLUMN improvement_per_share numeric(38, 10),
    ADD COLUMN effective_spread      numeric(38, 10);
CREATE INDEX executions_routed ON executions (routed_at) WHERE routed_at IS NOT NULL;
""")


def downgrade() -> None:
    op.execute("""
DROP INDEX executions_routed;
ALTER TABLE executions
    DROP COLUMN route_venue, DROP COLUMN route_order_id, DROP COLUMN route_order_type,
    DROP COLUMN nbbo_bid, DROP COLUMN nbbo_ask, DROP COLUMN nbbo_age_ms, DROP COLUMN routed_at,
    DROP COLUMN since_routed_ms, DROP COLUMN improvement_per_share, DROP COLUMN effective_spread;
""")
