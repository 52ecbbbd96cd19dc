"""Account figures (Alpaca's account object) derived from ledger balances. Pure.

Buying power is a risk rule and lives in :func:`domain.risk.buying_power`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from domain.ledger import unsettled_cash

ZERO = Decimal(0)


@dataclass(frozen=True)
class AccountFigures:
    cash: Decimal  # all cash the customer owns: available + held + unsettled
    cash_available: Decimal
    cash_held: Decimal
    cash_unsettled: Decimal
    long_market_value: Decimal
    equity: Decimal


def account_figures(
    balances: Mapping[str, Decimal], market_values: Mapping[str, Decimal] | None = None
) -> AccountFigures:
    available = balances.get("cash", ZERO)
    held = balances.get("cash_held", ZERO)
    unsettled = unsettled_cash(balances)
    total = available + held + unsettled
    lmv = sum((market_values or {}).values(), ZERO)
    return AccountFigures(
        cash=total,
        cash_available=available,
        cash_held=held,
        cash_unsettled=unsettled,
        long_market_value=lmv,
        equity=total + lmv,
    )


def share_positions(balances: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Shares owned per symbol (available + held for open sells + bought, not yet settled)."""
    out: dict[str, Decimal] = {}
    for name, qty in balances.items():
        base, _, sym = name.partition(":")
        if sym and base in ("shares", "shares_held", "shares_unsettled"):
            out[sym] = out.get(sym, ZERO) + qty
    return {s: q for s, q in out.items() if q != 0}
