"""The gateway's hot statements read what they need, not whole tables: their plans as Postgres
makes them once the tables hold some history (EXPLAIN of the statement the store sends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import psycopg
import pytest

from db.gateway import GatewayStore
from db.migrate import drop_database_as, migrate_gateway
from sherwood.settings import Settings
from tests.db.plans import plan_nodes


@pytest.fixture(scope="module")
def gateway_url(settings: Settings) -> Iterator[str]:
    url = f"{settings.gateway_db_url_resolved()}_plans"
    migrate_gateway(url, settings.db_owner())
    yield url
    drop_database_as(url, settings.db_owner())


@pytest.fixture(scope="module")
async def store(gateway_url: str) -> AsyncIterator[GatewayStore]:
    s = GatewayStore.from_url(gateway_url)
    # a short history (the planner's statistics lag behind a growing table: at 300 rows it hashed
    # all of gateway_routes): 300 routed orders, their reports delivered but 20 (a burst the
    # loop has not sent yet)
    async with await psycopg.AsyncConnection.connect(
            s.engine.url.render_as_string(hide_password=False).replace("+psycopg", ""),
            autocommit=True) as conn:
        await conn.execute(
            """INSERT INTO gateway_routes (order_id, venue, policy, reason, symbol, side, order_type,
                                           time_in_force, qty)
               SELECT 'o' || n, 'v1', 'best', 'r', 'F', 'buy', 'market', 'day', 1
                 FROM generate_series(1, 300) n""")
        await conn.execute(
            """INSERT INTO gateway_orders (cl_ord_id, order_id, venue)
               SELECT 'o' || n, 'o' || n, 'v1' FROM generate_series(1, 300) n""")
        await conn.execute(
            """INSERT INTO gateway_reports (venue, exec_id, order_id, cl_ord_id, msg_type, payload,
                                            delivered_at)
               SELECT 'v1', 'e' || n, 'o' || n, 'o' || n, '8', '{}',
                      CASE WHEN n > 20 THEN now() END
                 FROM generate_series(1, 300) n""")
        await conn.execute("ANALYZE")
    yield s
    await s.dispose()


async def plan_of(store: GatewayStore, call: Any) -> list[str]:
    """The nodes (type, relation) of the plan of the statement ``call(store)`` sends."""
    sent: list[tuple[str, Mapping[str, Any] | None]] = []

    async def capture(statement: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        sent.append((statement, params))
        return []

    real = store.statements.rows
    store.statements.rows = capture  # type: ignore[method-assign]
    try:
        await call(store)
    finally:
        store.statements.rows = real  # type: ignore[method-assign]
    (statement, params), = sent
    (row,) = await real("EXPLAIN (FORMAT JSON) " + statement, params)
    return plan_nodes(row["QUERY PLAN"])


async def test_delivery_pass_probes_routes_by_key(store: GatewayStore) -> None:
    """The delivery loop's pass (one per order at load) looks up the route of each pending report
    by its key: it never reads the whole of gateway_routes (it grows with every order)."""
    nodes = await plan_of(store, lambda s: s.list_undelivered(500))
    assert "Seq Scan gateway_routes" not in nodes, nodes
    assert any(n.startswith("Index Scan gateway_routes") for n in nodes), nodes
