"""Exact decimal parsing for money and quantities. Never goes through float.

``parse_decimal`` accepts ``str``, ``int`` and ``Decimal`` (JSON numbers arrive as Decimal,
read from their text, when the API parses them; floats are refused outright because they are
already inexact). ``bounded_decimal`` is what customer input goes through: it also bounds the
text, the digits and the magnitude before any arithmetic is done with the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from domain.errors import InvalidAmount

USD = "USD"
USD_SCALE = 4  # sub-penny fill prices x whole shares stay exact; display rounds to cents
SHARE_SCALE = 9  # fractional shares: Alpaca takes up to 9 decimals

# Customer input: a number is at most this many significant digits (trailing zeros count) and,
# written as a string, this many characters; ASCII digits only (Decimal() would also read
# "1_000" and non-ASCII digits).
MAX_INPUT_DIGITS = 24
MAX_INPUT_CHARS = 40
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


@dataclass(frozen=True)
class Bounds:
    """What a customer-entered number may be: at most ``max_value``, at most ``scale`` decimal
    places (trailing zeros beyond it are fine: ``3.0`` shares is 3)."""

    max_value: Decimal
    scale: int


QTY_BOUNDS = Bounds(Decimal(10) ** 9, SHARE_SCALE)  # shares per order (fractions: DAY market/limit)
NOTIONAL_BOUNDS = Bounds(Decimal(10) ** 7, 2)  # USD per notional (dollar-amount) order
PRICE_BOUNDS = Bounds(Decimal(10) ** 6, 4)  # USD per share (the increment rule is the order's)
AMOUNT_BOUNDS = Bounds(Decimal(10) ** 10, 2)  # USD per transfer


def bounded_decimal(value: object, bounds: Bounds, *, field: str, scale_code: str | None = None) -> Decimal:
    """Parse customer input to a finite Decimal within ``bounds``, or raise :class:`InvalidAmount`
    with a code naming the field: ``invalid_<field>`` (not a number, not finite, not positive,
    too many decimals, or ``scale_code`` for that), ``<field>_too_many_digits``,
    ``<field>_out_of_range``.

    Every check is on the text or the Decimal's digits and exponent, before any arithmetic, so a
    hostile number (``1E+50``, a thousand digits) costs nothing. Zero and negative numbers are
    refused (every bounded input is a positive amount). Does not round: ``3.5`` shares is refused.
    """
    invalid = f"invalid_{field}"
    if isinstance(value, bool | float):
        raise InvalidAmount(f"{field}: {type(value).__name__} is not a decimal number", code=invalid)
    if isinstance(value, int):
        if abs(value) > int(bounds.max_value):  # int to int: a huge int is refused unconverted
            raise InvalidAmount(f"{field}: must be at most {bounds.max_value:f}",
                                code=f"{field}_out_of_range")
        d = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidAmount(f"{field}: more than {MAX_INPUT_CHARS} characters",
                                code=f"{field}_too_many_digits")
        if not _DECIMAL_TEXT.fullmatch(text):
            raise InvalidAmount(f"{field}: {text!r} is not a decimal number", code=invalid)
        d = Decimal(text)
    elif isinstance(value, Decimal):
        d = value
    else:
        raise InvalidAmount(f"{field}: {type(value).__name__} is not a decimal number", code=invalid)
    if not d.is_finite():
        raise InvalidAmount(f"{field}: must be a finite number", code=invalid)
    if len(d.as_tuple().digits) > MAX_INPUT_DIGITS:
        raise InvalidAmount(f"{field}: more than {MAX_INPUT_DIGITS} digits", code=f"{field}_too_many_digits")
    if d > bounds.max_value:
        raise InvalidAmount(f"{field}: must be at most {bounds.max_value:f}", code=f"{field}_out_of_range")
    if d <= 0:
        raise InvalidAmount(f"{field}: must be greater than zero", code=invalid)
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    # 0 < d <= max_value and at most MAX_INPUT_DIGITS digits: quantize cannot overflow here
    if exp < -bounds.scale and (exp < -MAX_INPUT_DIGITS - bounds.scale
                                or d != d.quantize(Decimal(1).scaleb(-bounds.scale))):
        raise InvalidAmount(f"{field}: at most {bounds.scale} decimal places", code=scale_code or invalid)
    return d


def parse_decimal(value: object, *, field: str = "amount") -> Decimal:
    """Parse ``value`` to a finite Decimal or raise :class:`InvalidAmount`."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount(f"{field}: floats are not accepted for money or quantities")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidAmount(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise InvalidAmount(f"{field}: {type(value).__name__} is not a decimal number")
    if not d.is_finite():
        raise InvalidAmount(f"{field}: {value!r} is not finite")
    return d


def scale_of(currency: str) -> int:
    return USD_SCALE if currency == USD else SHARE_SCALE


def check_scale(amount: Decimal, currency: str, *, field: str = "amount") -> Decimal:
    """Refuse amounts with more decimal places than ``currency`` allows (never round silently)."""
    exp = amount.as_tuple().exponent
    assert isinstance(exp, int)
    if -exp > scale_of(currency) and amount != amount.quantize(Decimal(1).scaleb(-scale_of(currency))):
        raise InvalidAmount(
            f"{field}: {amount} has more than {scale_of(currency)} decimal places for {currency}"
        )
    return amount


def positive_amount(value: object, currency: str, *, field: str = "amount") -> Decimal:
    """Parse a strictly positive amount within the scale of ``currency``."""
    d = parse_decimal(value, field=field)
    if d <= 0:
        raise InvalidAmount(f"{field}: must be greater than zero, got {d}")
    return check_scale(d, currency, field=field)


# what a numeric(38, 10) column holds: fewer than 28 digits before the point, 10 after
COLUMN_LIMIT = Decimal(10) ** 27
COLUMN_SCALE = Decimal("1E-10")


def column_number(text: str | None) -> Decimal | None:
    """A number an outsider sent as text (a venue's quantity or price, a route's quote), if it
    is a finite number a numeric(38, 10) column can hold (more than 10 decimals rounded off),
    else None. Never raises: what to do with an unreadable number is the caller's decision."""
    if not text or len(text) > 64:  # a 38-digit number with sign, point and exponent fits
        return None
    try:
        d = Decimal(text)
    except (ArithmeticError, ValueError):
        return None
    # by the exponent first: abs() of a huge finite number (1E+999999999) overflows the context
    if not d.is_finite() or (d and d.adjusted() >= 27):
        return None
    return d.quantize(COLUMN_SCALE) if d.as_tuple().exponent < -10 else d  # type: ignore[operator]


def plain(d: Decimal) -> Decimal:
    """``d`` without trailing zeros and never in exponent form (``400`` not ``4E+2``)."""
    n = d.normalize()
    exp = n.as_tuple().exponent
    return n.quantize(Decimal(1)) if isinstance(exp, int) and exp > 0 else n


def money_str(d: Decimal, places: int = 2) -> str:
    """Display form for API responses: at least ``places`` decimals, never fewer digits than exact."""
    p = plain(d)
    exp = p.as_tuple().exponent
    assert isinstance(exp, int)
    return format(p, "f") if -exp > places else format(p.quantize(Decimal(1).scaleb(-places)), "f")
