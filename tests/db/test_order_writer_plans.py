"""The order writer's booking of executions probes their key: it never reads the whole of
``executions`` (it grows with every fill) for the one or two fills of a transaction."""

from __future__ import annotations

import json

from db import sql
from db.order_writer import BOOK_EXECUTIONS
from db.router import ShardRouter
from tests.db.plans import plan_nodes, rolled_back


async def test_booking_a_fill_probes_the_executions_key(router: ShardRouter) -> None:
    async with rolled_back(router, 0) as conn:
        # a table of the shard's shape with some history (shadows it in this transaction:
        # pg_temp is searched first), its statistics up to date
        await sql.execute(conn, "CREATE TEMP TABLE executions (LIKE public.executions "
                                "INCLUDING DEFAULTS INCLUDING INDEXES) ON COMMIT DROP")
        await sql.execute(conn, """INSERT INTO executions (venue, exec_id, order_id, account_id,
                                       symbol, side, exec_type, qty)
                                   SELECT 'v1', 'e' || n, gen_random_uuid(), gen_random_uuid(),
                                          'F', 'buy', 'fill', 1
                                     FROM generate_series(1, 500) n""")
        await sql.execute(conn, "ANALYZE executions")
        booked = [{"v": "v1", "e": "e7", "l": None, "td": "2026-03-13", "sd": "2026-03-16"}]
        row = await sql.one(conn, "EXPLAIN (FORMAT JSON) " + BOOK_EXECUTIONS, {
            "booked": json.dumps(booked), "bv": ["v1"], "be": ["e7"]})
        nodes = plan_nodes(row["QUERY PLAN"])
        assert "Seq Scan executions" not in nodes, nodes
