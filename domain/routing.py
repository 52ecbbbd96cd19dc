"""Venue choice for an order that names no venue: pure functions over recent venue quality.

    VenueStats(venue, connected, orders, decided, filled, rejected, improvement_per_share,
               improved_shares, latency_s)
    RoutingWeights(...)                      how much each quality counts, exploration, warm-up
    score(stats, weights) -> float           higher is better
    choose_venue(policy, venues, *, draw, turn, weights) -> RoutingChoice | None
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
the reject rate and the average time to first fill, each times its weight.

Deliberately not here: re-routing. A venue's refusal (a reject) or a halt ends the order where it
is (the order workflow decides its end state); the outcome only lowers the venue's score for the
next order. Nothing here does I/O or reads a clock: the gateway passes times in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
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
    improvement_per_share: Decimal = ZERO
    improved_shares: Decimal = ZERO
    latency_s: float = 0.0

    @property
    def fill_rate(self) -> float:
        return self.filled / self.decided if self.decided else 0.0

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.decided if self.decided else 0.0


@dataclass(frozen=True)
class RoutingWeights:
    improvement_per_cent: float = 1.0  # score per cent of improvement per share
    fill_rate: float = 1.0
    reject_rate: float = 2.0
    latency_per_s: float = 1.0
    explore_rate: float = 0.05
    min_orders: int = 5


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


# ============================================================================ recent outcomes


def improvement_per_share(side: str, px: Decimal, bid: Decimal, ask: Decimal) -> Decimal:
    """Price improvement per share of a marketable order vs the far side of the NBBO at routing
    (buy: ask - price, sell: price - bid); negative when it executed outside the quote."""
    return ask - px if side == "buy" else px - bid


@dataclass
class Outcome:
    """One routed order's outcome so far."""

    venue: str
    side: str
    routed_at: float
    bid: Decimal | None = None
    ask: Decimal | None = None
    shares: Decimal = ZERO
    improvement: Decimal = ZERO  # $ total over the shares filled with a known NBBO
    improved_shares: Decimal = ZERO
    first_fill_s: float | None = None
    rejected: bool = False
    ended: bool = False

    @property
    def decided(self) -> bool:
        return self.shares > ZERO or self.rejected or self.ended


@dataclass
class VenueQuality:
    """The last ``window`` routed orders per venue and their outcomes (in memory; the durable
    record is the gateway's ``gateway_routes`` + ``gateway_reports``)."""

    window: int = 100
    _by_venue: dict[str, deque[str]] = field(default_factory=dict)
    _outcomes: dict[str, Outcome] = field(default_factory=dict)

    def routed(self, order_id: str, venue: str, side: str, at: float,
               bid: Decimal | None = None, ask: Decimal | None = None) -> None:
        if order_id in self._outcomes:
            return
        recent = self._by_venue.setdefault(venue, deque())
        recent.append(order_id)
        self._outcomes[order_id] = Outcome(venue, side, at, bid, ask)
        while len(recent) > self.window:
            self._outcomes.pop(recent.popleft(), None)

    def filled(self, order_id: str, qty: Decimal, px: Decimal, at: float) -> None:
        o = self._outcomes.get(order_id)
        if o is None or qty <= ZERO:
            return
        o.shares += qty
        if o.first_fill_s is None:
            o.first_fill_s = max(0.0, at - o.routed_at)
        if o.bid is not None and o.ask is not None:
            o.improvement += qty * improvement_per_share(o.side, px, o.bid, o.ask)
            o.improved_shares += qty

    def rejected(self, order_id: str) -> None:
        if (o := self._outcomes.get(order_id)) is not None:
            o.rejected = True

    def ended(self, order_id: str) -> None:
        if (o := self._outcomes.get(order_id)) is not None:
            o.ended = True

    def stats(self, venue: str, connected: bool) -> VenueStats:
        outs = [self._outcomes[i] for i in self._by_venue.get(venue, ()) if i in self._outcomes]
        decided = [o for o in outs if o.decided]
        filled = [o for o in decided if o.shares > ZERO]
        shares = sum((o.improved_shares for o in filled), ZERO)
        total = sum((o.improvement for o in filled), ZERO)
        lat = [o.first_fill_s for o in filled if o.first_fill_s is not None]
        return VenueStats(
            venue, connected, orders=len(outs), decided=len(decided), filled=len(filled),
            rejected=sum(1 for o in decided if o.rejected),
            improvement_per_share=total / shares if shares else ZERO, improved_shares=shares,
            latency_s=sum(lat) / len(lat) if lat else 0.0)
