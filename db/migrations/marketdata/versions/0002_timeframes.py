"""Bars of every timeframe Alpaca serves, aggregated as ingest writes (not on each request).

``bars_5min``, ``bars_15min``, ``bars_1hour`` (UTC-aligned buckets) and ``bars_1day`` (the New
York calendar day, ``t`` its midnight in New York, as Alpaca stamps daily bars) have the columns
of ``bars_1min`` and are upserted by ingest with the same deltas, merged the same way (see
``marketdata.ingest``). Bars already in ``bars_1min`` are aggregated into them here once.

Revision ID: m0002
"""

from __future__ import annotations

from alembic import op

revision = "m0002"
down_revision = "m0001"
branch_labels = None
depends_on = None

BUCKETS = {
    "bars_5min": "date_bin('5 minutes', t, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    "bars_15min": "date_bin('15 minutes', t, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    "bars_1hour": "date_trunc('hour', t)",
    "bars_1day": "(date_trunc('day', t AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York')",
}


def upgrade() -> None:
    for table, bucket in BUCKETS.items():
        op.execute(f"CREATE TABLE {table} (LIKE bars_1min INCLUDING ALL)")
        op.execute(f"""
INSERT INTO {table} (symbol, t, o, h, l, c, v, n, pv, vw)
SELECT symbol, {bucket} AS b, (array_agg(o ORDER BY t))[1], max(h), min(l),
       (array_agg(c ORDER BY t DESC))[1], sum(v), sum(n), sum(pv),
       COALESCE(sum(pv) / NULLIF(sum(v), 0), (array_agg(c ORDER BY t DESC))[1])
FROM bars_1min GROUP BY symbol, b
""")


def downgrade() -> None:
    for table in BUCKETS:
        op.execute(f"DROP TABLE {table}")
