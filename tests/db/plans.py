"""Reading Postgres plans in tests: the nodes of an ``EXPLAIN (FORMAT JSON)`` answer, and a
shard connection whose every change is rolled back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy.util import greenlet_spawn

from db.router import ShardRouter


@asynccontextmanager
async def rolled_back(router: ShardRouter, shard: int) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The psycopg connection of one checkout of ``shard``'s pool, inside a transaction that is
    rolled back whatever happens: a test may fill or shadow (``CREATE TEMP TABLE``) the shard's
    tables to see how the database runs a statement, and leaves nothing behind."""
    fairy = await router.engine(shard).raw_connection()
    conn = fairy.driver_connection
    assert conn is not None
    try:
        async with conn.transaction(force_rollback=True):
            yield conn
    finally:
        await greenlet_spawn(fairy.close)


def plan_nodes(explained: Any) -> list[str]:
    """The nodes ("<type> <relation>") of the plan in the ``QUERY PLAN`` value of an
    ``EXPLAIN (FORMAT JSON)`` row (text or already decoded), depth first."""
    plan = json.loads(explained) if isinstance(explained, str) else explained

    def walk(node: dict[str, Any]) -> list[str]:
        here = [f"{node['Node Type']} {node.get('Relation Name', '')}".strip()]
        return here + [n for child in node.get("Plans", []) for n in walk(child)]

    return walk(plan[0]["Plan"])
