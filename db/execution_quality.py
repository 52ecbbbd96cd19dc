"""Loads the execution-quality report (domain/execution_quality.py) for a period.

Where the data lives, and why it is read from two places: the route and the NBBO at routing are
known only to the execution gateway (``gateway_routes``, written before the order is sent), and
so is when the venue's first fill arrived (``gateway_reports.received_at``, the same database
clock as ``routed_at``). The fills themselves are read from the ledger's side -- every shard's
``executions`` booked in a ledger transaction -- so the report's totals are the fills the
customers were booked, never a venue report the order core refused.

    async load_report(gateway, router, venues, start, end, symbol=None) -> dict

``start``/``end`` are New York business dates, both included. Read-only.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from db import sql
from db.gateway import GatewayStore
from db.router import ShardRouter
from domain.execution_quality import FillRow, RouteRow, report

NY = ZoneInfo("America/New_York")
MAX_DAYS = 366  # a longer period is refused by the callers (bounded input)

_ROUTES = """
SELECT r.order_id, r.venue, r.order_type, r.side, r.qty, r.limit_price, r.bid, r.ask,
       r.routed_at, to_char(r.routed_at AT TIME ZONE 'America/New_York', 'YYYY-MM') AS month,
       (SELECT min(g.received_at) FROM gateway_reports g
         WHERE g.order_id = r.order_id AND g.cl_ord_id = r.order_id AND g.msg_type = '8'
           AND g.payload->>'exec_type' = 'F') AS first_fill_at
  FROM gateway_routes r
 WHERE r.routed_at >= :s AND r.routed_at < :e AND (CAST(:sym AS text) IS NULL OR r.symbol = :sym)
 ORDER BY r.routed_at
"""

_FILLS = """
SELECT order_id::text AS order_id, qty, price FROM executions
 WHERE order_id = ANY(CAST(:ids AS uuid[])) AND exec_type = 'fill' AND qty > 0
   AND price IS NOT NULL AND ledger_txn_id IS NOT NULL
"""


def period(start: date, end: date) -> tuple[datetime, datetime]:
    """The instants of New York business dates ``start`` .. ``end`` (inclusive)."""
    return (datetime.combine(start, time(0), NY),
            datetime.combine(end + timedelta(days=1), time(0), NY))


def _uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


async def load_report(gateway: GatewayStore, router: ShardRouter, venues: list[str], start: date,
                      end: date, symbol: str | None = None) -> dict[str, object]:
    s, e = period(start, end)
    raw = await gateway.read(_ROUTES, {"s": s, "e": e, "sym": symbol})
    routes = [RouteRow(r["order_id"], r["venue"], r["order_type"], r["side"], Decimal(r["qty"]),
                       _dec(r["limit_price"]), _dec(r["bid"]), _dec(r["ask"]), r["routed_at"],
                       r["month"], r["first_fill_at"]) for r in raw]
    ids = [r.order_id for r in routes if _uuid(r.order_id)]
    fills: list[FillRow] = []
    if ids:
        for n in range(router.shard_count):
            async with router.engine(n).connect() as conn:
                fills += [FillRow(f["order_id"], Decimal(f["qty"]), Decimal(f["price"]))
                          for f in await sql.rows(conn, _FILLS, {"ids": ids})]
    rep = report(routes, fills, venues, start.isoformat(), end.isoformat())
    if symbol is not None:
        rep["symbol"] = symbol
    return rep
