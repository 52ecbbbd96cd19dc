"""Venue choice (domain.routing) as tables: policies, warm-up, exploration, scores, outcomes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.routing import (
    RoutingChoice,
    RoutingWeights,
    VenueQuality,
    VenueStats,
    choose_venue,
    improvement_per_share,
    scoped,
    score,
    size_bucket,
)

D = Decimal
W = RoutingWeights(explore_rate=0.1, min_orders=5)


def vs(name: str, up: bool = True, orders: int = 20, pi: str = "0", filled: int = 20,
       rejected: int = 0, lat: float = 0.0) -> VenueStats:
    return VenueStats(name, up, orders=orders, decided=orders, filled=filled, rejected=rejected,
                      improvement_per_share=D(pi), improved_shares=D(100), latency_s=lat)


@pytest.mark.parametrize(("policy", "venues", "draw", "turn", "expected"), [
    # nothing connected: no choice (the caller's retryable "no venue")
    ("smart", [vs("MM1", up=False), vs("MM2", up=False)], 0.5, 0, None),
    ("round_robin", [vs("MM1", up=False)], 0.5, 0, None),
    ("first", [], 0.5, 0, None),
    # first / round robin over connected venues only
    ("first", [vs("MM1", up=False), vs("MM2"), vs("MM3")], 0.5, 0, ("MM2", "first")),
    ("round_robin", [vs("MM1"), vs("MM2", up=False), vs("MM3")], 0.5, 1, ("MM3", "round_robin")),
    ("round_robin", [vs("MM1"), vs("MM2"), vs("MM3")], 0.5, 4, ("MM2", "round_robin")),
    # smart: the better improvement wins
    ("smart", [vs("MM1", pi="0.001"), vs("MM2", pi="0.01")], 0.5, 0, ("MM2", "best")),
    # ... unless it is down: fail over at once
    ("smart", [vs("MM1", pi="0.001"), vs("MM2", up=False, pi="0.01")], 0.5, 0, ("MM1", "best")),
    # warm-up: a venue with few recent orders gets the order first
    ("smart", [vs("MM1", pi="0.01"), vs("MM2", orders=2, filled=2)], 0.5, 0, ("MM2", "warm_up")),
    ("smart", [vs("MM1", orders=0), vs("MM2", orders=0)], 0.5, 0, ("MM1", "warm_up")),
    # a down venue is not warmed up
    ("smart", [vs("MM1", pi="0.01"), vs("MM2", up=False, orders=0)], 0.5, 0, ("MM1", "best")),
    # exploration: the least observed venue under the draw
    ("smart", [vs("MM1", pi="0.01", orders=50, filled=50), vs("MM2", orders=10, filled=10)],
     0.05, 0, ("MM2", "explore")),
    ("smart", [vs("MM1", pi="0.01", orders=50, filled=50), vs("MM2", orders=10, filled=10)],
     0.10, 0, ("MM1", "best")),
    # one venue: no exploration needed
    ("smart", [vs("MM1")], 0.0, 0, ("MM1", "best")),
    # rejects and latency count against a venue
    ("smart", [vs("MM1", pi="0.01", rejected=10, filled=10), vs("MM2", pi="0.008")], 0.5, 0,
     ("MM2", "best")),
    ("smart", [vs("MM1", pi="0.01", lat=2.0), vs("MM2", pi="0.005", lat=0.1)], 0.5, 0,
     ("MM2", "best")),
    # equal scores: configured order
    ("smart", [vs("MM1", pi="0.005"), vs("MM2", pi="0.005")], 0.5, 0, ("MM1", "best")),
])
def test_choose_venue(policy: str, venues: list[VenueStats], draw: float, turn: int,
                      expected: tuple[str, str] | None) -> None:
    got = choose_venue(policy, venues, draw=draw, turn=turn, weights=W)
    assert got == (None if expected is None else RoutingChoice(*expected))


def test_unknown_policy_refused() -> None:
    with pytest.raises(ValueError):
        choose_venue("fastest", [vs("MM1")])


@pytest.mark.parametrize(("side", "px", "expected"), [
    ("buy", "187.11", "0.01"), ("buy", "187.12", "0"), ("buy", "187.13", "-0.01"),
    ("sell", "187.101", "0.001"), ("sell", "187.10", "0"),
])
def test_improvement_vs_far_side(side: str, px: str, expected: str) -> None:
    assert improvement_per_share(side, D(px), D("187.10"), D("187.12")) == D(expected)


def test_score_orders_by_quality() -> None:
    w = RoutingWeights()
    assert score(vs("A", pi="0.01"), w) > score(vs("B", pi="0.001"), w)
    assert score(vs("A", filled=10), w) < score(vs("B"), w)  # a lower fill rate scores lower


def test_venue_quality_window_and_outcomes() -> None:
    q = VenueQuality(window=3)
    for i in range(5):
        q.routed(f"o{i}", "MM1", "buy", at=float(i), bid=D("10.00"), ask=D("10.02"))
    q.routed("o4", "MM2", "buy", at=9.0)  # a retry routes nothing new
    q.filled("o2", D(100), D("10.01"), at=2.5)
    q.filled("o3", D(50), D("10.02"), at=3.1)
    q.filled("o3", D(50), D("10.00"), at=4.0)  # second fill: not the latency
    q.rejected("o4")
    q.filled("o0", D(100), D("10.00"), at=1.0)  # fell out of the window: ignored
    s = q.stats("MM1", connected=True)
    assert (s.orders, s.decided, s.filled, s.rejected) == (3, 3, 2, 1)
    assert s.improvement_per_share == D("0.01")  # (100*0.01 + 50*0 + 50*0.02) / 200
    assert s.latency_s == pytest.approx(0.3)
    assert q.stats("MM2", connected=False) == VenueStats("MM2", False)
    # no NBBO at routing: fills count, improvement does not
    q.routed("n1", "MM2", "sell", at=0.0)
    q.filled("n1", D(10), D("5"), at=0.2)
    s2 = q.stats("MM2", connected=True)
    assert (s2.filled, s2.improved_shares, s2.improvement_per_share) == (1, D(0), D(0))


def test_replacements_share_their_routes_outcome() -> None:
    q = VenueQuality(window=2)
    q.routed("o1", "MM1", "buy", at=0.0, bid=D("10.00"), ask=D("10.02"))
    q.replaced("r1", "o1")
    q.replaced("r2", "r1")  # a replacement of the replacement: still o1's route
    q.filled("r2", D(10), D("10.01"), at=0.4)
    s = q.stats("MM1", connected=True)
    assert (s.orders, s.filled, s.improvement_per_share, s.latency_s) == (1, 1, D("0.01"), 0.4)
    q.replaced("x", "unknown")  # not routed here: nothing to link
    q.filled("x", D(1), D("10"), at=1.0)
    assert q.stats("MM1", connected=True).filled == 1
    # the route falls out of the window: its replacements are forgotten with it
    q.routed("o2", "MM1", "buy", at=1.0)
    q.routed("o3", "MM1", "buy", at=2.0)
    q.filled("r2", D(10), D("10.01"), at=3.0)
    assert q.stats("MM1", connected=True).filled == 0
    q.routed("r2", "MM2", "buy", at=3.0)  # an id no longer linked can be routed on its own
    assert q.stats("MM2", connected=True).orders == 1


def test_cancel_rate_counts_every_cancel_but_only_the_venues_decide() -> None:
    q = VenueQuality()
    for i in range(4):
        q.routed(f"o{i}", "MM1", "buy", at=0.0)
    q.canceled("o0", by_venue=False)  # the customer's cancel: not the venue's decision
    q.canceled("o1", by_venue=True)  # the venue's own
    q.filled("o2", D(1), D("10"), at=0.1)
    s = q.stats("MM1", connected=True)
    assert (s.orders, s.decided, s.filled, s.canceled) == (4, 2, 1, 2)
    assert s.cancel_rate == 0.5 and s.fill_rate == 0.5
    assert VenueStats("MM9", True).cancel_rate == 0.0


@pytest.mark.parametrize(("qty", "bucket"), [
    ("1", "<100"), ("99", "<100"), ("100", "100-499"), ("499", "100-499"), ("500", "500-1999"),
    ("1999", "500-1999"), ("2000", "2000-4999"), ("4999", "2000-4999"), ("5000", "5000+"),
    ("1000000", "5000+"), ("0.5", "<100"),
])
def test_size_bucket(qty: str, bucket: str) -> None:
    assert size_bucket(D(qty)) == bucket


def sv(name: str, decided: int, pi: str = "0", up: bool = True) -> VenueStats:
    return VenueStats(name, up, orders=decided, decided=decided, filled=decided,
                      improvement_per_share=D(pi), improved_shares=D(decided))


WIDE = [sv("MM1", 50, "0.01"), sv("MM2", 50, "0.001")]


@pytest.mark.parametrize(("by_scope", "k", "expected"), [
    # no finer data: venue-wide
    ({"venue": WIDE}, 5, "venue"),
    # every venue has K in the symbol: by symbol
    ({"venue": WIDE, "symbol": [sv("MM1", 5), sv("MM2", 7)]}, 5, "symbol"),
    # one venue below K in the symbol: the size bucket, if every venue has K there
    ({"venue": WIDE, "symbol": [sv("MM1", 5), sv("MM2", 4)],
      "size": [sv("MM1", 9), sv("MM2", 5)]}, 5, "size"),
    # below K in both: back to venue-wide
    ({"venue": WIDE, "symbol": [sv("MM1", 4), sv("MM2", 40)],
      "size": [sv("MM1", 40), sv("MM2", 4)]}, 5, "venue"),
    # a venue that is down does not hold the scope back
    ({"venue": WIDE, "symbol": [sv("MM1", 5), sv("MM2", 0, up=False)]}, 5, "symbol"),
    # nothing connected in the scope: venue-wide (choose_venue then finds no venue)
    ({"venue": WIDE, "symbol": [sv("MM1", 9, up=False)]}, 5, "venue"),
    # K <= 0: scopes off
    ({"venue": WIDE, "symbol": [sv("MM1", 50), sv("MM2", 50)]}, 0, "venue"),
])
def test_scoped_falls_back_below_k(by_scope: dict[str, list[VenueStats]], k: int,
                                   expected: str) -> None:
    name, stats = scoped(by_scope, k)
    assert name == expected and list(stats) == list(by_scope[expected])


def test_per_symbol_score_can_differ_from_the_venue_wide_one() -> None:
    """MM1 is better overall, MM2 in AAPL: with enough AAPL orders at both, an AAPL order goes
    to MM2; an order in another symbol (no data) to MM1."""
    q = VenueQuality()
    w = RoutingWeights(explore_rate=0.0, min_orders=1, scope_min_orders=3)
    for i in range(10):
        for venue, sym, px in (("MM1", "MSFT", "10.00"), ("MM1", "AAPL", "10.019"),
                               ("MM2", "MSFT", "10.019"), ("MM2", "AAPL", "10.01")):
            oid = f"{venue}-{sym}-{i}"
            q.routed(oid, venue, "buy", at=0.0, bid=D("10.00"), ask=D("10.02"), symbol=sym,
                     qty=D(100))
            q.filled(oid, D(100), D(px), at=0.0)
    venues = [("MM1", True), ("MM2", True)]

    def pick(symbol: str) -> str | None:
        _, stats = scoped(q.by_scope(venues, symbol, D(100)), w.scope_min_orders)
        got = choose_venue("smart", stats, draw=0.5, weights=w)
        return got.venue if got else None

    assert pick("AAPL") == "MM2" and pick("TSLA") == "MM1"
    assert q.stats("MM1", True, bucket="100-499").orders == 20
    assert q.stats("MM1", True, bucket="<100").orders == 0
