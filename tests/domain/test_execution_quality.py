"""Execution quality and routing disclosure (domain.execution_quality) as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.execution_quality import FillRow, RouteRow, fill_quality, marketable, report

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def route(oid: str, venue: str = "MM1", order_type: str = "market", side: str = "buy",
          qty: str = "100", limit: str | None = None, bid: str | None = "10.00",
          ask: str | None = "10.02", month: str = "2026-03", fill_s: float | None = 0.5) -> RouteRow:
    return RouteRow(oid, venue, order_type, side, D(qty), D(limit) if limit else None,
                    D(bid) if bid else None, D(ask) if ask else None, T0, month,
                    T0 + timedelta(seconds=fill_s) if fill_s is not None else None)


@pytest.mark.parametrize(("r", "expected"), [
    (route("a"), True),
    (route("a", order_type="limit", limit="10.02"), True),
    (route("a", order_type="limit", limit="10.01"), False),
    (route("a", order_type="limit", side="sell", limit="10.00"), True),
    (route("a", order_type="limit", side="sell", limit="10.01"), False),
    (route("a", order_type="limit", limit="10.05", bid=None, ask=None), False),
    (route("a", order_type="stop"), False),
])
def test_marketable(r: RouteRow, expected: bool) -> None:
    assert marketable(r) is expected


@pytest.mark.parametrize(("r", "px", "pi", "eff", "quoted"), [
    (route("a"), "10.01", "0.01", "0", "0.02"),
    (route("a"), "10.02", "0", "0.02", "0.02"),
    (route("a", side="sell"), "10.001", "0.001", "0.018", "0.02"),
    (route("a", order_type="limit", limit="10.01"), "10.01", None, "0", "0.02"),  # resting
    (route("a", bid=None, ask=None), "10.01", None, None, None),
])
def test_fill_quality(r: RouteRow, px: str, pi: str | None, eff: str | None,
                      quoted: str | None) -> None:
    fq = fill_quality(r, FillRow("a", D(100), D(px)))
    got = (fq.improvement_per_share, fq.effective_spread, fq.quoted_spread)
    assert got == tuple(None if v is None else D(v) for v in (pi, eff, quoted))


def rows_by(rep: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["venue"], r["order_type"]): r for r in rep["rows"]}


def test_report_rows_totals_and_disclosure() -> None:
    routes = [route("a"), route("b", fill_s=1.5), route("c", venue="MM2"),
              route("d", venue="MM2", fill_s=None), route("e", order_type="limit", limit="9.00",
                                                          fill_s=None, month="2026-04")]
    fills = [FillRow("a", D(100), D("10.01")), FillRow("b", D(60), D("10.02")),
             FillRow("b", D(40), D("10.00")), FillRow("c", D(100), D("10.019"))]
    rep = report(routes, fills, ["MM1", "MM2", "MM3"], "2026-03-01", "2026-04-30")
    rows = rows_by(rep)
    mm1 = rows[("MM1", "market")]
    assert (mm1["orders"], mm1["shares"], mm1["executed_shares"]) == (2, "200", "200")
    # a: 100 x 0.01, b: 60 x 0 + 40 x 0.02 -> 1.80 over 200 shares
    assert mm1["total_price_improvement"] == "1.8000"
    assert mm1["avg_price_improvement_per_share"] == "0.009000"
    assert mm1["pct_orders_improved"] == "100.00"
    assert mm1["avg_time_to_execution_s"] == 1.0
    assert mm1["avg_quoted_spread"] == "0.020000"
    assert mm1["fill_rate"] == "100.00"
    mm2 = rows[("MM2", "market")]
    assert (mm2["orders"], mm2["executed_shares"], mm2["fill_rate"]) == (2, "100", "50.00")
    assert mm2["avg_price_improvement_per_share"] == "0.001000"
    # every configured venue and order type has a row, zeros without orders
    assert len(rep["rows"]) == 3 * 4
    mm3 = rows[("MM3", "market")]
    assert (mm3["orders"], mm3["executed_shares"], mm3["fill_rate"]) == (0, "0", "0.00")
    # totals are the fills
    assert rep["totals"]["executed_shares"] == "300"
    assert rep["totals"]["notional"] == "3004.1000"  # 1001 + 601.2 + 400 + 1001.9
    # 606: per month and order type, % per venue
    disc = {(d["month"], d["order_type"]): d for d in rep["routing_disclosure"]}
    assert set(disc) == {("2026-03", "market"), ("2026-04", "limit")}
    march = {v["venue"]: v["pct"] for v in disc[("2026-03", "market")]["venues"]}
    assert march == {"MM1": "50.00", "MM2": "50.00", "MM3": "0.00"}


def test_unconfigured_venue_with_orders_still_reported() -> None:
    rep = report([route("a", venue="OLD")], [], ["MM1"], "x", "y")
    assert rep["venues"] == ["MM1", "OLD"]
    assert rows_by(rep)[("OLD", "market")]["orders"] == 1
