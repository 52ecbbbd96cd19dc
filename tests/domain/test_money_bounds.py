"""Bounded parsing of customer-entered numbers: checked on text, digits and exponent before any
arithmetic, with a code naming the field."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidAmount
from domain.money import (
    AMOUNT_BOUNDS,
    COLUMN_LIMIT,
    MAX_INPUT_DIGITS,
    PRICE_BOUNDS,
    QTY_BOUNDS,
    bounded_decimal,
    column_number,
)


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("3.0"), Decimal(3)), ("3", Decimal(3)), (3, Decimal(3)), (" 7 ", Decimal(7)),
    ("1e3", Decimal(1000)), (Decimal("1E+9"), Decimal(10) ** 9), (10**9, Decimal(10) ** 9),
    ("3.000000", Decimal(3)), ("3.5", Decimal("3.5")), ("0.000000001", Decimal("1E-9")),
])
def test_accepted_quantities(value: object, expected: Decimal) -> None:
    assert bounded_decimal(value, QTY_BOUNDS, field="qty") == expected


@pytest.mark.parametrize(("value", "code"), [
    ("1e26", "qty_out_of_range"), (Decimal("1E+50"), "qty_out_of_range"), (10**9 + 1, "qty_out_of_range"),
    pytest.param(10**100000, "qty_out_of_range", id="huge-int"),
    (Decimal("1e999999999999999999"), "qty_out_of_range"),
    ("1" * 1000, "qty_too_many_digits"), (Decimal("1" * 1000), "qty_too_many_digits"),
    ("1." + "0" * MAX_INPUT_DIGITS, "qty_too_many_digits"),
    ("NaN", "invalid_qty"), ("Infinity", "invalid_qty"), (Decimal("-Infinity"), "invalid_qty"),
    (Decimal("NaN"), "invalid_qty"), ("-0", "invalid_qty"), (Decimal("-0.0"), "invalid_qty"),
    (0, "invalid_qty"),
    ("1_000", "invalid_qty"), ("\u0663", "invalid_qty"), ("0x10", "invalid_qty"), ("", "invalid_qty"),
    ("3.0000000005", "invalid_qty"), (Decimal("1e-1000000"), "invalid_qty"), (3.0, "invalid_qty"),
    (True, "invalid_qty"),
    (None, "invalid_qty"), ([3], "invalid_qty"), ("1e99999", "invalid_qty"),
])
def test_refused_quantities(value: object, code: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(InvalidAmount) as err:
        bounded_decimal(value, QTY_BOUNDS, field="qty")
    assert err.value.code == code
    assert time.monotonic() - t0 < 0.1


def test_prices_and_amounts_have_their_own_bounds() -> None:
    assert bounded_decimal("1000000", PRICE_BOUNDS, field="limit_price") == 10**6
    assert bounded_decimal("0.0001", PRICE_BOUNDS, field="limit_price") == Decimal("0.0001")
    with pytest.raises(InvalidAmount, match="at most 1000000"):
        bounded_decimal("1000000.01", PRICE_BOUNDS, field="limit_price")
    with pytest.raises(InvalidAmount) as err:
        bounded_decimal("0.00001", PRICE_BOUNDS, field="limit_price", scale_code="invalid_price_increment")
    assert err.value.code == "invalid_price_increment"
    assert bounded_decimal(Decimal("10000000000.00"), AMOUNT_BOUNDS, field="amount") == 10**10
    with pytest.raises(InvalidAmount) as err:
        bounded_decimal("12.345", AMOUNT_BOUNDS, field="amount")
    assert err.value.code == "invalid_amount"


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10) ** 10, places=2))
def test_every_amount_within_bounds_is_read_exactly(d: Decimal) -> None:
    assert bounded_decimal(str(d), AMOUNT_BOUNDS, field="amount") == d
    assert bounded_decimal(d, AMOUNT_BOUNDS, field="amount") == d


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_either_within_bounds_or_refused_with_a_code(d: Decimal) -> None:
    try:
        got = bounded_decimal(d, AMOUNT_BOUNDS, field="amount")
    except InvalidAmount as exc:
        assert exc.code in ("invalid_amount", "amount_out_of_range", "amount_too_many_digits")
    else:
        assert 0 < got <= AMOUNT_BOUNDS.max_value and got == got.quantize(Decimal("0.01"))


@pytest.mark.parametrize(("text", "want"), [
    ("12.5", Decimal("12.5")), ("-3", Decimal(-3)), (None, None), ("", None), ("abc", None),
    ("NaN", None), ("Infinity", None), ("1E+27", None),
    ("999999999999999999999999999", Decimal(10) ** 27 - 1),
    ("0.123456789012", Decimal("0.1234567890")), ("1E+999999999", None), ("-1E+999999999", None),
    ("1" * 500, None), ("0", Decimal(0)),
])
def test_a_number_an_outsider_sent_is_kept_only_if_a_column_can_hold_it(text: str | None,
                                                                         want: Decimal | None) -> None:
    assert column_number(text) == want


@given(st.text(max_size=40))
def test_column_number_never_raises(text: str) -> None:
    got = column_number(text)
    assert got is None or (got.is_finite() and abs(got) < COLUMN_LIMIT)
