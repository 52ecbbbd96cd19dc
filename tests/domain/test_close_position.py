"""What closing a position sells: qty, percentage (rounded down to 1e-9 share: fractions are
sold too) or everything;
bad input refused with a code before anything is read or placed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.close_position import CloseError, CloseRequest, close_qty, parse_close_request
from domain.errors import DomainError

D = Decimal


@pytest.mark.parametrize(("qty", "pct", "position", "sells"), [
    (None, None, D(10), D(10)),
    ("4", None, D(10), D(4)),
    ("4.0", None, D(10), D(4)),
    ("10", None, D(10), D(10)),
    (None, "50", D(10), D(5)),
    (None, "33.3", D(10), D("3.33")),  # a fraction of a share is sold too (Alpaca)
    (None, "33.333333333", D(10), D("3.333333333")),  # rounds down to 1e-9 share
    (None, "99.999999999", D(10), D("9.999999999")),
    ("0.5", None, D("2.5"), D("0.5")),
    (None, None, D("0.053347"), D("0.053347")),
    (None, "100", D(7), D(7)),
    (None, "100.000", D(7), D(7)),
])
def test_what_a_close_sells(qty: str | None, pct: str | None, position: Decimal, sells: Decimal) -> None:
    got = close_qty(position, parse_close_request(qty, pct))
    assert got == sells and str(got) == str(sells)


@pytest.mark.parametrize(("qty", "pct", "code"), [
    ("1", "50", "qty_and_percentage"),
    ("abc", None, "invalid_qty"), ("-1", None, "invalid_qty"), ("0", None, "invalid_qty"),
    ("1.0000000001", None, "invalid_qty"), ("NaN", None, "invalid_qty"), ("1e26", None, "qty_out_of_range"),
    ("9" * 60, None, "qty_too_many_digits"),
    (None, "0", "invalid_percentage"), (None, "-5", "invalid_percentage"),
    (None, "abc", "invalid_percentage"), (None, "100.5", "percentage_out_of_range"),
    (None, "1e3", "percentage_out_of_range"), (None, "0.0000000001", "invalid_percentage"),
    (None, "inf", "invalid_percentage"),
])
def test_bad_close_requests_are_refused_with_a_code(qty: str | None, pct: str | None, code: str) -> None:
    with pytest.raises(DomainError) as err:
        parse_close_request(qty, pct)
    assert err.value.code == code


def test_a_close_cannot_sell_more_than_the_position_or_nothing() -> None:
    with pytest.raises(CloseError) as err:
        close_qty(D(3), CloseRequest(qty=D(4)))
    assert err.value.code == "qty_exceeds_position"
    with pytest.raises(CloseError) as err:
        close_qty(D("0.000000001"), CloseRequest(percentage=D(10)))  # below 1e-9 share
    assert err.value.code == "close_qty_zero"
