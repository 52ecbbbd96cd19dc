"""Reading Postgres plans in tests: the nodes of an ``EXPLAIN (FORMAT JSON)`` answer."""

from __future__ import annotations

import json
from typing import Any


def plan_nodes(explained: Any) -> list[str]:
    """The nodes ("<type> <relation>") of the plan in the ``QUERY PLAN`` value of an
    ``EXPLAIN (FORMAT JSON)`` row (text or already decoded), depth first."""
    plan = json.loads(explained) if isinstance(explained, str) else explained

    def walk(node: dict[str, Any]) -> list[str]:
        here = [f"{node['Node Type']} {node.get('Relation Name', '')}".strip()]
        return here + [n for child in node.get("Plans", []) for n in walk(child)]

    return walk(plan[0]["Plan"])
