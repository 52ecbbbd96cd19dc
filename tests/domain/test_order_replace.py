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
             ({"stop_price": "-5"}, "invalid_stop_price"),
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
    assert exc.value.code == "replace_not_supported" and "market" in exc.value.message
    with pytest.raises(OrderError) as exc:  # a limit order has no stop to move
        ask(order_in(S.ACKED), stop_price="90")
    assert exc.value.code == "replace_not_supported"
    with pytest.raises(OrderError) as exc:  # a stop order has no limit to move
        ask(stop_order("stop"), limit_price="90")
    assert exc.value.code == "replace_not_supported"
    # a fractional order: the venue has only its whole part
    fractional = dataclasses.replace(order_in(S.ACKED), qty=D("10.5"))
    with pytest.raises(OrderError) as exc:
        ask(fractional, limit_price="99")
    assert exc.value.code == "fractional_replace_not_supported"
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


def stop_order(kind: str, *, side: str = "buy", stop: str = "105", limit: str | None = "106",
               hold: str = "1060") -> OrderRow:
    """A working 10-share ``stop`` / ``stop_limit`` order (a stop buy held 10 x 106 here: its
    hold is the estimate of the accept, stop x (1 + collar))."""
    return dataclasses.replace(
        order_in(S.ACKED), order_type=kind, stop_price=D(stop), side=side,
        limit_price=D(limit) if kind == "stop_limit" else None, hold_amount=D(hold),
        hold_currency="USD" if side == "buy" else "F",
        hold_sources={"cash" if side == "buy" else "shares": D(hold)})


def test_a_stop_limit_order_takes_a_new_stop_and_limit() -> None:
    old = stop_order("stop_limit")
    d_old, d_new = ask(old, stop_price="110", limit_price="111")
    new = d_new.order
    assert d_old.order.state == S.PENDING_REPLACE
    assert (new.order_type, new.stop_price, new.limit_price, new.qty) == ("stop_limit", 110, 111, 10)
    assert new.hold_amount == 50 and held(d_new) == 50  # 10 x 111 - 1,060
    send = rp.venue_replace(d_old.order, new, 0)
    assert (send.order.order_type, send.order.stop_price, send.order.limit_price) == (
        "stop_limit", "110", "111")
    _, b = rp.replaced(d_old.order, new, event(VenueEventKind.REPLACED), NOW)
    assert (b.order.state, b.order.hold_amount, held(b)) == (S.ACKED, 1110, 0)


def test_a_stop_buy_holds_its_new_estimate_and_keeps_it() -> None:
    """A stop buy's hold is an estimate (what the ask will be at the trigger is unknown): the
    replacement holds qty x max(ask, stop) x (1 + collar) and keeps both holds once replaced;
    its fills top up or release as any market-type buy's."""
    old = stop_order("stop", hold="1060")
    d_old, d_new = rp.request(old, rp.parse_replace({"qty": "12", "stop_price": "108"}), new_id=NEW,
                              actor="customer", now=NOW, ask=D("100"), collar=D("0.05"))
    new = d_new.order
    assert (new.order_type, new.stop_price, new.limit_price, new.qty) == ("stop", 108, None, 12)
    assert new.hold_amount == D("1360.80") - 1060  # 12 x 108 x 1.05
    assert rp.venue_replace(d_old.order, new, 0).order.stop_price == "108"
    _, b = rp.replaced(d_old.order, new, event(VenueEventKind.REPLACED), NOW)
    assert (b.order.state, b.order.hold_amount, held(b)) == (S.ACKED, D("1360.80"), 0)
    # a lower stop needs less, but nothing is held twice and nothing is released before the end
    d_old, d_new = rp.request(old, rp.parse_replace({"stop_price": "100.50"}), new_id=NEW,
                              actor="customer", now=NOW, ask=D("100"), collar=D("0.05"))
    assert d_new.order.hold_amount == 0 and not d_new.postings


def test_a_stop_sell_replace_holds_shares() -> None:
    old = stop_order("stop", side="sell", stop="95", hold="10")
    d_old, d_new = ask(old, qty="12", stop_price="94")
    assert d_new.order.hold_amount == 2 and [t.kind for t in d_new.postings] == ["hold_shares"]
    _, b = rp.replaced(d_old.order, d_new.order, event(VenueEventKind.REPLACED), NOW)
    assert (b.order.qty, b.order.stop_price, b.order.hold_amount) == (12, 94, 12)


def test_a_client_order_id_already_used_is_refused() -> None:
    with pytest.raises(OrderError) as exc:
        rp.request(order_in(S.ACKED), rp.parse_replace({"qty": "12", "client_order_id": "mine"}),
                   new_id=NEW, actor="customer", now=NOW, client_order_id_taken=True)
    assert exc.value.code == "duplicate_client_order_id"


def test_the_replacement_passes_the_pre_trade_rules_of_a_new_order() -> None:
    from domain.risk import (
        AccountState,
        AssetStatus,
        PreTradeContext,
        Quotes,
        RiskLimits,
        SymbolControl,
    )
    account = AccountState("cash", "ACTIVE", False, None, False, {"cash": D(100000)}, D(0), [],
                           NOW.date())
    base = PreTradeContext(account=account, asset=AssetStatus(True, "active"),
                           quotes=Quotes(ask=D("100"), bid=D("99.90")), now=NOW, collar=D("0.05"),
                           limits=RiskLimits(enforce_market_hours=False))
    cases = [
        (dataclasses.replace(base, control=SymbolControl(halted=True)), {"qty": "12"}, "symbol_halted"),
        (dataclasses.replace(base, control=SymbolControl(restriction="blocked")), {"qty": "12"},
         "symbol_blocked"),
        (dataclasses.replace(base, account=dataclasses.replace(account, trading_blocked=True)),
         {"qty": "12"}, "trading_blocked"),
        (dataclasses.replace(base, shard_halt="books do not reconcile"), {"qty": "12"}, "shard_halted"),
        (base, {"limit_price": "150"}, "price_band"),
        (dataclasses.replace(base, limits=RiskLimits(max_order_notional=D(1500),
                                                     enforce_market_hours=False)),
         {"qty": "16"}, "max_notional_exceeded"),
        (base, {"qty": "200000"}, "max_qty_exceeded"),
    ]
    for ctx, change, code in cases:
        with pytest.raises(OrderError) as exc:
            rp.request(order_in(S.ACKED), rp.parse_replace(change), new_id=NEW, actor="customer",
                       now=NOW, ctx=ctx)
        assert exc.value.code == code, (change, exc.value)
    _, d_new = rp.request(order_in(S.ACKED), rp.parse_replace({"qty": "12"}), new_id=NEW,
                          actor="customer", now=NOW, ctx=base)
    assert d_new.order.hold_amount == 200


def test_an_unanswered_replace_leaves_the_original_stuck_and_rejects_the_replacement() -> None:
    d_old, d_new = ask(order_in(S.ACKED), qty="12")  # 200 more held
    a, b = rp.unanswered(d_old.order, d_new.order, NOW, reason="no answer")
    assert (a.order.state, a.order.hold_amount, held(a)) == (S.STUCK, 1000, 0)
    assert (b.order.state, b.order.reject_code, b.order.hold_amount, held(b)) == (
        S.REJECTED, "replace_unanswered", 0, -200)
    # the answer came first: nothing to give up
    late = rp.replace_rejected(d_old.order, d_new.order, event(VenueEventKind.REPLACE_REJECTED), NOW)
    x, y = rp.unanswered(late[0].order, late[1].order, NOW, reason="no answer")
    assert not x.changes and not y.changes
    # a Replaced after that is audited on the STUCK original; nothing moves
    c, d = rp.replaced(a.order, b.order, event(VenueEventKind.REPLACED), NOW)
    assert c.order.state == S.STUCK and c.order.hold_amount == 1000 and not c.postings
    assert [e.event for e in c.events] == ["replaced_late"] and not d.changes
