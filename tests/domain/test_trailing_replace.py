"""Replacing a waiting trailing stop at the broker (domain.trailing_replace): both orders in one
decision, the hold moved and resized to the cent or share, the hwm kept, refusals coded."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from domain import order_replace as rp
from domain.errors import DomainError
from domain.order_decision import Decision
from domain.order_row import OrderRow, new_order
from domain.orders import OrderState, parse_order_request
from tests.domain.test_order_machine import ACCT, NOW, OID

S = OrderState
D = Decimal
NEW = "00000000-0000-0000-0000-0000000000cc"


def waiting(side: str, **trail: str) -> OrderRow:
    req = parse_order_request({"symbol": "F", "side": side, "type": "trailing_stop", "qty": "10",
                               "time_in_force": "gtc", **trail})
    row = new_order(order_id=OID, account_id=ACCT, req=req, request_hash="h", actor="customer", now=NOW)
    hold = D("1061.06") if side == "buy" else D(10)
    source = "cash" if side == "buy" else "shares"
    return dataclasses.replace(row, state=S.FUNDS_HELD, hold_amount=hold, hold_sources={source: hold},
                               hwm=D("100"), stop_price=D("99") if side == "sell" else D("101"))


def replace(old: OrderRow, balances: dict[str, Decimal] | None = None,
            **change: Any) -> tuple[Decision, Decision]:
    return rp.request(old, rp.parse_replace(change), new_id=NEW, actor="customer", now=NOW,
                      ask=D("100.05"), collar=D("0.05"), balances=balances)


def moved(d: Decision, kind: str) -> Decimal:
    return sum((e.amount for t in d.postings if t.kind == kind for e in t.entries if e.amount > 0), D(0))


def test_a_sell_replaced_with_more_shares_holds_the_extra_settled_first() -> None:
    old, new = replace(waiting("sell", trail_price="1"),
                       balances={"shares:F": D(1), "shares_unsettled:F": D(5)}, qty="13", trail="2.5")
    assert old.order.state == S.REPLACED and old.order.hold_amount == 0
    assert str(old.order.replaced_by) == NEW and old.postings == ()
    row = new.order
    assert (row.state, row.qty, row.trail_price, row.hwm, row.stop_price) == (
        S.FUNDS_HELD, D(13), D("2.5"), D(100), D("97.5"))
    assert row.hold_amount == 13 and moved(new, "hold_shares") == 3
    assert row.hold_sources == {"shares": D(11), "shares_unsettled": D(2)}
    assert str(row.replaces) == OID and new.insert


def test_a_buy_replaced_smaller_releases_the_rest() -> None:
    _, new = replace(waiting("buy", trail_percent="1"), qty="5", trail="0.5")
    need = (D(5) * D("100.05") * D("1.005") * D("1.05")).quantize(D("0.01"), rounding="ROUND_CEILING")
    assert new.order.hold_amount == need and new.order.trail_percent == D("0.5")
    assert moved(new, "release_cash") == D("1061.06") - need
    assert new.order.stop_price == D("100.50")  # 100 x 1.005, the low-water mark kept


@pytest.mark.parametrize(("change", "code"), [
    ({"trail": "1"}, "nothing_to_replace"),
    ({"limit_price": "90"}, "replace_not_supported"),
    ({"trail": "1.001"}, "invalid_price_increment"),
])
def test_refusals(change: dict[str, str], code: str) -> None:
    with pytest.raises(DomainError) as err:
        replace(waiting("sell", trail_price="1"), **change)
    assert err.value.code == code


def test_a_percent_trail_is_bounded_and_a_routed_order_is_not_replaced_here() -> None:
    with pytest.raises(DomainError) as err:
        replace(waiting("sell", trail_percent="1"), trail="100")
    assert err.value.code == "trail_out_of_range"
    fired = dataclasses.replace(waiting("sell", trail_price="1"), state=S.ROUTED, venue="MM1")
    with pytest.raises(DomainError) as err:
        replace(fired, trail="2")
    assert err.value.code == "not_replaceable"
