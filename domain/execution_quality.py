"""Execution quality (SEC Rule 605-like) and routing disclosure (Rule 606-like), pure.

Per fill, at booking (stored on the shard with the execution, in the booking's transaction):

    fill_record(route, price) -> FillRecord | None   the fill's route (the gateway's
                  ``RouteFacts``: venue, order type, NBBO at routing and its age, when routed),
                  its price improvement per share vs the far side (marketable orders only) and
                  its effective spread

Aggregated over every shard (the back office's report, ``db/execution_quality.py``):

    RouteRow      an order routed in the period (the gateway's ``gateway_routes``), with whether
                  the venue rejected or canceled it: the orders, ordered shares and rates
    FillRow       one fill booked in the ledger with the quality stored with it (a shard's
                  ``executions``): everything about what executed
    report(routes, fills, venues, start, end) -> dict   the report (see ``report``)

Definitions: an order is *marketable* when it is a market order, or a limit order whose limit
reaches the far side of the NBBO at routing (buy: limit >= ask, sell: limit <= bid); price
improvement is measured only for marketable orders with a known NBBO (buy: ask - price, sell:
price - bid, per share; negative when worse). Effective spread = 2 x |price - midpoint|, quoted
spread = ask - bid, both share-weighted over fills with a known NBBO. Time to execution: routing
to the first fill's arrival at the gateway. Fill rate: executed shares / ordered shares (a
replacement's fills count for the route it belongs to, against the quantity first routed).
Reject and cancel rates: orders the venue rejected / canceled (at our request or its own) over
orders routed.

Deliberately not here: loading (db/execution_quality.py) and time zones (the caller passes the
period as instants and each route's month and each fill's day).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.execution import RouteFacts
from domain.money import column_number
from domain.routing import improvement_per_share

ZERO = Decimal(0)
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
_PER_SHARE = Decimal("0.000001")
_MONEY = Decimal("0.0001")
_PCT = Decimal("0.01")
_MAX_TEXT = 64
_MAX_MS = 10 ** 12  # about 31 years: beyond, the number is not a duration we trust


# ============================================================================ per fill


@dataclass(frozen=True)
class FillRecord:
    """A fill's route and quality as stored with its execution (shard migration 0016)."""

    route_venue: str
    route_order_id: str
    route_order_type: str
    routed_at: datetime
    nbbo_bid: Decimal | None = None  # None: no usable NBBO at routing
    nbbo_ask: Decimal | None = None
    nbbo_age_ms: int | None = None
    since_routed_ms: int | None = None
    improvement_per_share: Decimal | None = None  # None: not marketable, or no NBBO
    effective_spread: Decimal | None = None  # None: no NBBO


def marketable(order_type: str, side: str, limit: Decimal | None, bid: Decimal | None,
               ask: Decimal | None) -> bool:
    if order_type == "market":
        return True
    if order_type != "limit" or limit is None or bid is None or ask is None:
        return False
    return limit >= ask if side == "buy" else limit <= bid


def _ms(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_MS else None


def _text(v: object) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= _MAX_TEXT else None


def fill_record(route: RouteFacts, price: Decimal) -> FillRecord | None:
    """The quality of a fill at ``price`` on an order routed as ``route`` says. None when the
    route is unusable (no venue, order, order type or routing time); an NBBO that is not one
    (missing, not positive, crossed) is recorded as none, and so is any number beyond what a
    column holds."""
    venue, order_id = _text(route.venue), _text(route.route_order_id)
    order_type, side = _text(route.order_type), route.side
    try:
        routed_at = datetime.fromisoformat(route.routed_at) if route.routed_at else None
    except (TypeError, ValueError):
        routed_at = None
    if venue is None or order_id is None or order_type is None or routed_at is None \
            or routed_at.tzinfo is None or side not in ("buy", "sell"):
        return None
    bid, ask = column_number(route.bid), column_number(route.ask)
    if bid is None or ask is None or bid <= ZERO or ask < bid:
        return FillRecord(venue, order_id, order_type, routed_at,
                          since_routed_ms=_ms(route.since_routed_ms))
    pi = (improvement_per_share(side, price, bid, ask)
          if marketable(order_type, side, column_number(route.limit_price), bid, ask) else None)
    return FillRecord(venue, order_id, order_type, routed_at, bid, ask, _ms(route.quote_age_ms),
                      _ms(route.since_routed_ms), pi, 2 * abs(price - (bid + ask) / 2))


# ============================================================================ the report


@dataclass(frozen=True)
class RouteRow:
    order_id: str
    venue: str
    order_type: str
    qty: Decimal
    month: str  # YYYY-MM of routed_at in the report's time zone
    rejected: bool = False
    canceled: bool = False


@dataclass(frozen=True)
class FillRow:
    """A fill booked in the ledger, with the quality stored with it."""

    route_order_id: str
    venue: str
    order_type: str
    qty: Decimal
    price: Decimal
    day: str  # YYYY-MM-DD of routed_at in the report's time zone
    improvement_per_share: Decimal | None = None
    effective_spread: Decimal | None = None
    quoted_spread: Decimal | None = None
    since_routed_ms: int | None = None


@dataclass
class _Acc:
    orders: int = 0
    shares: Decimal = ZERO
    rejected: int = 0
    canceled: int = 0
    executed_shares: Decimal = ZERO
    notional: Decimal = ZERO
    improvement: Decimal = ZERO
    improvement_shares: Decimal = ZERO
    measured_orders: int = 0  # executed marketable orders with an NBBO
    improved_orders: int = 0
    eff_spread: Decimal = ZERO
    quoted_spread: Decimal = ZERO
    spread_shares: Decimal = ZERO
    ms_to_fill: int = 0
    timed_orders: int = 0

    def route(self, r: RouteRow) -> None:
        self.orders += 1
        self.shares += r.qty
        self.rejected += r.rejected
        self.canceled += r.canceled

    def executed(self, fills: Sequence[FillRow]) -> None:
        """The fills of one route."""
        order_pi, measured = ZERO, False
        for f in fills:
            self.executed_shares += f.qty
            self.notional += f.qty * f.price
            if f.improvement_per_share is not None:
                measured = True
                order_pi += f.qty * f.improvement_per_share
                self.improvement += f.qty * f.improvement_per_share
                self.improvement_shares += f.qty
            if f.effective_spread is not None and f.quoted_spread is not None:
                self.eff_spread += f.qty * f.effective_spread
                self.quoted_spread += f.qty * f.quoted_spread
                self.spread_shares += f.qty
        if measured:
            self.measured_orders += 1
            self.improved_orders += order_pi > ZERO
        times = [f.since_routed_ms for f in fills if f.since_routed_ms is not None]
        if times:
            self.ms_to_fill += min(times)
            self.timed_orders += 1

    def row(self) -> dict[str, object]:
        def q(v: Decimal, e: Decimal) -> str:
            return str(v.quantize(e))

        def avg(total: Decimal, n: Decimal | int, e: Decimal) -> str:
            return q(total / n, e) if n else q(ZERO, e)

        return {
            "orders": self.orders, "shares": str(self.shares),
            "executed_shares": str(self.executed_shares), "notional": q(self.notional, _MONEY),
            "avg_price_improvement_per_share": avg(self.improvement, self.improvement_shares,
                                                   _PER_SHARE),
            "total_price_improvement": q(self.improvement, _MONEY),
            "pct_orders_improved": avg(Decimal(self.improved_orders * 100), self.measured_orders,
                                       _PCT),
            "avg_effective_spread": avg(self.eff_spread, self.spread_shares, _PER_SHARE),
            "avg_quoted_spread": avg(self.quoted_spread, self.spread_shares, _PER_SHARE),
            "avg_time_to_execution_s": round(self.ms_to_fill / self.timed_orders / 1000, 6)
            if self.timed_orders else 0.0,
            "fill_rate": avg(self.executed_shares * 100, self.shares, _PCT),
            "reject_rate": avg(Decimal(self.rejected * 100), self.orders, _PCT),
            "cancel_rate": avg(Decimal(self.canceled * 100), self.orders, _PCT),
        }


def report(routes: Iterable[RouteRow], fills: Iterable[FillRow], venues: Sequence[str],
           start: str, end: str) -> dict[str, object]:
    """Per venue and order type (every configured venue and order type has a row, zeros when
    it got no orders; a venue no longer configured that got orders has rows too): the orders
    routed and their rates from ``routes``, everything executed from ``fills`` under the venue
    and order type stored with them -- so the totals are the fills booked, whether or not the
    route is in ``routes``. Also the routing disclosure per month (per order type, the orders
    and the % of them sent to each venue) and the fills per day and venue."""
    accs: dict[tuple[str, str], _Acc] = {(v, t): _Acc() for v in venues for t in ORDER_TYPES}
    total = _Acc()
    months: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for r in routes:
        accs.setdefault((r.venue, r.order_type), _Acc()).route(r)
        total.route(r)
        per_venue = months[r.month][r.order_type]
        per_venue[r.venue] = per_venue.get(r.venue, 0) + 1
    by_route: dict[str, list[FillRow]] = defaultdict(list)
    days: dict[tuple[str, str], list[FillRow]] = defaultdict(list)
    for f in fills:
        by_route[f.route_order_id].append(f)
        days[(f.day, f.venue)].append(f)
    for own in by_route.values():
        accs.setdefault((own[0].venue, own[0].order_type), _Acc()).executed(own)
        total.executed(own)
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
    daily = [{"day": d, "venue": v, **_day(own)} for (d, v), own in sorted(days.items())]
    return {"from": start, "to": end, "venues": all_venues, "rows": rows,
            "totals": total.row(), "routing_disclosure": disclosure, "daily": daily}


def _day(fills: Sequence[FillRow]) -> dict[str, object]:
    """One day's fills at one venue (by the day they were routed)."""
    shares = sum((f.qty for f in fills), ZERO)
    measured = [(f.qty, f.improvement_per_share) for f in fills
                if f.improvement_per_share is not None]
    pi = sum((q * p for q, p in measured), ZERO)
    pi_shares = sum((q for q, _ in measured), ZERO)
    return {"fills": len(fills), "executed_shares": str(shares),
            "notional": str(sum((f.qty * f.price for f in fills), ZERO).quantize(_MONEY)),
            "total_price_improvement": str(pi.quantize(_MONEY)),
            "avg_price_improvement_per_share":
                str((pi / pi_shares if pi_shares else ZERO).quantize(_PER_SHARE))}
