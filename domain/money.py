"""Exact decimal parsing for money and quantities. Never goes through float.

``parse_decimal`` accepts ``str``, ``int`` and ``Decimal`` (JSON numbers arrive as text when the
API parses them; floats are refused outright because they are already inexact).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from domain.errors import InvalidAmount

USD = "USD"
USD_SCALE = 4  # sub-penny fill prices x whole shares stay exact; display rounds to cents
SHARE_SCALE = 6  # whole shares today; room for fractional shares later


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
