"""Execution quality (SEC Rule 605-like) and routing disclosure (Rule 606-like), pure.

    RouteRow      a new order's route: venue, order type, side, qty, limit, NBBO at routing,
                  when routed (the gateway's ``gateway_routes``)
    FillRow       one fill booked in the ledger (a shard's ``executions``) with its order's
                  first-fill time as the gateway saw it
    fill_quality(route, fill) -> FillQuality    per fill: improvement per share vs the far side
                  (marketable orders only), effective and quoted spread
    report(routes, fills, venues, start, end) -> dict   the report (see ``report``)

Definitions: an order is *marketable* when it is a market order, or a limit order whose limit
reaches the far side of the NBBO at routing (buy: limit >= ask, sell: limit <= bid); price
improvement is measured only for marketable orders with a known NBBO (buy: ask - price, sell:
price - bid, per share; negative when worse). Effective spread = 2 x |price - midpoint|, quoted
spread = ask - bid, both share-weighted over fills with a known NBBO. Time to execution: routing
to the first fill. Fill rate: executed shares / ordered shares.

Deliberately not here: loading (db/execution_quality.py) and time zones (the caller passes the
period as instants and each route's month).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.routing import improvement_per_share

ZERO = Decimal(0)
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
_PER_SHARE = Decimal("0.000001")
_MONEY = Decimal("0.0001")
_PCT = Decimal("0.01")


@dataclass(frozen=True)
class RouteRow:
    order_id: str
    venue: str
    order_type: str
    side: str
    qty: Decimal
    limit_price: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    routed_at: datetime
    month: str  # YYYY-MM of routed_at in the report's time zone
    first_fill_at: datetime | None = None


@dataclass(frozen=True)
class FillRow:
    order_id: str
    qty: Decimal
    price: Decimal


@dataclass(frozen=True)
class FillQuality:
    improvement_per_share: Decimal | None  # None: not marketable, or no NBBO
    effective_spread: Decimal | None
    quoted_spread: Decimal | None


def marketable(r: RouteRow) -> bool:
    if r.order_type == "market":
        return True
    if r.order_type != "limit" or r.limit_price is None or r.bid is None or r.ask is None:
        return False
    return r.limit_price >= r.ask if r.side == "buy" else r.limit_price <= r.bid


def fill_quality(r: RouteRow, f: FillRow) -> FillQuality:
    if r.bid is None or r.ask is None or r.bid <= ZERO or r.ask < r.bid:
        return FillQuality(None, None, None)
    mid = (r.bid + r.ask) / 2
    pi = improvement_per_share(r.side, f.price, r.bid, r.ask) if marketable(r) else None
    return FillQuality(pi, 2 * abs(f.price - mid), r.ask - r.bid)


@dataclass
class _Acc:
    orders: int = 0
    shares: Decimal = ZERO
    executed_orders: int = 0
    executed_shares: Decimal = ZERO
    notional: Decimal = ZERO
    improvement: Decimal = ZERO
    improvement_shares: Decimal = ZERO
    measured_orders: int = 0  # executed marketable orders with an NBBO
    improved_orders: int = 0
    eff_spread: Decimal = ZERO
    quoted_spread: Decimal = ZERO
    spread_shares: Decimal = ZERO
    seconds_to_fill: float = 0.0
    timed_orders: int = 0

    def row(self) -> dict[str, object]:
        def q(v: Decimal, e: Decimal) -> str:
            return str(v.quantize(e))

        def avg(total: Decimal, n: Decimal, e: Decimal) -> str:
            return q(total / n, e) if n else q(ZERO, e)

        return {
            "orders": self.orders, "shares": str(self.shares),
            "executed_shares": str(self.executed_shares), "notional": q(self.notional, _MONEY),
            "avg_price_improvement_per_share": avg(self.improvement, self.improvement_shares,
                                                   _PER_SHARE),
            "total_price_improvement": q(self.improvement, _MONEY),
            "pct_orders_improved": avg(Decimal(self.improved_orders * 100),
                                       Decimal(self.measured_orders), _PCT),
            "avg_effective_spread": avg(self.eff_spread, self.spread_shares, _PER_SHARE),
            "avg_quoted_spread": avg(self.quoted_spread, self.spread_shares, _PER_SHARE),
            "avg_time_to_execution_s": round(self.seconds_to_fill / self.timed_orders, 6)
            if self.timed_orders else 0.0,
            "fill_rate": avg(self.executed_shares * 100, self.shares, _PCT),
        }


def _add(acc: _Acc, r: RouteRow, fills: Sequence[FillRow]) -> None:
    acc.orders += 1
    acc.shares += r.qty
    if not fills:
        return
    acc.executed_orders += 1
    order_pi, measured = ZERO, False
    for f in fills:
        acc.executed_shares += f.qty
        acc.notional += f.qty * f.price
        fq = fill_quality(r, f)
        if fq.improvement_per_share is not None:
            measured = True
            order_pi += f.qty * fq.improvement_per_share
            acc.improvement += f.qty * fq.improvement_per_share
            acc.improvement_shares += f.qty
        if fq.effective_spread is not None and fq.quoted_spread is not None:
            acc.eff_spread += f.qty * fq.effective_spread
            acc.quoted_spread += f.qty * fq.quoted_spread
            acc.spread_shares += f.qty
    if measured:
        acc.measured_orders += 1
        acc.improved_orders += order_pi > ZERO
    if r.first_fill_at is not None:
        acc.seconds_to_fill += max(0.0, (r.first_fill_at - r.routed_at).total_seconds())
        acc.timed_orders += 1


def report(routes: Iterable[RouteRow], fills: Iterable[FillRow], venues: Sequence[str],
           start: str, end: str) -> dict[str, object]:
    """Per venue and order type (every configured venue and order type has a row, zeros when
    it got no orders; a venue no longer configured that got orders has rows too), the totals
    over all fills, and the routing disclosure per month: per order type, the orders and the %
    of them sent to each venue."""
    by_order: dict[str, list[FillRow]] = defaultdict(list)
    for f in fills:
        by_order[f.order_id].append(f)
    accs: dict[tuple[str, str], _Acc] = {(v, t): _Acc() for v in venues for t in ORDER_TYPES}
    total = _Acc()
    months: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for r in routes:
        own = by_order.get(r.order_id, [])
        _add(accs.setdefault((r.venue, r.order_type), _Acc()), r, own)
        _add(total, r, own)
        per_venue = months[r.month][r.order_type]
        per_venue[r.venue] = per_venue.get(r.venue, 0) + 1
    all_venues = list(venues) + sorted({v for v, _ in accs} - set(venues))
    rows = [{"venue": v, "order_type": t, **accs[(v, t)].row()}
            for v in all_venues for t in ORDER_TYPES if (v, t) in accs]
    disclosure = []
    for month in sorted(months):
        for t in ORDER_TYPES:
            counts = months[month].get(t, {})
            n = sum(counts.values())
            if not n:
                continue
            disclosure.append({
                "month": month, "order_type": t, "orders": n,
                "venues": [{"venue": v, "orders": counts.get(v, 0),
                            "pct": str((Decimal(counts.get(v, 0) * 100) / n).quantize(_PCT))}
                           for v in all_venues]})
    return {"from": start, "to": end, "venues": all_venues, "rows": rows,
            "totals": total.row(), "routing_disclosure": disclosure}
