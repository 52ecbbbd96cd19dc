"""domain.order_groups: the bracket / oco / oto request (every refusal coded), the legs' rows,
and the rules tying the legs together (activation for the entry's fill, a take-profit's fills
shrinking its HELD stop-loss, the take-over after the stop-loss's trigger fired)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain import order_groups as groups
from domain.errors import DomainError
from domain.order_row import OrderRow, new_order
from domain.orders import TERMINAL, OrderState, parse_order_request
from domain.trailing import TRIGGERED, waiting

S = OrderState
D = Decimal
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
PARENT = "00000000-0000-0000-0000-0000000000aa"
ACCT = "00000000-0000-0000-0000-0000000000bb"
BRACKET = {"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market", "time_in_force": "gtc",
           "order_class": "bracket", "take_profit": {"limit_price": "200"},
           "stop_loss": {"stop_price": "180"}}
OCO = {"symbol": "AAPL", "qty": "10", "side": "sell", "type": "limit", "time_in_force": "gtc",
       "order_class": "oco", "take_profit": {"limit_price": "200"},
       "stop_loss": {"stop_price": "180", "limit_price": "179.50"}}


def test_a_bracket_is_a_buy_entry_with_two_sell_legs() -> None:
    g = groups.parse_group_request(BRACKET)
    assert (g.order_class, g.parent.side, g.parent.type, g.legs) == (
        "bracket", "buy", "market", ("take_profit", "stop_loss"))
    tp, sl = g.leg_request("take_profit", D(4)), g.leg_request("stop_loss", D(4))
    assert (tp.side, tp.type, tp.qty, tp.limit_price) == ("sell", "limit", D(4), D(200))
    assert (sl.side, sl.type, sl.stop_price, sl.limit_price) == ("sell", "stop", D(180), None)
    assert groups.stop_route(g, D(4)).type == "market"
    # the wire form reads back as the same request (the workflow parses it again)
    assert groups.parse_group_request(g.to_wire()) == g


def test_an_oco_parent_is_its_take_profit_and_its_one_leg_a_stop_limit() -> None:
    g = groups.parse_group_request(OCO)
    assert (g.parent.side, g.parent.type, g.parent.limit_price, g.legs) == (
        "sell", "limit", D(200), ("stop_loss",))
    assert g.leg_request("stop_loss", D(10)).type == "stop_limit"
    route = groups.stop_route(g, D(6))
    assert (route.type, route.limit_price, route.qty) == ("limit", D("179.50"), D(6))
    assert groups.parse_group_request({**OCO, "limit_price": "200.00"}) == g
    assert groups.parse_group_request(g.to_wire()) == g


def test_the_hash_tells_groups_apart() -> None:
    g = groups.parse_group_request(BRACKET)
    other = groups.parse_group_request({**BRACKET, "take_profit": {"limit_price": "201"}})
    assert g.hash() != other.hash() != g.parent.hash()
    assert groups.parse_group_request(dict(BRACKET)).hash() == g.hash()


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"order_class": "nope"}, "invalid_order_class"),
    ({"order_class": 7}, "invalid_order_class"),
    ({"stop_loss": None}, "missing_stop_loss"),
    ({"take_profit": None}, "missing_take_profit"),
    ({"take_profit": {}}, "missing_take_profit"),
    ({"stop_loss": {"limit_price": "179"}}, "missing_stop_loss"),
    ({"take_profit": [200]}, "invalid_take_profit"),
    ({"take_profit": {"limit_price": "200", "stop_price": "1"}}, "unknown_field"),
    ({"take_profit": {"limit_price": "abc"}}, "invalid_take_profit_limit_price"),
    ({"take_profit": {"limit_price": "-1"}}, "invalid_take_profit_limit_price"),
    ({"take_profit": {"limit_price": "1e9"}}, "take_profit_limit_price_out_of_range"),
    ({"stop_loss": {"stop_price": "9" * 60}}, "stop_loss_stop_price_too_many_digits"),
    ({"stop_loss": {"stop_price": "180.001"}}, "invalid_price_increment"),
    ({"stop_loss": {"stop_price": "180", "limit_price": "181"}}, "invalid_stop_loss"),
    ({"take_profit": {"limit_price": "180"}}, "invalid_take_profit"),  # not above the stop
    ({"type": "limit", "limit_price": "210"}, "invalid_take_profit"),  # not above the entry
    ({"type": "limit", "limit_price": "170"}, "invalid_stop_loss"),  # stop not below the entry
    ({"type": "stop", "stop_price": "190"}, "invalid_type"),
    ({"side": "sell"}, "invalid_side"),
    ({"time_in_force": "ioc"}, "invalid_time_in_force"),
    ({"qty": "0"}, "invalid_qty"),
    ({"symbol": ""}, "invalid_symbol"),
    ({"order_class": "oto"}, "invalid_oto_legs"),  # both exits
    ({"order_class": "oto", "take_profit": None, "stop_loss": None}, "invalid_oto_legs"),
    ({"order_class": "oco", "side": "sell"}, "invalid_type"),  # a market oco
    ({"order_class": "oco", "side": "buy", "type": "limit"}, "invalid_side"),
    ({"order_class": "oco", "side": "sell", "type": "limit", "limit_price": "201"}, "invalid_take_profit"),
    ({"order_class": "oco", "side": "sell", "type": "limit", "take_profit": None}, "missing_take_profit"),
    ({"legs": []}, "legs_not_supported"),
    ({"qty": "2.5", "time_in_force": "day"}, "fractional_order_class"),
    ({"qty": None, "notional": "100", "time_in_force": "day"}, "fractional_order_class"),
]


@pytest.mark.parametrize(("change", "code"), REFUSED, ids=[f"{c}-{i}" for i, (_, c) in enumerate(REFUSED)])
def test_every_bad_group_is_refused_with_a_code(change: dict[str, Any], code: str) -> None:
    body = {k: v for k, v in {**BRACKET, **change}.items() if v is not None}
    with pytest.raises(DomainError) as err:
        groups.parse_group_request(body)
    assert err.value.code == code


def test_a_simple_order_with_legs_or_an_unknown_class_is_refused() -> None:
    simple = {k: v for k, v in BRACKET.items() if k not in ("order_class", "stop_loss")}
    with pytest.raises(DomainError) as err:
        parse_order_request(simple)
    assert err.value.code == "take_profit_not_allowed"
    with pytest.raises(DomainError) as err:
        parse_order_request({**simple, "take_profit": None, "order_class": "mleg"})
    assert err.value.code == "invalid_order_class"


# --- rows and rules ----------------------------------------------------------------------

def parent_row(body: dict[str, Any] = BRACKET) -> tuple[groups.GroupRequest, OrderRow]:
    g = groups.parse_group_request(body)
    row = new_order(order_id=PARENT, account_id=ACCT, req=g.parent, request_hash=g.hash(),
                    actor="customer", now=NOW)
    return g, groups.grouped(row, g)


def test_legs_are_written_held_with_nothing_held_and_ids_from_the_parent() -> None:
    g, parent = parent_row()
    decisions = groups.held_legs(parent, g, request_hash=g.hash(), now=NOW)
    rows = [d.order for d in decisions]
    assert all(d.insert and not d.postings for d in decisions)
    assert [(r.leg, r.state, r.qty, r.hold_amount, r.parent_id, r.order_class) for r in rows] == [
        ("take_profit", S.HELD, D(10), D(0), parent.id, "bracket"),
        ("stop_loss", S.HELD, D(10), D(0), parent.id, "bracket")]
    assert [str(r.id) for r in rows] == [groups.leg_id(PARENT, "take_profit"),
                                         groups.leg_id(PARENT, "stop_loss")]
    assert waiting(rows[1]) and not waiting(rows[0])  # the stop-loss's trigger watches


def legs_of(body: dict[str, Any] = BRACKET) -> tuple[OrderRow, OrderRow]:
    g, parent = parent_row(body)
    tp, sl = (d.order for d in groups.held_legs(parent, g, request_hash="h", now=NOW))
    return tp, sl


def test_activation_holds_the_take_profits_shares_for_what_the_entry_filled() -> None:
    tp, sl = legs_of()
    d = groups.activate(tp, D(4), {"shares_unsettled": D(4)}, NOW)
    assert (d.order.state, d.order.qty, d.order.hold_amount) == (S.FUNDS_HELD, D(4), D(4))
    assert [t.kind for t in d.postings] == ["hold_shares"]
    stays = groups.activate(sl, D(4), None, NOW)
    assert (stays.order.state, stays.order.qty, stays.postings) == (S.HELD, D(4), ())
    assert groups.activate(sl, D(0), None, NOW).order.state == S.CANCELED
    refused = groups.activate(tp, D(4), None, NOW, refused="no shares")
    assert (refused.order.state, refused.order.reject_code) == (S.REJECTED, "insufficient_qty")
    # a retry after the commit decides nothing
    assert groups.activate(d.order, D(4), {"shares": D(4)}, NOW).changes == {}


@pytest.mark.parametrize(("filled", "state", "qty"), [
    (0, S.HELD, 10), (4, S.HELD, 6), (9, S.HELD, 1), (10, S.CANCELED, 10)])
def test_a_take_profit_fill_shrinks_the_held_stop_loss(filled: int, state: OrderState, qty: int) -> None:
    tp, sl = legs_of()
    tp = dataclasses.replace(tp, state=S.PARTIALLY_FILLED if filled < 10 else S.FILLED,
                             filled_qty=D(filled))
    d = groups.reduce_held_stop(sl, tp, NOW)
    assert (d.order.state, d.order.qty, d.postings) == (state, D(qty), ())
    assert groups.reduce_held_stop(d.order, tp, NOW).changes == {}  # once


def test_a_stop_loss_no_longer_held_is_never_shrunk() -> None:
    tp, sl = legs_of()
    tp = dataclasses.replace(tp, filled_qty=D(4))
    for state in (S.FUNDS_HELD, S.ROUTED, S.FILLED, S.CANCELED):
        assert groups.reduce_held_stop(dataclasses.replace(sl, state=state), tp, NOW).changes == {}


def test_the_stop_loss_takes_over_only_after_its_trigger_fired_and_the_take_profit_ended() -> None:
    tp, sl = legs_of()
    for state in S:
        ended = dataclasses.replace(tp, state=state)
        assert groups.takes_over(sl, ended, {TRIGGERED}) == (state in TERMINAL)
        assert not groups.takes_over(sl, ended, {"held"})
    assert not groups.takes_over(dataclasses.replace(sl, state=S.CANCELED),
                                 dataclasses.replace(tp, state=S.CANCELED), {TRIGGERED})


def test_the_stop_trigger_is_a_fixed_sell_stop() -> None:
    g = groups.parse_group_request(OCO)
    spec = groups.stop_trigger(g)
    assert (spec.side, spec.kind, spec.stop) == ("sell", "stop", D(180))
    assert uuid.UUID(groups.leg_id(PARENT, "stop_loss"))
