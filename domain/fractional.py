"""Fractional and notional orders: what the firm fills itself, at what price. Pure.

Riskless principal: a venue only ever trades whole shares (FIX OrderQty stays whole). An order's
whole part goes to a venue as any order does; its fraction is filled by the firm, out of its own
inventory (the house ledger accounts ``inventory:SYM`` and ``inventory_cash``):

- with a whole part: when the venue has filled the whole part, at the price of the venue fill
  that completed it, in the same shard transaction (``domain.order_machine``); a whole part the
  venue only partly fills (canceled, expired) leaves the fraction unfilled;
- without one (``qty`` < 1, or a notional order): at once when the order would route, at the
  current quote's far side (the ask for a buy, the bid for a sell); a limit order only when that
  price is at or better than its limit (else it is rejected: nothing rests at the firm).

A notional order is filled entirely by the firm (its quantity is only known at the price): qty =
notional / price truncated to 9 decimals, and the customer's cash moves by the notional exactly
(the sub-share-unit difference is the firm's). A fraction of a qty order is valued at qty x
price rounded half up to the cent. The firm's position per symbol stays within
``max_inventory`` shares either way (a fill that would pass it is rejected); bringing it back
toward zero with whole-share orders is the rebalance (see docs/architecture.md).

Deliberately not here: reading quotes or balances, or writing anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal

from domain.orders import OrderError

HOUSE_VENUE = "house"  # the executions the firm fills itself are recorded under this venue
CENT = Decimal("0.01")
SHARE_STEP = Decimal("1E-9")
ZERO = Decimal(0)


def whole_part(qty: Decimal) -> Decimal:
    """The shares that go to a venue (whole)."""
    return qty.to_integral_value(rounding=ROUND_DOWN)


def fraction_of(qty: Decimal) -> Decimal:
    """The part of ``qty`` the firm fills (less than one share)."""
    return qty - whole_part(qty)


def house_only(qty: str) -> bool:
    """An order of ``qty`` (a snapshot's string; "0" for a notional order not yet filled) has
    no whole share: the firm fills all of it, no venue sees it."""
    return Decimal(qty) < 1


def venue_qty(qty: str) -> str:
    """The quantity sent to a venue (FIX OrderQty): the whole part, as a plain string."""
    return format(whole_part(Decimal(qty)), "f")


def fraction_value(qty: Decimal, price: Decimal) -> Decimal:
    """Cash value of a fractional fill: qty x price, rounded half up to the cent."""
    return (qty * price).quantize(CENT, rounding=ROUND_HALF_UP)


def notional_qty(notional: Decimal, price: Decimal) -> Decimal:
    """The shares a notional buys or sells at ``price``: the quotient truncated to 9 decimals."""
    return (notional / price).quantize(SHARE_STEP, rounding=ROUND_DOWN)


def notional_sell_hold(notional: Decimal, bid: Decimal | None, collar: Decimal) -> Decimal:
    """Shares a notional sell holds: what the notional is at the bid less the collar (so that a
    bid that falls by up to the collar before the fill is still covered)."""
    if bid is None or bid <= 0:
        raise OrderError("no current quote: notional orders need one", code="no_quote")
    return notional_qty(notional, bid * (1 - collar))


@dataclass(frozen=True)
class HouseTerms:
    """A fill by the firm: ``qty`` shares at ``price``, ``value`` cash."""

    qty: Decimal
    price: Decimal
    value: Decimal


def house_terms(*, side: str, qty: Decimal, notional: Decimal | None, limit_price: Decimal | None,
                bid: Decimal | None, ask: Decimal | None) -> HouseTerms:
    """The firm's fill of an order with no whole part, at the quote's far side. Raises
    ``no_quote`` without one, ``fractional_limit_not_marketable`` when a limit order's limit is
    not reached, ``notional_too_small`` when the notional buys no 1e-9 share."""
    price = ask if side == "buy" else bid
    if price is None or price <= 0:
        raise OrderError("no current quote to fill the fractional order at", code="no_quote")
    if limit_price is not None and (price > limit_price if side == "buy" else price < limit_price):
        raise OrderError(f"the {'ask' if side == 'buy' else 'bid'} {price} does not reach the limit "
                         f"{limit_price}: fractional limit orders fill only when marketable",
                         code="fractional_limit_not_marketable")
    if notional is not None:
        q = notional_qty(notional, price)
        if q <= 0:
            raise OrderError(f"${notional} buys no share at {price}", code="notional_too_small")
        return HouseTerms(q, price, notional)
    value = fraction_value(qty, price)
    if value <= 0:
        raise OrderError(f"{qty} shares at {price} is worth less than a cent",
                         code="fractional_value_too_small")
    return HouseTerms(qty, price, value)


def inventory_after(side: str, inventory: Decimal, qty: Decimal) -> Decimal:
    """The firm's position after it fills ``qty`` of a customer's ``side`` order (it sells to a
    buyer, buys from a seller)."""
    return inventory - qty if side == "buy" else inventory + qty


def check_inventory(side: str, inventory: Decimal, qty: Decimal, max_inventory: Decimal) -> None:
    """Refuse a fill that would take the firm's position beyond ``max_inventory`` shares
    either way (``fractional_inventory_limit``)."""
    after = inventory_after(side, inventory, qty)
    if abs(after) > max_inventory and abs(after) > abs(inventory):
        raise OrderError(f"the firm's inventory would be {after} shares (limit {max_inventory}): "
                         "try again after it is rebalanced", code="fractional_inventory_limit")


# --- rebalancing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RebalancePlan:
    """Whole shares the firm trades at a venue to bring its inventory back toward zero: it
    buys what it sold short to customers, sells what it bought from them."""

    side: str
    qty: Decimal


def rebalance_plan(inventory: Decimal) -> RebalancePlan | None:
    """The whole shares of ``inventory`` (None: less than one share away from zero)."""
    whole = whole_part(abs(inventory))
    if whole < 1:
        return None
    return RebalancePlan("buy" if inventory < 0 else "sell", whole)


def firm_account_id(shard: int, symbol: str) -> uuid.UUID:
    """The firm's own brokerage account that places the rebalance orders of ``symbol`` on
    ``shard`` (one per symbol, so that two symbols' rebalances never share a balance)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sherwood:firm-inventory:{shard}:{symbol}")


def rebalance_funding(plan: RebalancePlan, ask: Decimal | None, collar: Decimal) -> Decimal:
    """Cash the firm's account is given for a rebalance buy: the market hold (qty x ask x (1 +
    collar), up to the cent), or for a sell the shares to sell."""
    if plan.side == "sell":
        return plan.qty
    if ask is None or ask <= 0:
        raise OrderError("no current quote to rebalance at", code="no_quote")
    return (plan.qty * ask * (1 + collar)).quantize(CENT, rounding=ROUND_CEILING)
