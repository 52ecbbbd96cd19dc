"""Trailing stop requests (domain.orders.parse_order_request) and their buy hold."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.errors import DomainError
from domain.orders import buy_hold, parse_order_request

D = Decimal


def req(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": "AAPL", "qty": "10", "side": "sell", "type": "trailing_stop",
                            "time_in_force": "gtc"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(("over", "code"), [
    ({}, "missing_trail"),
    ({"trail_price": "1", "trail_percent": "1"}, "ambiguous_trail"),
    ({"trail_price": "1", "limit_price": "10"}, "unexpected_limit_price"),
    ({"trail_price": "1", "stop_price": "10"}, "unexpected_stop_price"),
    ({"trail_price": "1", "time_in_force": "ioc"}, "invalid_time_in_force"),
    ({"trail_price": "1", "time_in_force": "fok"}, "invalid_time_in_force"),
    ({"trail_price": "1", "time_in_force": "opg"}, "invalid_time_in_force"),  # auctions: market, limit
    ({"trail_price": "1", "extended_hours": True}, "invalid_extended_hours"),
    ({"trail_price": "0"}, "invalid_trail_price"),
    ({"trail_price": "-2"}, "invalid_trail_price"),
    ({"trail_price": "2.001"}, "invalid_price_increment"),
    ({"trail_price": "0.00001"}, "invalid_price_increment"),
    ({"trail_price": "1000000.01"}, "trail_price_out_of_range"),
    ({"trail_price": 1.5}, "invalid_trail_price"),  # a float: never through binary
    ({"trail_percent": "0"}, "invalid_trail_percent"),
    ({"trail_percent": "100"}, "trail_percent_out_of_range"),
    ({"trail_percent": "100.5"}, "trail_percent_out_of_range"),
    ({"trail_percent": "0.001"}, "invalid_trail_percent"),
    ({"trail_percent": "NaN"}, "invalid_trail_percent"),
    ({"type": "limit", "limit_price": "10", "trail_price": "1"}, "unexpected_trail"),
    ({"type": "market", "trail_percent": "1"}, "unexpected_trail"),
])
def test_bad_trailing_stops_are_refused_with_a_code(over: dict[str, Any], code: str) -> None:
    with pytest.raises(DomainError) as err:
        parse_order_request(req(**over))
    assert err.value.code == code


def test_a_trailing_stop_parses_and_hashes_apart_from_other_types() -> None:
    a = parse_order_request(req(trail_price="1.50"))
    assert (a.type, a.trail_price, a.trail_percent) == ("trailing_stop", D("1.50"), None)
    b = parse_order_request(req(trail_percent="2.5", time_in_force="day"))
    assert (b.trail_price, b.trail_percent) == (None, D("2.5"))
    assert a.hash() != parse_order_request(req(trail_price="1.51")).hash()
    assert a.hash() == parse_order_request(req(trail_price=D("1.5"))).hash()
    assert parse_order_request(a.to_wire()) == a
    # a limit order's hash is what it was before trailing stops existed (no trail keys)
    limit = parse_order_request({"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit",
                                 "time_in_force": "day", "limit_price": "10"})
    assert "trail_price" not in limit.to_wire()


@pytest.mark.parametrize(("over", "ask", "hold"), [
    ({"trail_price": "2"}, "100", D("10") * D("102") * D("1.05")),
    ({"trail_percent": "1"}, "100", D("10") * D("101") * D("1.05")),
    ({"trail_percent": "1"}, "33.33", D("353.47")),  # 10 x 33.6633 x 1.05 = 353.46465 -> up
])
def test_a_trailing_buy_holds_the_ask_plus_its_trail(over: dict[str, Any], ask: str, hold: Decimal) -> None:
    r = parse_order_request(req(side="buy", **over))
    assert buy_hold(r, D(ask), D("0.05")) == hold.quantize(D("0.01"), rounding="ROUND_CEILING")


def test_a_trailing_buy_without_a_quote_is_refused() -> None:
    r = parse_order_request(req(side="buy", trail_price="1"))
    with pytest.raises(DomainError) as err:
        buy_hold(r, None, D("0.05"))
    assert err.value.code == "no_quote"
