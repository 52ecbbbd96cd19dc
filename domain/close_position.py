"""Closing a position (``DELETE /v2/positions/{symbol}``): what the request asks to sell. Pure.

A close is a market sell for the day, placed through the normal order path (the API builds the
order request; the order workflow holds the shares, routes and books it). This module only
decides the quantity:

- ``qty``: that many shares (whole shares, the order's own bounds), at most the position;
- ``percentage``: that share of the position (0 < p <= 100, up to :data:`PERCENT_SCALE`
  decimals), rounded down to the order's quantity scale; 100 sells the whole position;
- neither: the whole position.

Whether the shares are free to sell (not held by an open sell) is checked here against the
position's figures (:func:`shortfall`), so the refusal can say what is available; the order
path checks again when it holds them (the authority: a sell placed meanwhile loses the race
there, not here). Does not read anything, place anything, or know HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from domain.errors import DomainError
from domain.money import QTY_BOUNDS, Bounds, bounded_decimal, plain

HUNDRED = Decimal(100)
PERCENT_SCALE = 9
PERCENT_BOUNDS = Bounds(HUNDRED, PERCENT_SCALE)


class CloseError(DomainError):
    """A close request that cannot be honored as asked (bad input, or nothing to sell)."""

    code = "invalid_close_request"


@dataclass(frozen=True)
class CloseRequest:
    qty: Decimal | None = None
    percentage: Decimal | None = None


def parse_close_request(qty: str | None, percentage: str | None) -> CloseRequest:
    """Validate the query parameters: at most one of them, each a bounded positive decimal.
    Codes: ``qty_and_percentage``, ``invalid_qty`` / ``qty_out_of_range`` / ``qty_too_many_digits``,
    ``invalid_percentage`` / ``percentage_out_of_range`` / ``percentage_too_many_digits``."""
    if qty is not None and percentage is not None:
        raise CloseError("give qty or percentage, not both", code="qty_and_percentage")
    if qty is not None:
        return CloseRequest(qty=plain(bounded_decimal(qty, QTY_BOUNDS, field="qty")))
    if percentage is not None:
        return CloseRequest(percentage=plain(bounded_decimal(percentage, PERCENT_BOUNDS,
                                                             field="percentage")))
    return CloseRequest()


def close_qty(position_qty: Decimal, req: CloseRequest) -> Decimal:
    """How many shares the close sells out of a position of ``position_qty`` (> 0).
    ``qty_exceeds_position`` when ``qty`` is more than the position; ``close_qty_zero`` when a
    percentage rounds down to nothing."""
    if req.qty is not None:
        if req.qty > position_qty:
            raise CloseError(f"qty {req.qty} is more than the position ({position_qty})",
                             code="qty_exceeds_position")
        return req.qty
    if req.percentage is None or req.percentage == HUNDRED:
        return position_qty
    step = Decimal(1).scaleb(-QTY_BOUNDS.scale)
    q = (position_qty * req.percentage / HUNDRED).quantize(step, rounding=ROUND_DOWN)
    if q <= 0:
        raise CloseError(f"{req.percentage}% of {position_qty} shares is less than "
                         f"{step} share", code="close_qty_zero")
    return plain(min(q, position_qty))
