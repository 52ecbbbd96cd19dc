"""Pre-trade risk rules. Pure functions of their inputs (balances, the calendar, controls, a
time): the accept step of an order runs them inside the transaction that holds the funds.

Every refusal is a :class:`RiskRejection` with a stable ``code`` and a human reason. Nothing here
reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain import calendar, fractional
from domain.account import share_positions
from domain.errors import DomainError
from domain.hours import MarketClosed, route_at
from domain.ledger import (
    PROVISIONAL,
    SETTLED_CASH,
    SETTLED_SHARES,
    UNSETTLED_SHARES,
    proceeds_lots,
    unsettled_cash,
)
from domain.orders import OrderError, OrderRequest, buy_hold

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)
PDT_EQUITY = Decimal(25000)
PDT_WINDOW_DAYS = 5
PDT_MAX_DAY_TRADES = 3


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
    fractional_max_inventory: Decimal = Decimal(100)  # shares, either way (domain.fractional)


# --- buying power ------------------------------------------------------------------------

@dataclass(frozen=True)
class BuyingPower:
    cash: Decimal  # ledger `cash`: not held; settled, plus provisional ACH credit
    unsettled: Decimal  # sale proceeds before they settle (every lot), if the account may spend them
    provisional: Decimal  # ACH deposits credited but not yet settled (all of them)
    usable_provisional: Decimal  # how much of that the account type lets it spend
    total: Decimal

    @property
    def settled(self) -> Decimal:
        """Settled cash not held (negative while the account owes a shortfall)."""
        return self.cash - self.provisional


def buying_power(account_type: str, balances: Mapping[str, Decimal], provisional: Decimal,
                 limits: RiskLimits, *, settled_only: bool = False) -> BuyingPower:
    """``settled cash - provisional + min(provisional, allowance) + unsettled proceeds``:
    ``cash`` accounts spend settled cash and unsettled sale proceeds; ``instant`` accounts also
    up to ``instant_allowance`` of provisional ACH credit; an account restricted for good-faith
    violations (``settled_only``) spends settled cash only. ``cash`` holds settled and
    provisional money alike and every hold has already left it, so the allowance is used once,
    whatever the order of holds, and nothing is subtracted twice."""
    cash = balances.get("cash", ZERO)
    unsettled = ZERO if settled_only else unsettled_cash(balances)
    usable = (min(provisional, limits.instant_allowance)
              if account_type == "instant" and not settled_only else ZERO)
    total = max(ZERO, cash - provisional + usable + unsettled)
    return BuyingPower(cash, unsettled, provisional, usable, total)


def cash_sources(amount: Decimal, balances: Mapping[str, Decimal], bp: BuyingPower) -> dict[str, Decimal]:
    """Where a buy's hold comes from, safest first: settled cash, then unsettled proceeds lots
    (earliest settling first), then provisional ACH credit (only what buying power left)."""
    out: dict[str, Decimal] = {}
    settled = min(amount, max(ZERO, bp.settled))
    rest = amount - settled
    if settled:
        out[SETTLED_CASH] = settled
    if bp.unsettled:
        for lot, balance in proceeds_lots(balances):
            take = min(rest, balance)
            if take:
                out[lot] = take
                rest -= take
    if rest:
        out[PROVISIONAL] = rest
    return out


def share_sources(qty: Decimal, symbol: str, balances: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Where a sell's hold comes from: settled shares first, then bought ones not yet settled."""
    settled = min(qty, max(ZERO, balances.get(f"shares:{symbol}", ZERO)))
    out = {SETTLED_SHARES: settled, UNSETTLED_SHARES: qty - settled}
    return {k: v for k, v in out.items() if v}



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


def check_pdt_flag(req: OrderRequest, *, flagged: bool, equity: Decimal) -> None:
    """An account flagged as a pattern day trader with less than $25,000 of equity may only
    close positions."""
    if flagged and equity < PDT_EQUITY and req.side == "buy":
        raise RiskRejection("flagged pattern day trader with equity below $25,000: "
                            "only closing orders are accepted", code="pattern_day_trader")


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


# --- the whole pre-trade check -----------------------------------------------------------

@dataclass
class AccountState:
    """What the risk rules know about one account, read from its shard under the account's
    lock (``db.risk.load_account_risk``)."""

    account_type: str
    status: str
    trading_blocked: bool
    blocked_reason: str | None
    pattern_day_trader: bool
    balances: dict[str, Decimal]
    provisional: Decimal
    fills: list[Fill] = field(default_factory=list)
    today: date | None = None
    settled_cash_only: bool = False  # good-faith-violation restriction in force
    shortfall: Decimal = ZERO  # open shortfalls (money owed) recorded for the account

    @property
    def settled_cash(self) -> Decimal:
        """Settled cash not held: ``cash`` less the ACH credit still provisional."""
        return self.balances.get("cash", ZERO) - self.provisional

    @property
    def close_only(self) -> bool:
        """The account owes money (a shortfall not covered yet by settled cash): it may only
        close positions until it is covered."""
        return self.shortfall > 0 and self.settled_cash < 0

    @property
    def day_trade_count(self) -> int:
        assert self.today is not None
        return day_trades(self.fills, pdt_window_start(self.today))

    def bought_today(self, symbol: str) -> bool:
        return any(f.symbol == symbol and f.side == "buy" and f.trade_date == self.today
                   for f in self.fills)

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        cash = (self.balances.get("cash", ZERO) + self.balances.get("cash_held", ZERO)
                + unsettled_cash(self.balances))
        held = share_positions(self.balances)
        return cash + sum((q * prices.get(s, ZERO) for s, q in held.items()), ZERO)


@dataclass(frozen=True)
class Quotes:
    """Advisory prices: the order symbol's quote (market-order holds, price bands) and a price
    per held symbol (equity for the pattern-day-trader rule). None / missing: no quote."""

    ask: Decimal | None = None
    bid: Decimal | None = None
    prices: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class AssetStatus:
    tradable: bool
    status: str  # active | inactive
    fractionable: bool = True  # fractional and notional orders are taken


@dataclass(frozen=True)
class PreTradeContext:
    """Everything :func:`pre_trade` decides from."""

    account: AccountState | None  # None: no such account on this shard
    asset: AssetStatus | None  # None: no such symbol
    quotes: Quotes
    now: datetime
    collar: Decimal  # market buys hold qty x ask x (1 + collar)
    limits: RiskLimits = field(default_factory=RiskLimits)
    control: SymbolControl | None = None  # a halt or restriction of the symbol
    shard_halt: str | None = None  # why this shard takes no new orders, if it does not


@dataclass(frozen=True)
class Rejection:
    code: str
    reason: str


@dataclass(frozen=True)
class PreTrade:
    """The outcome of the pre-trade checks: what to hold and from where, or why not.

    ``validated``: the order passed the checks (a rejection then is about funds: the order was
    VALIDATED before it was refused). ``amount``: cash for a buy, shares for a sell;
    ``sources``: where it is held from (:func:`cash_sources`, :func:`share_sources`)."""

    validated: bool
    rejection: Rejection | None = None
    amount: Decimal = ZERO
    sources: Mapping[str, Decimal] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # outside the regular session: the next open, when the order goes to a venue (queued until
    # then, its hold taken now); None: it routes at once
    route_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.rejection is None


def pre_trade(ctx: PreTradeContext, req: OrderRequest) -> PreTrade:
    """Every pre-trade rule, in order, for ``req``: the account and shard may trade, the symbol
    is known and tradable, its controls, market hours, the hold (``no_quote`` for a market buy
    without a quote), order size and price bands, pattern day trading, then buying power or
    shares available. Soft warnings (concentration) ride along. Pure: the accept transaction
    loads ``ctx`` under the account's lock and posts what this returns."""
    try:
        amount, warnings, queued = _checks(ctx, req)
    except (RiskRejection, OrderError, MarketClosed) as exc:
        return PreTrade(validated=False, rejection=Rejection(exc.code, exc.message))
    refused, sources = hold_sources(ctx, req, amount)
    if refused is not None:
        return PreTrade(validated=True, amount=amount, warnings=warnings, route_at=queued,
                        rejection=refused)
    return PreTrade(validated=True, amount=amount, sources=sources, warnings=warnings, route_at=queued)


def hold_sources(ctx: PreTradeContext, req: OrderRequest,
                 amount: Decimal) -> tuple[Rejection | None, dict[str, Decimal]]:
    """Where a hold of ``amount`` for ``req`` comes from (:func:`cash_sources` within buying
    power, :func:`share_sources`), or why it cannot be (``insufficient_buying_power``; shares
    short are the ledger's refusal)."""
    account = ctx.account
    assert account is not None
    if req.side == "buy":
        bp = buying_power(account.account_type, account.balances, account.provisional, ctx.limits,
                          settled_only=account.settled_cash_only)
        if amount > bp.total:
            return Rejection("insufficient_buying_power",
                             f"insufficient buying power: need {amount}, have {bp.total}"), {}
        return None, cash_sources(amount, account.balances, bp)
    return None, share_sources(amount, req.symbol, account.balances)


def replace_refusal(ctx: PreTradeContext, req: OrderRequest) -> Rejection | None:
    """Why a cancel/replace's new terms ``req`` are refused, or None: the rules of
    :func:`pre_trade` (the account and shard may trade, the symbol is tradable, its halts and
    restrictions, extended hours, order size, price bands, pattern day trading), with the codes
    a new order gets. Not buying power: the replacement holds only what it needs beyond the
    original's hold, and the ledger refuses that posting when the account cannot pay
    (``insufficient_buying_power``). Not the queue for the open either: the order is at a venue
    already, and its replacement goes there at once."""
    try:
        _checks(ctx, req)
    except (RiskRejection, OrderError, MarketClosed) as exc:
        return Rejection(exc.code, exc.message)
    return None


def sell_hold(req: OrderRequest, bid: Decimal | None, collar: Decimal,
              balances: Mapping[str, Decimal]) -> Decimal:
    """Shares a sell holds: its qty; for a notional sell, the notional at the bid less the
    collar (``domain.fractional.notional_sell_hold``), or the whole position when that is less
    but still covers the notional at the bid (selling "all of it" in dollars)."""
    if req.notional is None:
        return req.qty
    hold = fractional.notional_sell_hold(req.notional, bid, collar)
    assert bid is not None
    have = max(ZERO, balances.get(f"shares:{req.symbol}", ZERO)) + \
        max(ZERO, balances.get(f"shares_unsettled:{req.symbol}", ZERO))
    if have < hold and have >= fractional.notional_qty(req.notional, bid):
        return have
    return hold


def hold_refused(req: OrderRequest, pre: PreTrade) -> Rejection:
    """Why the order is rejected when the ledger refuses its hold (the balance moved under it)."""
    if req.side == "buy":
        return Rejection("insufficient_buying_power", f"insufficient buying power: need {pre.amount}")
    return Rejection("insufficient_qty", f"insufficient {req.symbol} shares available: need {pre.amount}")


def _checks(ctx: PreTradeContext, req: OrderRequest) -> tuple[Decimal, tuple[str, ...], datetime | None]:
    account = ctx.account
    if account is None:
        raise RiskRejection("unknown account", code="unknown_account")
    if ctx.shard_halt:
        raise RiskRejection(f"trading is suspended on this account's shard: {ctx.shard_halt}",
                            code="shard_halted")
    if account.status != "ACTIVE" or account.trading_blocked:
        raise RiskRejection(f"trading is blocked on this account: {account.blocked_reason or ''}",
                            code="trading_blocked")
    if account.close_only and req.side == "buy":
        raise RiskRejection(
            f"the account owes {-account.settled_cash} (a returned deposit or a fill above its hold): "
            "only closing orders are accepted until a settled deposit or sale proceeds cover it",
            code="account_close_only")
    if ctx.asset is None:
        raise RiskRejection(f"unknown symbol {req.symbol}", code="unknown_symbol")
    if not ctx.asset.tradable or ctx.asset.status != "active":
        raise RiskRejection(f"{req.symbol} is not tradable", code="not_tradable")
    check_symbol(req, ctx.control)
    if req.fractional and not ctx.asset.fractionable:
        raise RiskRejection(f"{req.symbol} is not fractionable: order whole shares",
                            code="not_fractionable")
    # when it goes to a venue: None for now, else the next open (queued until then); raises
    # market_closed for an extended-hours order outside the extended session
    queued = route_at(req, ctx.now) if ctx.limits.enforce_market_hours else None
    quotes = ctx.quotes
    amount = buy_hold(req, quotes.ask, ctx.collar) if req.side == "buy" else \
        sell_hold(req, quotes.bid, ctx.collar, account.balances)
    ref = req.limit_price or quotes.ask or quotes.bid or ZERO
    check_order_limits(req, amount if req.side == "buy" else req.notional or req.qty * ref, quotes.bid,
                       quotes.ask, ctx.limits)
    prices = {**quotes.prices}
    if quotes.bid:
        prices.setdefault(req.symbol, quotes.bid)
    equity = account.equity(prices)
    check_pdt_flag(req, flagged=account.pattern_day_trader, equity=equity)
    check_pdt(req, equity=equity, day_trade_count=account.day_trade_count,
              bought_today=account.bought_today(req.symbol))
    warnings: tuple[str, ...] = ()
    if req.side == "buy":
        position = share_positions(account.balances).get(req.symbol, ZERO) + req.qty
        warn = concentration_warning(req.symbol, position * (prices.get(req.symbol) or ref), equity,
                                     ctx.limits)
        if warn:
            warnings = (warn,)
    return amount, warnings, queued
