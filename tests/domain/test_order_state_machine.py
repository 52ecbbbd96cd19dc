"""Property tests of the order state machine and fill arithmetic (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.orders import (
    ALPACA_STATUS,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    OrderError,
    OrderState,
    apply_fill,
    buy_hold,
    parse_order_request,
    transition,
)

ALPACA = {"new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced",
          "pending_cancel", "pending_replace", "accepted", "pending_new", "accepted_for_bidding",
          "stopped", "rejected", "suspended", "calculated", "pending_review", "held"}


def test_every_state_maps_to_a_status_alpaca_clients_know() -> None:
    assert set(ALPACA_STATUS) == set(OrderState)
    assert set(ALPACA_STATUS.values()) <= ALPACA


def test_terminal_states_have_no_way_out() -> None:
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()


@given(st.lists(st.sampled_from(list(OrderState)), min_size=1, max_size=30))
def test_random_walks_never_leave_a_terminal_state(path: list[OrderState]) -> None:
    state = OrderState.PENDING
    for nxt in path:
        if nxt == state or nxt in TRANSITIONS[state]:
            state = transition(state, nxt)
        else:
            with pytest.raises(InvalidTransition):
                transition(state, nxt)
        # every reachable state can still reach an end (no trap other than the terminals)
        assert state in TERMINAL or any(t in TERMINAL for t in _reachable(state))


def _reachable(state: OrderState) -> set[OrderState]:
    seen, todo = set(), [state]
    while todo:
        s = todo.pop()
        for t in TRANSITIONS[s]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


@given(qty=st.integers(1, 2000), slices=st.lists(st.integers(1, 500), min_size=1, max_size=12),
       prices=st.lists(st.decimals("0.5", "500", places=4), min_size=12, max_size=12),
       limit=st.decimals("1", "600", places=2))
def test_fills_never_overfill_and_the_hold_covers_or_tops_up(qty, slices, prices, limit) -> None:
    hold = qty * limit
    filled, value, remaining = Decimal(0), Decimal(0), hold
    topups = Decimal(0)
    for size, px in zip(slices, prices, strict=False):
        last = Decimal(size)
        if filled + last > qty:
            with pytest.raises(OrderError):
                apply_fill("buy", qty=Decimal(qty), filled_qty=filled, filled_value=value,
                           hold_remaining=remaining, last_qty=last, last_px=px)
            break
        m = apply_fill("buy", qty=Decimal(qty), filled_qty=filled, filled_value=value,
                       hold_remaining=remaining, last_qty=last, last_px=px)
        assert m.value == last * px
        assert m.hold_remaining >= 0
        topups += m.topup
        filled, value, remaining = m.filled_qty, m.filled_value, m.hold_remaining
        # money is conserved: what was held + topped up = what was paid + what is still held
        assert hold + topups == value + remaining
        assert abs(m.avg_price * filled - value) <= filled * Decimal("0.000001")


@pytest.mark.parametrize("body,code", [
    ({"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}, "invalid_qty"),
    ({"symbol": "AAPL", "qty": 0, "side": "buy", "type": "market", "time_in_force": "day"}, "invalid_qty"),
    ({"symbol": "AAPL", "qty": 1, "side": "hold", "type": "market", "time_in_force": "day"}, "invalid_side"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "trailing_stop", "time_in_force": "day"},
     "missing_trail"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "stop", "stop_price": "5",
      "time_in_force": "opg"}, "invalid_time_in_force"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "stop", "time_in_force": "day"},
     "missing_stop_price"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day",
      "limit_price": "1"}, "unexpected_limit_price"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "gtc",
      "extended_hours": True}, "invalid_extended_hours"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "limit_price": "0.99999",
      "time_in_force": "day"}, "invalid_price_increment"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "limit_price": "1.001",
      "time_in_force": "day"}, "invalid_price_increment"),
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "limit_price": 1.5,
      "time_in_force": "day"}, "invalid_limit_price"),  # a Python float (the API decodes Decimals)
    ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day",
      "client_order_id": "x" * 129}, "invalid_client_order_id"),
])
def test_bad_requests_have_stable_codes(body: dict, code: str) -> None:
    with pytest.raises(DomainError) as info:
        parse_order_request(body)
    assert info.value.code == code


def test_price_increments_at_the_dollar_edge() -> None:
    ok = {"symbol": "SNDL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day"}
    assert parse_order_request({**ok, "limit_price": "0.9999"}).limit_price == Decimal("0.9999")
    assert parse_order_request({**ok, "limit_price": "1.00"}).limit_price == Decimal("1")


def test_market_hold_uses_the_collar_and_needs_a_quote() -> None:
    req = parse_order_request({"symbol": "AAPL", "qty": 10, "side": "buy", "type": "market",
                               "time_in_force": "day"})
    assert buy_hold(req, Decimal("187.50"), Decimal("0.05")) == Decimal("1968.75")
    assert buy_hold(req, Decimal("187.51"), Decimal("0.05")) == Decimal("1968.86")  # rounded up
    with pytest.raises(OrderError) as info:
        buy_hold(req, None, Decimal("0.05"))
    assert info.value.code == "no_quote"


def test_same_body_same_hash_whatever_the_number_format() -> None:
    a = parse_order_request({"symbol": "aapl", "qty": 10, "side": "buy", "type": "limit",
                             "limit_price": "187.50", "time_in_force": "day"})
    b = parse_order_request({"symbol": "AAPL", "qty": "10.0", "side": "buy", "type": "limit",
                             "limit_price": "187.5", "time_in_force": "day"})
    assert a.hash() == b.hash()
