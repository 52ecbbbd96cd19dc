"""Cancel/replace decisions (domain.order_replace): the two orders, their holds to the cent."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest

from domain import order_replace as rp
from domain.errors import DomainError
from domain.execution import VenueEvent, VenueEventKind, VenueStatus
from domain.order_decision import Decision
from domain.order_machine import decide
from domain.order_row import OrderRow
from domain.orders import OrderError, OrderState
from tests.domain.test_order_machine import NOW, OID, order_in

S = OrderState
D = Decimal
NEW = "00000000-0000-0000-0000-0000000000cc"


def held(d: Decision) -> Decimal:
    """Cash the decision's postings move into (+) or out of (-) ``cash_held``."""
    total = D(0)
    for txn in d.postings:
        total += {"hold_cash": 1, "release_cash": -1}.get(txn.kind, 0) * sum(
            (e.amount for e in txn.entries if e.amount > 0), D(0))
    return total


def ask(old: OrderRow, **change: object) -> tuple[Decision, Decision]:
    return rp.request(old, rp.parse_replace(change), new_id=NEW, actor="customer", now=NOW)


def event(kind: VenueEventKind, *, cum: str = "0", n: int = 9, text: str | None = None) -> VenueEvent:
    return VenueEvent(venue="MM1", exec_id=f"R{n}", order_id=OID, kind=kind,
                      status=VenueStatus.NEW, cl_ord_id=NEW, orig_cl_ord_id=OID, cum_qty=cum,
                      venue_order_id="V1", text=text)


def test_parse_refuses_bad_input_with_a_code() -> None:
    cases = [({}, "nothing_to_replace"), ({"qty": "0"}, "invalid_qty"),
             ({"qty": "1.5"}, "invalid_qty"), ({"qty": "1e12"}, "qty_out_of_range"),
             ({"limit_price": "-1"}, "invalid_limit_price"),
             ({"limit_price": "10.001"}, "invalid_price_increment"),
             ({"trail": "-1"}, "invalid_trail"), ({"trail": "1e7"}, "trail_out_of_range"),
             ({"stop_price": "5"}, "replace_not_supported"),
             ({"time_in_force": "ioc"}, "invalid_time_in_force"),
             ({"client_order_id": ""}, "invalid_client_order_id"), ({"side": "sell"}, "unknown_field")]
    for body, code in cases:
        with pytest.raises(DomainError) as exc:
            rp.parse_replace(body)
        assert exc.value.code == code, (body, exc.value)


def test_terms_refuse_what_cannot_be_replaced() -> None:
    for state in (S.FILLED, S.CANCELED, S.PENDING_CANCEL, S.ROUTED, S.PENDING_REPLACE, S.REPLACED):
        with pytest.raises(OrderError, match="cannot be replaced") as exc:
            ask(order_in(state), qty="20")
        assert exc.value.code == "not_replaceable"
    market = dataclasses.replace(order_in(S.ACKED), order_type="market", limit_price=None)
    with pytest.raises(OrderError) as exc:
        ask(market, qty="20")
    assert exc.value.code == "replace_not_supported"
    with pytest.raises(OrderError) as exc:
        ask(order_in(S.ACKED), qty="10", limit_price="100", time_in_force="gtc")
    assert exc.value.code == "nothing_to_replace"
    with pytest.raises(OrderError) as exc:
        ask(order_in(S.PARTIALLY_FILLED), qty="2")
    assert exc.value.code == "qty_not_above_filled"


def test_a_bigger_replace_holds_the_difference_and_the_venue_hands_it_over() -> None:
    old = order_in(S.ACKED)  # buy 10 @ 100, 1,000 held
    d_old, d_new = ask(old, qty="20", limit_price="101")
    assert d_old.order.state == S.PENDING_REPLACE and d_old.order.replaced_by == uuid.UUID(NEW)
    assert held(d_old) == 0 and [u.event for u in d_old.updates] == ["pending_replace"]
    new = d_new.order
    assert d_new.insert and new.state == S.ROUTED and new.replaces == old.id and new.venue == "MM1"
    assert (new.qty, new.limit_price, new.hold_amount) == (20, 101, 1020)  # 2,020 - 1,000
    assert held(d_new) == 1020
    a, b = rp.replaced(d_old.order, new, event(VenueEventKind.REPLACED), NOW)
    assert a.order.state == S.REPLACED and a.order.hold_amount == 0 and a.order.replaced_at == NOW
    assert held(a) == 0 and held(b) == 0  # the hold moves with the order: no posting
    assert (b.order.state, b.order.qty, b.order.hold_amount) == (S.ACKED, 20, 2020)
    assert b.order.venue_order_id == "V1" and [u.event for u in a.updates] == ["replaced"]


def test_a_lower_price_releases_what_the_replacement_does_not_need() -> None:
    d_old, d_new = ask(order_in(S.ACKED), limit_price="90")
    assert d_new.order.hold_amount == 0 and not d_new.postings
    a, b = rp.replaced(d_old.order, d_new.order, event(VenueEventKind.REPLACED), NOW)
    assert b.order.hold_amount == 900 and held(b) == -100 and a.order.hold_amount == 0


def test_a_fill_racing_the_replace_books_against_the_original_and_shrinks_the_replacement() -> None:
    d_old, d_new = ask(order_in(S.ACKED), qty="20", limit_price="101")
    fill = VenueEvent(venue="MM1", exec_id="F1", order_id=OID, kind=VenueEventKind.FILL,
                      status=VenueStatus.PARTIALLY_FILLED, cl_ord_id=OID, last_qty="4",
                      last_px="99.50", cum_qty="4")
    filled = decide(d_old.order, fill, NOW)
    assert filled.order.state == S.PENDING_REPLACE and filled.order.filled_qty == 4
    assert filled.order.hold_amount == 602  # 1,000 - 4 x 99.50
    # the venue replaced after the fill: its CumQty counts it
    stale = rp.replaced(filled.order, d_new.order, event(VenueEventKind.REPLACED, cum="0"), NOW)
    assert stale[0].order.state == S.STUCK and not stale[1].changes
    a, b = rp.replaced(filled.order, d_new.order, event(VenueEventKind.REPLACED, cum="4"), NOW)
    assert a.order.state == S.REPLACED and a.order.filled_qty == 4
    new = b.order
    assert (new.qty, new.prior_filled_qty, new.hold_amount) == (16, 4, 1616)  # 16 x 101
    assert held(b) == -6  # 602 + 1,020 held, 1,616 needed: 4 x (101 - 99.50) back
    # the replacement's own reports: the venue's CumQty counts the original's 4
    done = VenueEvent(venue="MM1", exec_id="C1", order_id=NEW, kind=VenueEventKind.CANCELED,
                      status=VenueStatus.CANCELED, cl_ord_id=f"{NEW}:C1", cum_qty="4")
    canceled = decide(new, done, NOW)
    assert canceled.order.state == S.CANCELED and held(canceled) == -1616


def test_a_refused_replace_leaves_the_original_as_it_was() -> None:
    old = order_in(S.PARTIALLY_FILLED)  # 2 filled, 802 held
    d_old, d_new = ask(old, qty="20")
    assert d_new.order.hold_amount == 998  # 18 x 100 - 802
    a, b = rp.replace_rejected(d_old.order, d_new.order,
                               event(VenueEventKind.REPLACE_REJECTED, text="too late"), NOW)
    assert (a.order.state, a.order.hold_amount, held(a)) == (S.PARTIALLY_FILLED, 802, 0)
    assert [u.event for u in a.updates] == ["order_replace_rejected"]
    assert (b.order.state, b.order.reject_code, b.order.hold_amount) == (S.REJECTED,
                                                                       "replace_rejected", 0)
    assert held(b) == -998 and "too late" in (b.order.reject_reason or "")


def test_a_sell_replace_holds_shares() -> None:
    sell = dataclasses.replace(order_in(S.ACKED), side="sell", hold_amount=D(10),
                               hold_currency="F", hold_sources={"shares": D(10)})
    d_old, d_new = ask(sell, qty="15")
    assert d_new.order.hold_amount == 5 and [t.kind for t in d_new.postings] == ["hold_shares"]
    _, b = rp.replaced(d_old.order, d_new.order, event(VenueEventKind.REPLACED), NOW)
    assert (b.order.qty, b.order.hold_amount, b.order.hold_sources) == (15, 15, {"shares": 15})
