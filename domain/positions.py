"""Positions: average-cost basis from fills and valuation at a price. Pure (no I/O, no clock).

Average-cost method: a buy adds its shares and their cost (qty x price); a sell removes shares at
the current average cost, so the average is unchanged by sells and realized P/L is
``qty x (price - average)``. The arithmetic is exact (:class:`fractions.Fraction`: an average like
100/3 never loses a digit across many fills); results are rounded only when turned into wire
values: prices to :data:`PRICE_PLACES`, money to :data:`MONEY_PLACES`, ratios to :data:`RATIO_PLACES`
(banker's rounding).

The ledger's share balances are the truth for *how many* shares an account has; the fills only
say what they cost. When the two differ (shares that arrived without a trade), the average cost of
the fills is applied to the ledger quantity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from domain.money import USD_SCALE, plain

PRICE_PLACES = 6  # the order's filled_avg_price scale
MONEY_PLACES = USD_SCALE
RATIO_PLACES = 6

ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    side: str  # buy | sell
    qty: Decimal
    price: Decimal
    # the cash the fill moved when it is not qty x price (a fill by the firm: a fraction
    # valued to the cent, a notional order at its notional; domain.fractional)
    value: Decimal | None = None

    @property
    def cost(self) -> Fraction:
        return Fraction(self.value) if self.value is not None else Fraction(self.qty) * Fraction(self.price)


@dataclass(frozen=True)
class Split:
    """A split of the position: ``old_qty`` shares became ``new_qty`` whole shares at
    ``new_rate`` for ``old_rate``; the part of the old position that made no whole new share
    was paid ``cash`` in lieu (a sale: its cost leaves, the difference is realized)."""

    new_rate: Decimal
    old_rate: Decimal
    old_qty: Decimal
    new_qty: Decimal
    cash: Decimal = ZERO


@dataclass(frozen=True)
class CostBasis:
    """What a sequence of fills leaves: shares, their exact cost, the P/L already realized."""

    qty: Decimal
    cost: Fraction
    realized_pl: Fraction
    last_price: Decimal | None

    @property
    def average(self) -> Fraction:
        return self.cost / Fraction(self.qty) if self.qty else Fraction(0)


def average_cost(fills: Iterable[Fill | Split]) -> CostBasis:
    """Fold fills (in booking order) into a cost basis by the average-cost method.

    A sell larger than the position (never expected: the ledger refuses selling shares not held)
    closes the position; the excess carries no cost. A split changes the quantity, not the cost
    (the average price moves by the inverse ratio).
    """
    qty = ZERO
    cost = Fraction(0)
    realized = Fraction(0)
    last: Decimal | None = None
    for f in fills:
        if isinstance(f, Split):
            if qty and f.old_qty:
                ratio = Fraction(f.new_rate) / Fraction(f.old_rate)
                kept = Fraction(f.new_qty) / (Fraction(f.old_qty) * ratio)  # of the old position
                sold_cost = cost * (1 - kept)
                realized += Fraction(f.cash) - sold_cost
                cost -= sold_cost
                qty = (f.new_qty if qty == f.old_qty
                       else to_decimal(Fraction(qty) * kept * ratio, 9))
            if last is not None:
                last = to_decimal(Fraction(last) * Fraction(f.old_rate) / Fraction(f.new_rate),
                                  PRICE_PLACES)
            continue
        if f.qty <= 0 or f.price <= 0:
            raise ValueError(f"a fill needs a positive qty and price: {f}")
        last = f.price
        if f.side == "buy":
            qty += f.qty
            cost += f.cost
        elif f.side == "sell":
            sold = min(f.qty, qty)
            if sold:
                avg = cost / Fraction(qty)
                realized += f.cost * Fraction(sold) / Fraction(f.qty) - Fraction(sold) * avg
                cost -= avg * Fraction(sold)
                qty -= sold
            if qty == 0:
                cost = Fraction(0)
        else:
            raise ValueError(f"side must be buy or sell, got {f.side!r}")
    return CostBasis(qty, cost, realized, last)


def cost_bases(fills: Iterable[tuple[datetime, str, Fill]], splits: Iterable[tuple[datetime, str, Split]],
               renamed: Mapping[str, tuple[str, datetime]]) -> dict[str, CostBasis]:
    """The cost basis per symbol of an account's fills and splits, each ``(booked at, symbol,
    fill or split)``, in their timeline (a split after a fill booked at the same instant).
    ``renamed``: symbol changes applied to the account (old symbol -> (new symbol, applied at)):
    a fill booked before the change counts for the new symbol. Used by ``GET /v2/positions``
    and the audit reconstruction (domain.reconstruction), so both fold the same way."""
    events: dict[str, list[tuple[datetime, int, Fill | Split]]] = {}
    for at, symbol, f in fills:
        sym = symbol
        while sym in renamed and at <= renamed[sym][1]:  # booked before the symbol changed
            sym = renamed[sym][0]
        events.setdefault(sym, []).append((at, 0, f))
    for at, symbol, sp in splits:
        events.setdefault(symbol, []).append((at, 1, sp))
    return {sym: average_cost(e for _, _, e in sorted(evs, key=lambda x: (x[0], x[1])))
            for sym, evs in events.items()}


def to_decimal(x: Fraction, places: int) -> Decimal:
    """Round an exact fraction to ``places`` decimals, half-even, in integer arithmetic."""
    d = x.denominator
    q, r = divmod(x.numerator * 10**places, d)  # floor division: 0 <= r < d
    if 2 * r > d or (2 * r == d and q % 2 == 1):
        q += 1
    return plain(Decimal(f"{q}E-{places}"))


@dataclass(frozen=True)
class PositionFigures:
    qty: Decimal
    avg_entry_price: Decimal
    cost_basis: Decimal
    current_price: Decimal | None
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    unrealized_plpc: Decimal | None


def position_figures(qty: Decimal, basis: CostBasis, price: Decimal | None) -> PositionFigures:
    """Figures of a long position of ``qty`` shares (the ledger's count) valued at ``price``.

    ``cost_basis`` = qty x exact average cost, rounded to money places; ``market_value`` =
    qty x price (exact); ``unrealized_pl`` = market value - cost basis; ``unrealized_plpc`` = that
    over the cost basis (0 when the cost basis is 0). Without a price the valuation is None.
    """
    avg = basis.average
    cost = to_decimal(avg * Fraction(qty), MONEY_PLACES)
    if price is None:
        return PositionFigures(qty, to_decimal(avg, PRICE_PLACES), cost, None, None, None, None)
    mv = plain(qty * price)
    pl = plain(mv - cost)
    plpc = to_decimal(Fraction(pl) / Fraction(cost), RATIO_PLACES) if cost else ZERO
    return PositionFigures(qty, to_decimal(avg, PRICE_PLACES), cost, price, mv, pl, plpc)


@dataclass(frozen=True)
class DayChange:
    """A position's move since the previous session's close (Alpaca's ``lastday_price``,
    ``change_today``, ``unrealized_intraday_pl(pc)``): the current price against the close,
    times the shares held now. None where either price is missing."""

    lastday_price: Decimal | None
    change_today: Decimal | None
    intraday_pl: Decimal | None
    intraday_plpc: Decimal | None


def day_change(qty: Decimal, current: Decimal | None, lastday: Decimal | None) -> DayChange:
    if current is None or lastday is None or lastday <= 0:
        return DayChange(lastday, None, None, None)
    change = to_decimal(Fraction(current - lastday) / Fraction(lastday), RATIO_PLACES)
    return DayChange(lastday, change, plain(qty * (current - lastday)), change)


def valuation_price(bid: Decimal | None, last_fill: Decimal | None) -> Decimal | None:
    """The price a long position is marked at: the latest bid (what selling it would fetch now);
    with no usable quote, the last fill price; else None."""
    if bid is not None and bid > 0:
        return bid
    return last_fill
