"""Execution quality and routing disclosure (domain.execution_quality) as tables: the quality
recorded per fill at booking, and the report aggregated from the stored figures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.execution import RouteFacts
from domain.execution_quality import (
    FillRecord,
    FillRow,
    RouteRow,
    fill_record,
    marketable,
    report,
)

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def facts(order_type: str = "market", side: str = "buy", limit: str | None = None,
          bid: str | None = "10.00", ask: str | None = "10.02", oid: str = "a",
          venue: str = "MM1", since_ms: int | None = 500, age_ms: int | None = 40,
          routed_at: str = T0.isoformat()) -> RouteFacts:
    return RouteFacts(venue=venue, route_order_id=oid, order_type=order_type, side=side,
                      routed_at=routed_at, limit_price=limit, bid=bid, ask=ask,
                      quote_age_ms=age_ms, since_routed_ms=since_ms)


@pytest.mark.parametrize(("args", "expected"), [
    (("market", "buy", None, None, None), True),
    (("limit", "buy", "10.02", "10.00", "10.02"), True),
    (("limit", "buy", "10.01", "10.00", "10.02"), False),
    (("limit", "sell", "10.00", "10.00", "10.02"), True),
    (("limit", "sell", "10.01", "10.00", "10.02"), False),
    (("limit", "buy", "10.05", None, None), False),  # no NBBO: not known to be marketable
    (("stop", "buy", None, "10.00", "10.02"), False),
])
def test_marketable(args: tuple[str, str, str | None, str | None, str | None],
                    expected: bool) -> None:
    t, side, limit, bid, ask = args
    assert marketable(t, side, *(D(x) if x else None for x in (limit, bid, ask))) is expected


@pytest.mark.parametrize(("f", "px", "pi", "eff"), [
    (facts(), "10.01", "0.01", "0"),
    (facts(), "10.02", "0", "0.02"),
    (facts(), "10.03", "-0.01", "0.04"),  # outside the quote: negative improvement
    (facts(side="sell"), "10.001", "0.001", "0.018"),
    (facts(order_type="limit", limit="10.01"), "10.01", None, "0"),  # resting: no improvement
    (facts(order_type="limit", limit="10.02"), "10.015", "0.005", "0.01"),
    (facts(bid=None, ask=None), "10.01", None, None),  # no NBBO at routing
    (facts(bid="10.03", ask="10.02"), "10.01", None, None),  # crossed: not an NBBO
    (facts(bid="0", ask="10.02"), "10.01", None, None),
    (facts(bid="1E+40", ask="1E+41"), "10.01", None, None),  # beyond a column
    (facts(bid="NaN", ask="10.02"), "10.01", None, None),
])
def test_fill_record_quality(f: RouteFacts, px: str, pi: str | None, eff: str | None) -> None:
    rec = fill_record(f, D(px))
    assert rec is not None
    assert (rec.improvement_per_share, rec.effective_spread) == tuple(
        None if v is None else D(v) for v in (pi, eff))
    has_nbbo = eff is not None
    assert (rec.nbbo_bid is not None, rec.nbbo_ask is not None) == (has_nbbo, has_nbbo)


def test_fill_record_keeps_the_route() -> None:
    rec = fill_record(facts(oid="root", venue="MM2", order_type="limit", limit="10.02"), D("10.01"))
    assert rec == FillRecord("MM2", "root", "limit", T0, D("10.00"), D("10.02"), 40, 500,
                             D("0.01"), D("0"))


@pytest.mark.parametrize("f", [
    facts(venue=""), facts(oid=""), facts(order_type=""), facts(side="short"),
    facts(routed_at=""), facts(routed_at="yesterday"), facts(routed_at="2026-03-02T15:00:00"),
    facts(oid="x" * 65),
])
def test_an_unusable_route_records_nothing(f: RouteFacts) -> None:
    assert fill_record(f, D("10.01")) is None


@pytest.mark.parametrize(("since", "age", "expected"), [
    (500, 40, (500, 40)), (-1, -5, (None, None)), (10 ** 13, 10 ** 13, (None, None)),
    (None, None, (None, None)),
])
def test_fill_record_durations_are_bounded(since: int | None, age: int | None,
                                           expected: tuple[int | None, int | None]) -> None:
    rec = fill_record(facts(since_ms=since, age_ms=age), D("10.01"))
    assert rec is not None and (rec.since_routed_ms, rec.nbbo_age_ms) == expected


# ============================================================================ the report


def route(oid: str, venue: str = "MM1", order_type: str = "market", qty: str = "100",
          month: str = "2026-03", **kw: Any) -> RouteRow:
    return RouteRow(oid, venue, order_type, D(qty), month, **kw)


def fill(f: RouteFacts, qty: str, px: str, day: str = "2026-03-02") -> FillRow:
    """A fill as the shard stores it (fill_record at booking) and the loader reads it back."""
    rec = fill_record(f, D(px))
    assert rec is not None
    quoted = rec.nbbo_ask - rec.nbbo_bid if rec.nbbo_ask and rec.nbbo_bid else None
    return FillRow(rec.route_order_id, rec.route_venue, rec.route_order_type, D(qty), D(px), day,
                   rec.improvement_per_share, rec.effective_spread, quoted, rec.since_routed_ms)


def rows_by(rep: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["venue"], r["order_type"]): r for r in rep["rows"]}


def test_report_rows_totals_and_disclosure() -> None:
    routes = [route("a"), route("b"), route("c", venue="MM2"),
              route("d", venue="MM2", rejected=True),
              route("e", order_type="limit", month="2026-04", canceled=True)]
    fills = [fill(facts(oid="a"), "100", "10.01"), fill(facts(oid="b", since_ms=1500), "60", "10.02"),
             fill(facts(oid="b", since_ms=1900), "40", "10.00"),
             fill(facts(oid="c", venue="MM2"), "100", "10.019", day="2026-03-03")]
    rep = report(routes, fills, ["MM1", "MM2", "MM3"], "2026-03-01", "2026-04-30")
    rows = rows_by(rep)
    mm1 = rows[("MM1", "market")]
    assert (mm1["orders"], mm1["shares"], mm1["executed_shares"]) == (2, "200", "200")
    # a: 100 x 0.01, b: 60 x 0 + 40 x 0.02 -> 1.80 over 200 shares
    assert mm1["total_price_improvement"] == "1.8000"
    assert mm1["avg_price_improvement_per_share"] == "0.009000"
    assert mm1["pct_orders_improved"] == "100.00"
    assert mm1["avg_time_to_execution_s"] == 1.0  # a 0.5 s, b 1.5 s (its first fill)
    assert mm1["avg_quoted_spread"] == "0.020000"
    assert (mm1["fill_rate"], mm1["reject_rate"], mm1["cancel_rate"]) == ("100.00", "0.00", "0.00")
    mm2 = rows[("MM2", "market")]
    assert (mm2["orders"], mm2["executed_shares"], mm2["fill_rate"]) == (2, "100", "50.00")
    assert (mm2["reject_rate"], mm2["cancel_rate"]) == ("50.00", "0.00")
    assert mm2["avg_price_improvement_per_share"] == "0.001000"
    assert rows[("MM1", "limit")]["cancel_rate"] == "100.00"
    # every configured venue and order type has a row, zeros without orders
    assert len(rep["rows"]) == 3 * 4
    mm3 = rows[("MM3", "market")]
    assert (mm3["orders"], mm3["executed_shares"], mm3["fill_rate"]) == (0, "0", "0.00")
    # totals are the fills
    assert rep["totals"]["executed_shares"] == "300"
    assert rep["totals"]["notional"] == "3004.1000"  # 1001 + 601.2 + 400 + 1001.9
    assert (rep["totals"]["reject_rate"], rep["totals"]["cancel_rate"]) == ("20.00", "20.00")
    # 606: per month and order type, % per venue
    disc = {(d["month"], d["order_type"]): d for d in rep["routing_disclosure"]}
    assert set(disc) == {("2026-03", "market"), ("2026-04", "limit")}
    march = {v["venue"]: v["pct"] for v in disc[("2026-03", "market")]["venues"]}
    assert march == {"MM1": "50.00", "MM2": "50.00", "MM3": "0.00"}
    # per day and venue
    assert rep["daily"] == [
        {"day": "2026-03-02", "venue": "MM1", "fills": 3, "executed_shares": "200",
         "notional": "2002.2000", "total_price_improvement": "1.8000",
         "avg_price_improvement_per_share": "0.009000"},
        {"day": "2026-03-03", "venue": "MM2", "fills": 1, "executed_shares": "100",
         "notional": "1001.9000", "total_price_improvement": "0.1000",
         "avg_price_improvement_per_share": "0.001000"}]


def test_a_replacements_fills_count_for_the_route() -> None:
    """The shard stored the route (the first order of the chain) with the replacement's fill."""
    rep = report([route("a", order_type="limit", qty="10")],
                 [fill(facts(oid="a", order_type="limit", limit="10.02"), "10", "10.01")],
                 ["MM1"], "x", "y")
    row = rows_by(rep)[("MM1", "limit")]
    assert (row["orders"], row["executed_shares"], row["fill_rate"]) == (1, "10", "100.00")
    assert row["avg_price_improvement_per_share"] == "0.010000"


def test_fills_count_even_without_their_route() -> None:
    """The totals are the fills booked: a fill whose route the gateway no longer has is still
    counted, under the venue and order type stored with it."""
    rep = report([], [fill(facts(oid="gone", venue="MM2"), "5", "10.01")], ["MM1"], "x", "y")
    assert rep["totals"]["executed_shares"] == "5" and rep["totals"]["orders"] == 0
    assert rows_by(rep)[("MM2", "market")]["executed_shares"] == "5"


def test_unconfigured_venue_with_orders_still_reported() -> None:
    rep = report([route("a", venue="OLD")], [], ["MM1"], "x", "y")
    assert rep["venues"] == ["MM1", "OLD"]
    assert rows_by(rep)[("OLD", "market")]["orders"] == 1
