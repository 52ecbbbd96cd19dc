"""Good-faith violations in cash accounts (pure: no I/O).

A cash account buys with funds that have not settled yet (a provisional ACH credit still
outstanding when the buy was funded, or unsettled sale proceeds) and sells that position before
those funds settle: a good-faith violation. Three in a rolling 12 months restrict the account to
settled cash for 90 days (the buy side then may only use settled, non-provisional cash).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

WINDOW = timedelta(days=365)
LIMIT = 3
RESTRICTION = timedelta(days=90)


@dataclass(frozen=True)
class BuyLot:
    """A buy of the symbol: how much of it unsettled funds paid, and when those funds settle."""

    order_id: str
    trade_date: date
    qty: Decimal
    unsettled_funded: Decimal  # cash of the buy paid with funds not yet settled (0: fully settled)
    funds_settle_date: date | None  # when those funds settle (None: they were settled)


def violating_lots(sale_date: date, lots: Iterable[BuyLot]) -> list[BuyLot]:
    """Buy lots of the sold symbol paid (partly) with unsettled funds that are still unsettled
    on the sale's trade date: selling them is a good-faith violation."""
    return [lot for lot in lots
            if lot.unsettled_funded > 0 and lot.funds_settle_date is not None
            and lot.trade_date <= sale_date < lot.funds_settle_date]


def restriction_until(violation_dates: Iterable[date], today: date) -> date | None:
    """If the account has ``LIMIT`` or more violations in the 12 months up to ``today``, the
    last day of its settled-cash-only restriction (90 days from the latest), else None."""
    recent = sorted(d for d in violation_dates if today - WINDOW < d <= today)
    if len(recent) < LIMIT:
        return None
    return recent[-1] + RESTRICTION
