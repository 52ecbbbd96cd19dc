"""Pre-trade risk rules. Pure functions of their inputs (balances, the calendar, controls, a
time): the accept step of an order runs them inside the transaction that holds the funds.

Every refusal is a :class:`RiskRejection` with a stable ``code`` and a human reason. Nothing here
reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain import calendar
from domain.errors import DomainError
from domain.orders import OrderRequest

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)
PDT_EQUITY = Decimal(25000)
PDT_WINDOW_DAYS = 5
PDT_MAX_DAY_TRADES = 3
EXTENDED_OPEN = time(7, 0)
EXTENDED_CLOSE = time(20, 0)


class RiskRejection(DomainError):
    code = "risk_rejected"


@dataclass(frozen=True)
class RiskLimits:
    max_order_notional: Decimal = Decimal(250000)
    max_order_qty: Decimal = Decimal(100000)
    price_band: Decimal = Decimal("0.10")  # a limit this far through the quote is a fat finger
    instant_allowance: Decimal = Decimal(1000)
    concentration: Decimal = Decimal("0.25")
    enforce_market_hours: bool = True


# --- buying power ------------------------------------------------------------------------

@dataclass(frozen=True)
class BuyingPower:
    cash: Decimal  # ledger `cash`: not held, settled or provisional
    unsettled: Decimal  # sale proceeds before T+1
    provisional: Decimal  # ACH deposits credited but not yet settled
    usable_provisional: Decimal
    total: Decimal


def buying_power(account_type: str, balances: Mapping[str, Decimal], provisional: Decimal,
                 limits: RiskLimits, *, settled_only: bool = False) -> BuyingPower:
    """``cash`` accounts: settled cash + unsettled sale proceeds. ``instant`` accounts: plus up to
    ``instant_allowance`` of provisional ACH credit. An account restricted for good-faith
    violations (``settled_only``) spends settled cash only. A hold has already left ``cash``, so
    nothing is subtracted twice."""
    cash = balances.get("cash", ZERO)
    unsettled = ZERO if settled_only else balances.get("cash_unsettled", ZERO)
    provisional = max(ZERO, min(provisional, cash))
    usable = (min(provisional, limits.instant_allowance)
              if account_type == "instant" and not settled_only else ZERO)
    total = max(ZERO, cash - provisional + usable + unsettled)
    return BuyingPower(cash, unsettled, provisional, usable, total)


def hold_sources(amount: Decimal, bp: BuyingPower) -> tuple[Decimal, Decimal]:
    """Split a cash hold between ``cash`` and ``cash_unsettled`` (cash first)."""
    from_cash = min(amount, max(ZERO, bp.cash))
    return from_cash, amount - from_cash


# --- market hours ------------------------------------------------------------------------

def session_phase(at: datetime) -> str:
    """``regular``, ``extended`` (7:00-9:30 and close-20:00 New York on a session day) or
    ``closed``."""
    if calendar.is_open(at):
        return "regular"
    local = at.astimezone(NY)
    if calendar.is_session(local.date()) and EXTENDED_OPEN <= local.time() < EXTENDED_CLOSE:
        return "extended"
    return "closed"


def check_market_hours(req: OrderRequest, at: datetime) -> None:
    """Regular session: everything. Outside it, market and stop orders are REJECTED (not queued:
    a market order's price is unknowable hours ahead; the customer can send a limit order).
    Extended hours trade only limit + day + extended_hours=true; other limit orders are accepted
    and rest at the venue for the open."""
    phase = session_phase(at)
    if phase == "regular":
        return
    if req.type in ("market", "stop"):
        raise RiskRejection(
            f"the market is {'in extended hours' if phase == 'extended' else 'closed'}: "
            f"{req.type} orders are accepted only during the regular session "
            f"(next open {calendar.next_open(at).astimezone(NY):%Y-%m-%d %H:%M} ET); "
            "send a limit order instead", code="market_closed")
    if req.extended_hours and phase == "closed":
        raise RiskRejection("extended-hours trading runs 7:00-20:00 ET on trading days",
                            code="market_closed")


# --- order limits ------------------------------------------------------------------------

def check_order_limits(req: OrderRequest, notional: Decimal, bid: Decimal | None, ask: Decimal | None,
                       limits: RiskLimits) -> None:
    if req.qty > limits.max_order_qty:
        raise RiskRejection(f"qty {req.qty} is above the maximum of {limits.max_order_qty} per order",
                            code="max_qty_exceeded")
    if notional > limits.max_order_notional:
        raise RiskRejection(f"order value {notional} is above the maximum of "
                            f"{limits.max_order_notional} per order", code="max_notional_exceeded")
    if req.limit_price is None:
        return
    if req.side == "buy" and ask and req.limit_price > ask * (1 + limits.price_band):
        raise RiskRejection(f"limit {req.limit_price} is more than {limits.price_band:.0%} above the ask "
                            f"{ask}: likely a fat finger", code="price_band")
    if req.side == "sell" and bid and req.limit_price < bid * (1 - limits.price_band):
        raise RiskRejection(f"limit {req.limit_price} is more than {limits.price_band:.0%} below the bid "
                            f"{bid}: likely a fat finger", code="price_band")


# --- controls ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SymbolControl:
    halted: bool = False
    restriction: str | None = None  # close_only | blocked
    reason: str = ""


def check_symbol(req: OrderRequest, control: SymbolControl | None) -> None:
    if control is None:
        return
    why = f" ({control.reason})" if control.reason else ""
    if control.halted:
        raise RiskRejection(f"trading in {req.symbol} is halted{why}", code="symbol_halted")
    if control.restriction == "blocked":
        raise RiskRejection(f"{req.symbol} cannot be traded{why}", code="symbol_blocked")
    if control.restriction == "close_only" and req.side == "buy":
        raise RiskRejection(f"{req.symbol} is close-only: positions may be sold, not bought{why}",
                            code="symbol_close_only")


# --- pattern day trading -----------------------------------------------------------------

@dataclass(frozen=True)
class Fill:
    symbol: str
    side: str
    trade_date: date
    seq: int  # order of booking


def day_trades(fills: Iterable[Fill], since: date) -> int:
    """Day trades on or after ``since``: each symbol and trading day where a position opened by a
    buy was then (partly) closed by a sell on the same day counts once."""
    bought: set[tuple[str, date]] = set()
    counted: set[tuple[str, date]] = set()
    for f in sorted(fills, key=lambda f: f.seq):
        key = (f.symbol, f.trade_date)
        if f.trade_date < since:
            continue
        if f.side == "buy":
            bought.add(key)
        elif key in bought:
            counted.add(key)
    return len(counted)


def pdt_window_start(today: date) -> date:
    """The first of the last ``PDT_WINDOW_DAYS`` business days ending ``today``."""
    d = today if calendar.is_session(today) else calendar.next_session(today)
    for _ in range(PDT_WINDOW_DAYS - 1):
        d = _previous_session(d)
    return d


def _previous_session(d: date) -> date:
    prev = d - timedelta(days=1)
    while not calendar.is_session(prev):
        prev -= timedelta(days=1)
    return prev


def check_pdt(req: OrderRequest, *, equity: Decimal, day_trade_count: int,
              bought_today: bool) -> None:
    """Under $25,000 of equity, an order that would make a 4th day trade in 5 business days is
    refused. Only a sell of a symbol bought today can make a day trade (no short selling)."""
    if equity >= PDT_EQUITY or req.side != "sell" or not bought_today:
        return
    if day_trade_count >= PDT_MAX_DAY_TRADES:
        raise RiskRejection(
            f"this sell would be day trade #{day_trade_count + 1} in {PDT_WINDOW_DAYS} business days "
            f"with equity {equity} below {PDT_EQUITY}: pattern day trader rule",
            code="pattern_day_trader")


def is_pattern_day_trader(day_trade_count: int) -> bool:
    return day_trade_count > PDT_MAX_DAY_TRADES


# --- concentration (soft) ----------------------------------------------------------------

def concentration_warning(symbol: str, position_value_after: Decimal, equity: Decimal,
                          limits: RiskLimits) -> str | None:
    if equity <= 0 or position_value_after <= limits.concentration * equity:
        return None
    share = position_value_after / equity
    return (f"concentration: {symbol} would be {share:.0%} of equity "
            f"(above {limits.concentration:.0%})")
