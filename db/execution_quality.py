"""Loads the execution-quality report (domain/execution_quality.py) for a period: the back
office's aggregation of the quality stored per shard with every fill.

Where the data lives, and why it is read from two places: everything about what executed --
each fill booked in the ledger, its route (venue, order type; a replacement's fills the route of
the first order of its chain), the NBBO at routing, its price improvement, effective spread and
time since routing -- is stored on the customer's shard with the execution, in the booking's
transaction (shard migration 0016), so the report's totals are the fills the customers were
booked. The orders that got no fill exist only where they were routed: the gateway's
``gateway_routes`` (orders, ordered shares, the fill rate's denominator) and ``gateway_reports``
(whether the venue rejected or canceled each).

    async shard_fills(router, start, end, symbol=None) -> list[FillRow]   every shard's fills
    async gateway_routes(gateway, start, end, symbol=None) -> list[RouteRow]
    async load_report(gateway, router, venues, start, end, symbol=None) -> dict

``start``/``end`` are New York business dates, both included; both sides select by the time of
routing (the gateway's clock, stored with the fill). Read-only. Fills booked before shard
migration 0016 carry no route and are not in the report.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from db import sql
from db.gateway import GatewayStore
from db.router import ShardRouter
from domain.execution_quality import FillRow, RouteRow, report
from fix.codes import ExecType

NY = ZoneInfo("America/New_York")
MAX_DAYS = 366  # a longer period is refused by the callers (bounded input)

# Rejected: the venue refused the order. Canceled: an order of the route's chain canceled at the
# venue, at our request or its own -- not our own expiry of a DAY order at the close (":X").
_ROUTES = """
SELECT r.order_id, r.venue, r.order_type, r.qty,
       to_char(r.routed_at AT TIME ZONE 'America/New_York', 'YYYY-MM') AS month,
       EXISTS (SELECT 1 FROM gateway_reports g
                WHERE g.order_id = r.order_id AND g.msg_type = '8'
                  AND g.payload->>'exec_type' = :rejected) AS rejected,
       EXISTS (SELECT 1 FROM gateway_reports g
                WHERE g.order_id = ANY(ARRAY[r.order_id] || ARRAY(
                          SELECT o.cl_ord_id FROM gateway_orders o
                           WHERE o.route_order_id = r.order_id))
                  AND g.msg_type = '8' AND g.payload->>'exec_type' = :canceled
                  AND strpos(g.cl_ord_id, :expiry) = 0) AS canceled
  FROM gateway_routes r
 WHERE r.routed_at >= :s AND r.routed_at < :e AND (CAST(:sym AS text) IS NULL OR r.symbol = :sym)
 ORDER BY r.routed_at
"""

_FILLS = """
SELECT route_order_id, route_venue, route_order_type, qty, price, improvement_per_share,
       effective_spread, nbbo_ask - nbbo_bid AS quoted_spread, since_routed_ms,
       to_char(routed_at AT TIME ZONE 'America/New_York', 'YYYY-MM-DD') AS day
  FROM executions
 WHERE routed_at >= :s AND routed_at < :e AND exec_type = 'fill' AND qty > 0
   AND price IS NOT NULL AND ledger_txn_id IS NOT NULL
   AND (CAST(:sym AS text) IS NULL OR symbol = :sym)
"""


def period(start: date, end: date) -> tuple[datetime, datetime]:
    """The instants of New York business dates ``start`` .. ``end`` (inclusive)."""
    return (datetime.combine(start, time(0), NY),
            datetime.combine(end + timedelta(days=1), time(0), NY))


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


async def shard_fills(router: ShardRouter, start: date, end: date,
                      symbol: str | None = None) -> list[FillRow]:
    """Every shard's fills booked in the ledger for orders routed in the period, with the
    quality stored with each (the shards are read concurrently)."""
    s, e = period(start, end)

    async def one(n: int) -> list[FillRow]:
        async with router.engine(n).connect() as conn:
            return [FillRow(f["route_order_id"], f["route_venue"], f["route_order_type"],
                            Decimal(f["qty"]), Decimal(f["price"]), f["day"],
                            _dec(f["improvement_per_share"]), _dec(f["effective_spread"]),
                            _dec(f["quoted_spread"]), f["since_routed_ms"])
                    for f in await sql.rows(conn, _FILLS, {"s": s, "e": e, "sym": symbol})]

    per_shard = await asyncio.gather(*(one(n) for n in range(router.shard_count)))
    return [f for fills in per_shard for f in fills]


async def gateway_routes(gateway: GatewayStore, start: date, end: date,
                         symbol: str | None = None) -> list[RouteRow]:
    """The orders routed in the period, with whether the venue rejected or canceled each."""
    s, e = period(start, end)
    raw = await gateway.read(_ROUTES, {"s": s, "e": e, "sym": symbol,
                                       "rejected": ExecType.REJECTED.value,
                                       "canceled": ExecType.CANCELED.value, "expiry": ":X"})
    return [RouteRow(r["order_id"], r["venue"], r["order_type"], Decimal(r["qty"]), r["month"],
                     bool(r["rejected"]), bool(r["canceled"])) for r in raw]


async def load_report(gateway: GatewayStore, router: ShardRouter, venues: list[str], start: date,
                      end: date, symbol: str | None = None) -> dict[str, object]:
    routes, fills = await asyncio.gather(gateway_routes(gateway, start, end, symbol),
                                         shard_fills(router, start, end, symbol))
    rep = report(routes, fills, venues, start.isoformat(), end.isoformat())
    if symbol is not None:
        rep["symbol"] = symbol
    return rep
