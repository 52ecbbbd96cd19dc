"""Venue choice for an order that names no venue: pure functions over recent venue quality.

    VenueStats(venue, connected, orders, decided, filled, rejected, canceled,
               improvement_per_share, improved_shares, latency_s)
    RoutingWeights(...)                      how much each quality counts, exploration, warm-up
    score(stats, weights) -> float           higher is better
    choose_venue(policy, venues, *, draw, turn, weights) -> RoutingChoice | None
    size_bucket(qty) -> str                  Rule 605's order-size categories
    scoped(by_scope, min_orders) -> (scope, stats)   per symbol / size bucket where data suffices
    VenueQuality(window)                     the recent outcomes per venue -> VenueStats

Policies: ``smart`` (by score, with warm-up and exploration), ``round_robin`` and ``first`` (the
first connected venue in configured order); the last two stay for comparison (bench/routing.py).

Smart routing, in order:
1. only connected venues are candidates; none connected -> None (the caller's "no venue" error,
   retryable: the order waits for a session, it never loops between venues);
2. warm-up: a candidate with fewer than ``min_orders`` recent orders gets the order (the least
   observed first), so every venue has a score before scores decide;
3. exploration: with probability ``explore_rate`` (``draw`` is the caller's uniform draw in
   [0, 1), from a seeded or injected RNG) the least-observed candidate gets it, so a venue that
   is behind keeps a current score;
4. otherwise the best score wins (ties: configured order).

The score adds the average price improvement per share (in cents), the fill rate and subtracts
the reject rate and the average time to first fill, each times its weight. The stats scored are
the order's symbol's where every connected venue has ``scope_min_orders`` decided orders in it,
else its size bucket's on the same terms, else venue-wide (:func:`scoped`). The cancel rate
(orders canceled at the venue / routed) is reported, not scored: a cancel is mostly the
customer's doing.

Deliberately not here: re-routing. A venue's refusal (a reject) or a halt ends the order where it
is (the order workflow decides its end state); the outcome only lowers the venue's score for the
next order. Nothing here does I/O or reads a clock: the gateway passes times in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

ROUTING_POLICIES = ("smart", "round_robin", "first")
ZERO = Decimal(0)


@dataclass(frozen=True)
class VenueStats:
    """A venue's recent record: ``orders`` routed there in the window, ``decided`` of them with
    an outcome (a fill, a reject or an end), ``filled`` with at least one fill, ``rejected``
    refused; the average improvement per share over ``improved_shares`` shares filled with a
    known NBBO, and the average seconds from routing to the first fill."""

    venue: str
    connected: bool
    orders: int = 0
    decided: int = 0
    filled: int = 0
    rejected: int = 0
    canceled: int = 0
    improvement_per_share: Decimal = ZERO
    improved_shares: Decimal = ZERO
    latency_s: float = 0.0

    @property
    def fill_rate(self) -> float:
        return self.filled / self.decided if self.decided else 0.0

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.decided if self.decided else 0.0

    @property
    def cancel_rate(self) -> float:
        """Orders canceled at the venue / orders routed there. Not in the score: a cancel is
        mostly the customer's doing; it is reported (stats, the execution-quality report)."""
        return self.canceled / self.orders if self.orders else 0.0


@dataclass(frozen=True)
class RoutingWeights:
    improvement_per_cent: float = 1.0  # score per cent of improvement per share
    fill_rate: float = 1.0
    reject_rate: float = 2.0
    latency_per_s: float = 1.0
    explore_rate: float = 0.05
    min_orders: int = 5
    scope_min_orders: int = 20  # per-symbol / per-size scores from this many decided orders


@dataclass(frozen=True)
class RoutingChoice:
    venue: str
    reason: str  # warm_up | explore | best | round_robin | first


def score(s: VenueStats, w: RoutingWeights) -> float:
    cents = float(s.improvement_per_share * 100)
    return (w.improvement_per_cent * cents + w.fill_rate * s.fill_rate
            - w.reject_rate * s.reject_rate - w.latency_per_s * s.latency_s)


def choose_venue(policy: str, venues: Sequence[VenueStats], *, draw: float = 1.0, turn: int = 0,
                 weights: RoutingWeights = RoutingWeights()) -> RoutingChoice | None:
    """The venue for the next order (see the module docstring); None when none is connected.
    ``turn`` is the round-robin counter; ``draw`` the exploration draw in [0, 1)."""
    if policy not in ROUTING_POLICIES:
        raise ValueError(f"unknown routing policy {policy!r} (one of {ROUTING_POLICIES})")
    up = [v for v in venues if v.connected]
    if not up:
        return None
    if policy == "first":
        return RoutingChoice(up[0].venue, "first")
    if policy == "round_robin":
        return RoutingChoice(up[turn % len(up)].venue, "round_robin")
    least = min(up, key=lambda v: v.orders)  # min keeps the first of equals: configured order
    if least.orders < weights.min_orders:
        return RoutingChoice(least.venue, "warm_up")
    if len(up) > 1 and draw < weights.explore_rate:
        return RoutingChoice(least.venue, "explore")
    best = max(up, key=lambda v: score(v, weights))  # max keeps the first of equals
    return RoutingChoice(best.venue, "best")


# ============================================================================ scopes

# Rule 605's order-size categories, in shares: a venue can be good at small orders and poor at
# large ones. Upper bounds (exclusive) and names; the last bucket is open.
SIZE_BUCKETS: tuple[tuple[Decimal, str], ...] = (
    (Decimal(100), "<100"), (Decimal(500), "100-499"), (Decimal(2000), "500-1999"),
    (Decimal(5000), "2000-4999"))
LARGEST_BUCKET = "5000+"
SCOPES = ("symbol", "size", "venue")  # finest first


def size_bucket(qty: Decimal) -> str:
    """The order-size bucket of ``qty`` shares (``SIZE_BUCKETS``)."""
    for bound, name in SIZE_BUCKETS:
        if qty < bound:
            return name
    return LARGEST_BUCKET


def scoped(by_scope: Mapping[str, Sequence[VenueStats]], min_orders: int,
           ) -> tuple[str, Sequence[VenueStats]]:
    """The scope to score by, and its stats: the finest of ``SCOPES`` (the order's symbol, then
    its size bucket) where every connected venue has at least ``min_orders`` decided orders;
    else the venue-wide stats (``by_scope["venue"]``, always there). One scope for every
    venue, so scores compare like with like: a venue's per-symbol score is never weighed against
    another's venue-wide one. ``min_orders`` <= 0 turns scopes off (venue-wide always)."""
    if min_orders > 0:
        for name in SCOPES[:-1]:
            stats = by_scope.get(name)
            up = [v for v in stats or () if v.connected]
            if up and all(v.decided >= min_orders for v in up):
                return name, stats  # type: ignore[return-value]
    return "venue", by_scope["venue"]


# ============================================================================ recent outcomes


def improvement_per_share(side: str, px: Decimal, bid: Decimal, ask: Decimal) -> Decimal:
    """Price improvement per share of a marketable order vs the far side of the NBBO at routing
    (buy: ask - price, sell: price - bid); negative when it executed outside the quote."""
    return ask - px if side == "buy" else px - bid


@dataclass
class Outcome:
    """One routed order's outcome so far (its replacements' included)."""

    venue: str
    side: str
    routed_at: float
    bid: Decimal | None = None
    ask: Decimal | None = None
    symbol: str = ""
    bucket: str = ""
    shares: Decimal = ZERO
    improvement: Decimal = ZERO  # $ total over the shares filled with a known NBBO
    improved_shares: Decimal = ZERO
    first_fill_s: float | None = None
    rejected: bool = False
    canceled: bool = False
    ended: bool = False

    @property
    def decided(self) -> bool:
        """A fill, a refusal or an end the venue decided (a customer's cancel is not one: a
        resting order canceled by its owner says nothing about the venue's fill rate)."""
        return self.shares > ZERO or self.rejected or self.ended


@dataclass
class VenueQuality:
    """The last ``window`` routed orders per venue and their outcomes (in memory; the durable
    record is the gateway's ``gateway_routes`` + ``gateway_reports``, which warm it at start).

    An order's replacements (``replaced``: a new ClOrdID after the venue's Replaced) share its
    outcome: their fills, cancels and ends count for the venue the order was routed to."""

    window: int = 100
    _by_venue: dict[str, deque[str]] = field(default_factory=dict)
    _outcomes: dict[str, Outcome] = field(default_factory=dict)
    _alias: dict[str, str] = field(default_factory=dict)  # replacement -> routed order
    _aliases_of: dict[str, list[str]] = field(default_factory=dict)

    def routed(self, order_id: str, venue: str, side: str, at: float,
               bid: Decimal | None = None, ask: Decimal | None = None, *, symbol: str = "",
               qty: Decimal | None = None) -> None:
        if order_id in self._outcomes or order_id in self._alias:
            return
        recent = self._by_venue.setdefault(venue, deque())
        recent.append(order_id)
        self._outcomes[order_id] = Outcome(venue, side, at, bid, ask, symbol,
                                           size_bucket(qty) if qty is not None else "")
        while len(recent) > self.window:
            gone = recent.popleft()
            self._outcomes.pop(gone, None)
            for alias in self._aliases_of.pop(gone, ()):
                self._alias.pop(alias, None)

    def replaced(self, new_order_id: str, orig_order_id: str) -> None:
        """``new_order_id`` replaces ``orig_order_id`` (or one of its replacements) at its venue."""
        root = self._alias.get(orig_order_id, orig_order_id)
        if root in self._outcomes and new_order_id != root and new_order_id not in self._alias:
            self._alias[new_order_id] = root
            self._aliases_of.setdefault(root, []).append(new_order_id)

    def _outcome(self, order_id: str) -> Outcome | None:
        return self._outcomes.get(self._alias.get(order_id, order_id))

    def filled(self, order_id: str, qty: Decimal, px: Decimal, at: float) -> None:
        o = self._outcome(order_id)
        if o is None or qty <= ZERO:
            return
        o.shares += qty
        if o.first_fill_s is None:
            o.first_fill_s = max(0.0, at - o.routed_at)
        if o.bid is not None and o.ask is not None:
            o.improvement += qty * improvement_per_share(o.side, px, o.bid, o.ask)
            o.improved_shares += qty

    def rejected(self, order_id: str) -> None:
        if (o := self._outcome(order_id)) is not None:
            o.rejected = True

    def canceled(self, order_id: str, *, by_venue: bool) -> None:
        """Canceled at the venue: at our request (``by_venue`` False: counted in the cancel
        rate only) or on the venue's own (also an end the venue decided)."""
        if (o := self._outcome(order_id)) is not None:
            o.canceled = True
            o.ended = o.ended or by_venue

    def ended(self, order_id: str) -> None:
        if (o := self._outcome(order_id)) is not None:
            o.ended = True

    def stats(self, venue: str, connected: bool, *, symbol: str | None = None,
              bucket: str | None = None) -> VenueStats:
        """The venue's stats over its window; only the orders in ``symbol`` / size ``bucket``
        when given."""
        outs = [o for o in (self._outcomes.get(i) for i in self._by_venue.get(venue, ()))
                if o is not None and (symbol is None or o.symbol == symbol)
                and (bucket is None or o.bucket == bucket)]
        decided = [o for o in outs if o.decided]
        filled = [o for o in decided if o.shares > ZERO]
        shares = sum((o.improved_shares for o in filled), ZERO)
        total = sum((o.improvement for o in filled), ZERO)
        lat = [o.first_fill_s for o in filled if o.first_fill_s is not None]
        return VenueStats(
            venue, connected, orders=len(outs), decided=len(decided), filled=len(filled),
            rejected=sum(1 for o in decided if o.rejected),
            canceled=sum(1 for o in outs if o.canceled),
            improvement_per_share=total / shares if shares else ZERO, improved_shares=shares,
            latency_s=sum(lat) / len(lat) if lat else 0.0)

    def by_scope(self, venues: Sequence[tuple[str, bool]], symbol: str,
                 qty: Decimal | None) -> dict[str, list[VenueStats]]:
        """Every venue's stats (``(venue, connected)`` in configured order) per scope, for
        :func:`scoped`."""
        out = {"venue": [self.stats(v, up) for v, up in venues],
               "symbol": [self.stats(v, up, symbol=symbol) for v, up in venues]}
        if qty is not None:
            b = size_bucket(qty)
            out["size"] = [self.stats(v, up, bucket=b) for v, up in venues]
        return out
