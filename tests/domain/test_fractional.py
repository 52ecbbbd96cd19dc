"""Fractional and notional orders, pure: request rules (each bad input its own code), the
firm's fill of an order with no whole share, and the fraction of an order whose whole part a
venue fills -- exact to the cent and to 1e-9 share, every ledger transaction balanced."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain import fractional
from domain.errors import DomainError
from domain.execution import VenueEvent, VenueEventKind, VenueStatus
from domain.ledger import LedgerTxn
from domain.order_decision import Decision
from domain.order_machine import HouseFill, Route, accept, decide
from domain.order_row import OrderRow, new_order
from domain.orders import OrderRequest, OrderState, parse_order_request
from domain.risk import PreTrade

D = Decimal
S = OrderState
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
OID = "00000000-0000-0000-0000-0000000000cc"
ACCT = "00000000-0000-0000-0000-0000000000dd"
BASE = {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}


@pytest.mark.parametrize(("extra", "code"), [
    ({"qty": "1", "notional": "10"}, "qty_and_notional"),
    ({}, "invalid_qty"),
    ({"notional": "0.99"}, "notional_below_minimum"),
    ({"notional": "10.001"}, "notional_too_many_decimals"),
    ({"notional": "1e8"}, "notional_out_of_range"),
    ({"notional": "-5"}, "invalid_notional"),
    ({"notional": "NaN"}, "invalid_notional"),
    ({"notional": "10", "type": "limit", "limit_price": "100"}, "notional_requires_market"),
    ({"notional": "10", "time_in_force": "gtc"}, "fractional_requires_day"),
    ({"qty": "0.5", "time_in_force": "gtc"}, "fractional_requires_day"),
    ({"qty": "0.5", "time_in_force": "ioc"}, "fractional_requires_day"),
    ({"qty": "1.5", "type": "stop", "stop_price": "100"}, "fractional_order_type"),
    ({"qty": "1.5", "type": "stop_limit", "stop_price": "100", "limit_price": "101"},
     "fractional_order_type"),
    ({"qty": "0.5", "type": "limit", "limit_price": "100", "extended_hours": True},
     "fractional_extended_hours"),
    ({"qty": "0.1234567891"}, "qty_too_many_decimals"),
    ({"qty": "0"}, "invalid_qty"),
])
def test_bad_fractional_requests_are_refused_with_their_code(extra: dict[str, object], code: str) -> None:
    with pytest.raises(DomainError) as err:
        parse_order_request({**BASE, **extra})
    assert err.value.code == code


@pytest.mark.parametrize(("extra", "qty", "notional"), [
    ({"notional": "10"}, D(0), D(10)),
    ({"notional": D("10.50")}, D(0), D("10.50")),  # a JSON number, decoded to Decimal
    ({"notional": 1}, D(0), D(1)),
    ({"qty": "0.123456789"}, D("0.123456789"), None),
    ({"qty": "2.50"}, D("2.5"), None),
    ({"qty": "3.0"}, D(3), None),  # whole: a plain order, as always
    ({"qty": "1.5", "type": "limit", "limit_price": "100"}, D("1.5"), None),
])
def test_fractional_and_notional_requests(extra: dict[str, object], qty: Decimal,
                                          notional: Decimal | None) -> None:
    req = parse_order_request({**BASE, **extra})
    assert req.qty == qty and str(req.qty) == str(qty) and req.notional == notional
    assert req.fractional == (notional is not None or qty != qty.to_integral_value())
    assert OrderRequest.from_wire(req.to_wire()) == req  # the wire form reads back the same
    assert req.hash() == OrderRequest.from_wire(req.to_wire()).hash()


def test_a_whole_qty_order_hashes_as_before() -> None:
    """The request hash of orders without notional is what it always was (idempotency of the
    orders placed before fractional trading)."""
    req = parse_order_request({**BASE, "qty": "3"})
    before = {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day", "qty": "3",
              "limit_price": None, "stop_price": None, "extended_hours": False}
    assert req.hash() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert "notional" not in req.to_wire()
    assert parse_order_request({**BASE, "notional": "3"}).hash() != req.hash()


def test_notional_quantity_is_the_exact_quotient_truncated() -> None:
    assert fractional.notional_qty(D(10), D("187.45")) == D("0.053347559")
    assert D(10) / D("187.45") > D("0.053347559")  # truncated, never rounded up
    t = fractional.house_terms(side="buy", qty=D(0), notional=D(10), limit_price=None,
                               bid=D("187.40"), ask=D("187.45"))
    assert (t.qty, t.price, t.value) == (D("0.053347559"), D("187.45"), D(10))


def test_house_terms_refusals() -> None:
    with pytest.raises(DomainError) as err:
        fractional.house_terms(side="buy", qty=D("0.5"), notional=None, limit_price=None, bid=None, ask=None)
    assert err.value.code == "no_quote"
    with pytest.raises(DomainError) as err:
        fractional.house_terms(side="buy", qty=D("0.5"), notional=None, limit_price=D(100),
                               bid=D(100), ask=D("100.01"))
    assert err.value.code == "fractional_limit_not_marketable"
    t = fractional.house_terms(side="sell", qty=D("0.5"), notional=None, limit_price=D(100),
                               bid=D("100.01"), ask=D("100.02"))
    assert (t.price, t.value) == (D("100.01"), D("50.01"))  # 50.005 rounds half up
    with pytest.raises(DomainError) as err:
        fractional.check_inventory("buy", D(-99.5), D("0.6"), D(100))
    assert err.value.code == "fractional_inventory_limit"
    fractional.check_inventory("sell", D(-99.5), D("0.6"), D(100))  # toward zero: always taken


def _sums(postings: tuple[LedgerTxn, ...]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for t in postings:
        for e in t.entries:
            out[(str(e.account.owner or "house"), e.account.name)] += e.amount
    return {k: v for k, v in out.items() if v}


def _accepted(body: dict[str, object], amount: Decimal) -> tuple[OrderRow, Decision]:
    req = parse_order_request({**BASE, **body})
    row = new_order(order_id=OID, account_id=ACCT, req=req, request_hash=req.hash(),
                    actor="customer", now=NOW)
    source = "cash" if req.side == "buy" else "shares"
    d = accept(row, req, PreTrade(validated=True, amount=amount, sources={source: amount}))
    return d.order, d


def test_a_notional_buy_costs_the_notional_exactly() -> None:
    """$10 of a $187.45 stock: cash -10.00 exactly, 0.053347559 shares, the firm's inventory
    mirrored; the order FILLED with nothing left held."""
    order, acc = _accepted({"notional": "10"}, D(10))
    assert order.state == S.FUNDS_HELD and order.qty == 0 and order.notional == 10
    d = decide(order, HouseFill(bid=D("187.40"), ask=D("187.45"), inventory=D(0), max_inventory=D(100)), NOW)
    assert d.order.state == S.FILLED and d.order.hold_amount == 0
    assert (d.order.qty, d.order.filled_qty, d.order.filled_value) == (D("0.053347559"),) * 2 + (D(10),)
    moved = _sums(acc.postings + d.postings)
    assert moved == {(ACCT, "cash"): D(-10), ("house", "inventory_cash"): D(10),
                     (ACCT, "shares_unsettled:AAPL"): D("0.053347559"),
                     ("house", "inventory:AAPL"): D("-0.053347559")}
    [ex] = d.executions
    assert (ex.venue, ex.qty, ex.price) == ("house", D("0.053347559"), D("187.45"))
    [b] = d.bookings
    assert b.venue == "house" and b.exec_id == ex.exec_id
    [u] = d.updates
    assert u.event == "fill" and u.extra["qty"] == "0.053347559"
    assert decide(d.order, HouseFill(D(1), D(1), D(0), D(100)), NOW).changes == {}  # replay: nothing


def test_a_fractional_sell_from_the_house_and_its_refusals() -> None:
    order, _ = _accepted({"side": "sell", "qty": "0.25"}, D("0.25"))
    d = decide(order, HouseFill(bid=D("100.02"), ask=D("100.03"), inventory=D(0), max_inventory=D(100)), NOW)
    assert d.order.state == S.FILLED
    assert _sums(d.postings) == {
        (ACCT, "shares_held:AAPL"): D("-0.25"), ("house", "inventory:AAPL"): D("0.25"),
        ("house", "inventory_cash"): D("-25.01"),  # 25.005 half up
        (ACCT, "cash_unsettled@2026-12-04"): D("25.01")}
    assert [s.qty for s in d.sells] == [D("0.25")]
    # the firm's inventory bound: rejected, the hold released
    d = decide(order, HouseFill(bid=D(100), ask=D(101), inventory=D(100), max_inventory=D(100)), NOW)
    assert d.order.state == S.REJECTED and d.order.reject_code == "fractional_inventory_limit"
    assert _sums(d.postings) == {(ACCT, "shares_held:AAPL"): D("-0.25"), (ACCT, "shares:AAPL"): D("0.25")}
    # a notional sell whose bid fell past its hold's margin
    order, _ = _accepted({"side": "sell", "notional": "10"}, D("0.1"))
    d = decide(order, HouseFill(bid=D(99), ask=D(100), inventory=D(0), max_inventory=D(100)), NOW)
    assert d.order.state == S.REJECTED and d.order.reject_code == "price_moved"


def test_whole_part_at_the_venue_then_the_fraction_from_the_firm() -> None:
    """2.5 shares: the venue gets 2; when it has filled them (in two fills), the firm fills 0.5
    at the price of the completing fill in the same decision; one trade update reports it."""
    order, acc = _accepted({"qty": "2.5"}, D("263.00"))
    assert fractional.venue_qty(str(order.qty)) == "2"
    order = decide(order, Route("MM1"), NOW).order

    def fill(n: int, qty: str, px: str, cum: str) -> VenueEvent:
        return VenueEvent(venue="MM1", exec_id=f"E{n}", order_id=OID, kind=VenueEventKind.FILL,
                          status=VenueStatus.PARTIALLY_FILLED, cl_ord_id=OID, last_qty=qty,
                          last_px=px, cum_qty=cum)

    d1 = decide(order, fill(1, "1", "100.00", "1"), NOW)
    assert d1.order.state == S.PARTIALLY_FILLED and d1.order.filled_qty == 1
    d2 = decide(d1.order, fill(2, "1", "101.0001", "2"), NOW)
    o = d2.order
    assert o.state == S.FILLED and o.filled_qty == D("2.5") and o.hold_amount == 0
    assert o.filled_value == D("100.00") + D("101.0001") + D("50.50")  # 50.50005 -> 50.50
    assert [u.extra.get("qty") for u in d2.updates] == ["1.5"]
    moved = _sums(acc.postings + d1.postings + d2.postings)
    assert moved[(ACCT, "cash")] == -o.filled_value
    assert moved[(ACCT, "shares_unsettled:AAPL")] == D("2.5")
    assert moved[("house", "inventory:AAPL")] == D("-0.5")
    assert moved[("house", "inventory_cash")] == D("50.50")
    # the venue's later report ends with CumQty 2: what it filled, so it matches
    done = VenueEvent(venue="MM1", exec_id="E3", order_id=OID, kind=VenueEventKind.STATUS,
                      status=VenueStatus.FILLED, cl_ord_id=OID, cum_qty="2")
    assert decide(o, done, NOW).order.state == S.FILLED
    # a venue fill beyond the whole part is an overfill, refused
    over = decide(d1.order, fill(4, "2", "100", "3"), NOW)
    assert over.order.state == S.STUCK


def test_the_house_fills_only_orders_without_a_whole_share() -> None:
    order, _ = _accepted({"qty": "1.5"}, D(200))
    with pytest.raises(DomainError):
        decide(order, HouseFill(D(1), D(1), D(0), D(100)), NOW)
    assert dataclasses.replace(order, state=S.CANCELED).terminal
    assert uuid.UUID(OID)  # ids used above are uuids


def test_a_whole_part_only_partly_filled_leaves_the_fraction_unfilled() -> None:
    order, acc = _accepted({"qty": "2.5"}, D("263.00"))
    order = decide(order, Route("MM1"), NOW).order
    part = VenueEvent(venue="MM1", exec_id="P1", order_id=OID, kind=VenueEventKind.FILL,
                      status=VenueStatus.PARTIALLY_FILLED, cl_ord_id=OID, last_qty="1",
                      last_px="100", cum_qty="1")
    d1 = decide(order, part, NOW)
    gone = VenueEvent(venue="MM1", exec_id="C1", order_id=OID, kind=VenueEventKind.CANCELED,
                      status=VenueStatus.CANCELED, cl_ord_id=OID, cum_qty="1")
    d2 = decide(d1.order, gone, NOW)
    assert d2.order.state == S.CANCELED and d2.order.filled_qty == 1 and d2.order.hold_amount == 0
    postings = acc.postings + d1.postings + d2.postings
    assert not any(t.kind == "house_fill" for t in postings)
    moved = _sums(postings)
    assert moved == {(ACCT, "cash"): D(-100), ("house", "clearing_cash"): D(100),
                     ("house", "clearing_shares:AAPL"): D(-1), (ACCT, "shares_unsettled:AAPL"): D(1)}


def test_the_rebalance_plan_and_its_transfers() -> None:
    from domain.ledger import inventory_transfer

    assert fractional.rebalance_plan(D("-0.99")) is None
    assert fractional.rebalance_plan(D("0.999999999")) is None
    assert fractional.rebalance_plan(D("-1.2")) == fractional.RebalancePlan("buy", D(1))
    assert fractional.rebalance_plan(D("3.7")) == fractional.RebalancePlan("sell", D(3))
    plan = fractional.RebalancePlan("buy", D(2))
    assert fractional.rebalance_funding(plan, D("100.01"), D("0.05")) == D("210.03")  # 210.021 up
    assert fractional.rebalance_funding(fractional.RebalancePlan("sell", D(3)), None, D("0.05")) == 3
    firm = fractional.firm_account_id(2, "AAPL")
    assert firm == fractional.firm_account_id(2, "AAPL") != fractional.firm_account_id(2, "F")
    t = inventory_transfer("t", firm, "AAPL", {"cash": D("210.03"), "shares_unsettled:AAPL": D(-2),
                                               "cash_unsettled@2026-12-04": D(-5)})
    assert _sums((t,)) == {
        (str(firm), "cash"): D("210.03"), ("house", "inventory_cash"): D("-205.03"),
        (str(firm), "shares_unsettled:AAPL"): D(-2), ("house", "inventory:AAPL"): D(2),
        (str(firm), "cash_unsettled@2026-12-04"): D(-5)}


def test_an_operator_resolves_the_whole_part_and_the_fraction_follows() -> None:
    from domain.order_machine import MarkStuck
    from domain.orders import ResolveInput

    order, _ = _accepted({"qty": "2.5"}, D("263.00"))
    order = decide(order, Route("MM1"), NOW).order
    stuck = decide(order, MarkStuck("silent venue"), NOW).order
    d = decide(stuck, ResolveInput(order_id=OID, outcome="filled", filled_qty="2", avg_price="100"), NOW)
    assert d.order.state == S.FILLED and d.order.filled_qty == D("2.5") and d.order.hold_amount == 0
    assert [t.kind for t in d.postings if t.kind == "house_fill"] == ["house_fill"]
