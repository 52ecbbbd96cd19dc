"""``pre_trade(ctx, req)``: every rule of the accept, in order, as a table (no database)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.orders import parse_order_request
from domain.risk import (
    AccountState,
    AssetStatus,
    Fill,
    PreTradeContext,
    Quotes,
    RiskLimits,
    SymbolControl,
    pre_trade,
)

D = Decimal
OPEN = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # a Wednesday, 10:00 New York
NIGHT = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
TODAY = date(2026, 12, 2)


def account(**kw: Any) -> AccountState:
    base = AccountState(account_type="cash", status="ACTIVE", trading_blocked=False, blocked_reason=None,
                        pattern_day_trader=False, balances={"cash": D(10000)}, provisional=D(0),
                        fills=[], today=TODAY)
    return dataclasses.replace(base, **kw)


def ctx(**kw: Any) -> PreTradeContext:
    base = PreTradeContext(account=account(), asset=AssetStatus(True, "active"),
                           quotes=Quotes(ask=D("187.50"), bid=D("187.40")), now=OPEN, collar=D("0.05"),
                           limits=RiskLimits())
    return dataclasses.replace(base, **kw)


def req(**kw: Any) -> Any:
    body = {"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day", "qty": "10",
            "limit_price": "187.50", **kw}
    return parse_order_request({k: v for k, v in body.items() if v is not None})


MARKET = {"type": "market", "limit_price": None}
DAY_TRADES = [Fill("AAPL", "buy", TODAY, 1), Fill("AAPL", "sell", TODAY, 2),
              Fill("F", "buy", TODAY, 3), Fill("F", "sell", TODAY, 4),
              Fill("GME", "buy", TODAY, 5), Fill("GME", "sell", TODAY, 6), Fill("MSFT", "buy", TODAY, 7)]

REJECTIONS = [
    ("unknown account", ctx(account=None), req(), "unknown_account", False),
    ("shard halted", ctx(shard_halt="reconciliation failed"), req(), "shard_halted", False),
    ("account blocked", ctx(account=account(trading_blocked=True)), req(), "trading_blocked", False),
    ("account closed", ctx(account=account(status="CLOSED")), req(), "trading_blocked", False),
    ("unknown symbol", ctx(asset=None), req(), "unknown_symbol", False),
    ("not tradable", ctx(asset=AssetStatus(False, "active")), req(), "not_tradable", False),
    ("inactive", ctx(asset=AssetStatus(True, "inactive")), req(), "not_tradable", False),
    ("halted", ctx(control=SymbolControl(halted=True)), req(), "symbol_halted", False),
    ("blocked", ctx(control=SymbolControl(restriction="blocked")), req(), "symbol_blocked", False),
    ("close only", ctx(control=SymbolControl(restriction="close_only")), req(), "symbol_close_only", False),
    ("extended hours at night", ctx(now=NIGHT), req(extended_hours=True), "market_closed", False),
    ("market without a quote", ctx(quotes=Quotes()), req(**MARKET), "no_quote", False),
    ("too many shares", ctx(limits=RiskLimits(max_order_qty=D(5))), req(), "max_qty_exceeded", False),
    ("too much money", ctx(limits=RiskLimits(max_order_notional=D(1000))), req(), "max_notional_exceeded",
     False),
    ("fat finger", ctx(), req(limit_price="250"), "price_band", False),
    ("flagged PDT buying", ctx(account=account(pattern_day_trader=True)), req(), "pattern_day_trader",
     False),
    ("4th day trade", ctx(account=account(fills=DAY_TRADES, balances={"cash": D(10000),
                                                                     "shares:MSFT": D(1)})),
     req(symbol="MSFT", side="sell", qty="1", limit_price="400"), "pattern_day_trader", False),
    ("buying power", ctx(account=account(balances={"cash": D(1000)})), req(), "insufficient_buying_power",
     True),
]


@pytest.mark.parametrize(("name", "c", "r", "code", "validated"), REJECTIONS,
                         ids=[x[0] for x in REJECTIONS])
def test_rejections(name: str, c: PreTradeContext, r: Any, code: str, validated: bool) -> None:
    out = pre_trade(c, r)
    assert out.rejection is not None and out.rejection.code == code, out
    assert out.validated is validated and out.rejection.reason


def test_a_market_order_at_night_is_held_and_queued_for_the_open() -> None:
    """Outside the session a market buy is accepted: its hold sized on the last quote with the
    collar, as in the session, and it routes at the next open (Thursday 9:30 New York)."""
    out = pre_trade(ctx(now=NIGHT), req(**MARKET))
    assert out.ok and out.validated, out
    assert out.amount == D(10) * D("187.50") * D("1.05")
    assert out.route_at == datetime(2026, 12, 3, 14, 30, tzinfo=UTC)
    assert pre_trade(ctx(), req(**MARKET)).route_at is None  # in the session: now


def test_market_hours_are_not_checked_when_not_enforced() -> None:
    out = pre_trade(ctx(now=NIGHT, limits=RiskLimits(enforce_market_hours=False)), req(**MARKET))
    assert out.ok and out.route_at is None


def test_the_checks_run_in_order() -> None:
    """An order wrong in several ways gets the first rule's code (shard before account before
    symbol before hours)."""
    everything = ctx(shard_halt="x", account=account(trading_blocked=True), asset=None, now=NIGHT)
    assert pre_trade(everything, req(**MARKET)).rejection.code == "shard_halted"  # type: ignore[union-attr]
    assert pre_trade(dataclasses.replace(everything, shard_halt=None),
                     req(**MARKET)).rejection.code == "trading_blocked"  # type: ignore[union-attr]


def test_a_limit_buy_holds_qty_times_limit_cash_first() -> None:
    out = pre_trade(ctx(account=account(balances={"cash": D(1000), "cash_unsettled@2026-12-03": D(1000)})),
                    req(qty="10", limit_price="187.50"))
    assert out.ok and out.validated and out.amount == D("1875.00")
    assert out.sources == {"cash": D(1000), "cash_unsettled@2026-12-03": D("875.00")}


def test_a_market_buy_holds_the_ask_plus_the_collar_rounded_up() -> None:
    out = pre_trade(ctx(), req(qty="3", **MARKET))
    assert out.ok and out.amount == D("590.63")  # 3 x 187.50 x 1.05 = 590.625


def test_a_sell_holds_settled_shares_first_then_unsettled() -> None:
    a = account(balances={"cash": D(0), "shares:F": D(4), "shares_unsettled:F": D(10)})
    out = pre_trade(ctx(account=a, quotes=Quotes(ask=D("12.31"), bid=D("12.30"))),
                    req(symbol="F", side="sell", qty="6", limit_price="12.30"))
    assert out.ok and out.amount == D(6) and out.sources == {"shares": D(4), "shares_unsettled": D(2)}


def test_instant_accounts_spend_provisional_deposits_up_to_the_allowance() -> None:
    a = account(account_type="instant", balances={"cash": D(5000)}, provisional=D(5000))
    assert pre_trade(ctx(account=a), req(qty="5", limit_price="187.50")).ok  # 937.50 <= 1,000
    out = pre_trade(ctx(account=a), req(qty="6", limit_price="187.50"))  # 1,125 > 1,000
    assert out.rejection is not None and out.rejection.code == "insufficient_buying_power"


def test_concentration_is_a_warning_not_a_rejection() -> None:
    out = pre_trade(ctx(account=account(balances={"cash": D(2000)})), req(qty="10", limit_price="187.50"))
    assert out.ok and out.warnings and "concentration" in out.warnings[0]


def test_fractional_and_notional_holds() -> None:
    """A notional buy holds its notional; a fractional limit holds qty x limit up to the cent; a
    notional sell holds the notional at the bid less the collar, or the whole position when that
    is less but still covers the notional at the bid; a non-fractionable asset refuses them."""
    def notional(side: str, amount: str) -> Any:
        return parse_order_request({"symbol": "AAPL", "side": side, "type": "market",
                                    "time_in_force": "day", "notional": amount})

    assert pre_trade(ctx(), notional("buy", "10")).amount == D(10)
    frac = pre_trade(ctx(), req(qty="0.333", limit_price="187.51"))
    assert frac.amount == D("62.45")  # 62.44083 up to the cent
    shares = {"cash": D(0), "shares:AAPL": D(5)}
    # 100 / (187.40 x 0.95) = 100 / 178.03 = 0.5617030837..., truncated
    assert pre_trade(ctx(account=account(balances=shares)), notional("sell", "100")).amount == \
        D("0.561703083")
    half = {"cash": D(0), "shares:AAPL": D("0.3"), "shares_unsettled:AAPL": D("0.25")}
    # 0.55 shares: less than the margin wants, more than $100 at the bid (0.533617...)
    assert pre_trade(ctx(account=account(balances=half)), notional("sell", "100")).amount == D("0.55")
    refused = pre_trade(ctx(asset=AssetStatus(True, "active", fractionable=False)), notional("buy", "10"))
    assert refused.rejection is not None and refused.rejection.code == "not_fractionable"
    whole = pre_trade(ctx(asset=AssetStatus(True, "active", fractionable=False)), req())
    assert whole.ok
    no_quote = pre_trade(ctx(quotes=Quotes()), notional("sell", "10"))
    assert no_quote.rejection is not None and no_quote.rejection.code == "no_quote"
