"""Table-driven tests of every pre-trade rule at its edges (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.orders import parse_order_request
from domain.risk import (
    Fill,
    RiskLimits,
    RiskRejection,
    SymbolControl,
    buying_power,
    cash_sources,
    check_order_limits,
    check_pdt,
    check_symbol,
    concentration_warning,
    day_trades,
    is_pattern_day_trader,
    pdt_window_start,
)

L = RiskLimits()
D = Decimal


def req(**kw):
    base = {"symbol": "AAPL", "qty": 10, "side": "buy", "type": "limit", "limit_price": "100",
            "time_in_force": "day"}
    base.update(kw)
    return parse_order_request({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("kind,bal,prov,expected", [
    ("cash", {"cash": D(1000)}, D(0), D(1000)),
    ("cash", {"cash": D(1000), "cash_unsettled": D(250)}, D(0), D(1250)),  # unsettled proceeds count
    ("cash", {"cash": D(1000)}, D(400), D(600)),  # provisional ACH does not
    ("instant", {"cash": D(1000)}, D(400), D(1000)),  # ... unless instant, up to the allowance
    ("instant", {"cash": D(3000)}, D(2500), D(1500)),  # 500 settled + 1000 allowance
    ("instant", {"cash": D(3000)}, D(1000), D(3000)),  # allowance exactly used
    ("cash", {"cash": D(-80)}, D(0), D(0)),  # negative after a bounce: nothing to spend
    ("cash", {"cash": D(500), "cash_held": D(999)}, D(0), D(500)),  # holds already left cash
])
def test_buying_power_by_account_type(kind, bal, prov, expected) -> None:
    assert buying_power(kind, bal, prov, L).total == expected


def test_hold_takes_settled_cash_first_then_proceeds_lots_earliest_first_then_provisional() -> None:
    bal = {"cash": D(100), "cash_unsettled@2026-12-04": D(50), "cash_unsettled@2026-12-03": D(30)}
    bp = buying_power("cash", bal, D(0), L)
    assert cash_sources(D(120), bal, bp) == {"cash": D(100), "cash_unsettled@2026-12-03": D(20)}
    assert cash_sources(D(80), bal, bp) == {"cash": D(80)}
    instant = {"cash": D(1000), "cash_unsettled@2026-12-04": D(50)}
    bp = buying_power("instant", instant, D(800), L)  # 200 settled, 800 provisional
    assert bp.total == D(1050)
    assert cash_sources(D(1000), instant, bp) == {"cash": D(200), "cash_unsettled@2026-12-04": D(50),
                                                  "provisional": D(750)}


@pytest.mark.parametrize("kind,held,expected", [
    # instant, $5,000 provisional, $1,000 allowance: the allowance is used once, whatever the
    # number of holds (each hold lowers cash; provisional stays what the bank has not settled)
    ("instant", D(0), D(1000)), ("instant", D(400), D(600)), ("instant", D(1000), D(0)),
    ("instant", D(3000), D(0)),
    # cash account, $5,000 provisional and $2,000 unsettled proceeds: $2,000 to spend, not $7,000
    ("cash", D(0), D(2000)),
])
def test_provisional_credit_is_spent_once_whatever_the_order_of_holds(kind, held, expected) -> None:
    bal = {"cash": D(5000) - held, "cash_held": held}
    if kind == "cash":
        bal["cash_unsettled@2026-12-04"] = D(2000)
    assert buying_power(kind, bal, D(5000), L).total == expected


def test_a_cash_account_spends_its_proceeds_not_its_provisional_credit() -> None:
    bal = {"cash": D(5000), "cash_unsettled@2026-12-04": D(2000)}
    bp = buying_power("cash", bal, D(5000), L)
    assert cash_sources(D(2000), bal, bp) == {"cash_unsettled@2026-12-04": D(2000)}
    after = {"cash": D(5000), "cash_held": D(2000)}
    assert buying_power("cash", after, D(5000), L).total == 0


NY_OPEN = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)  # 9:30 ET


@pytest.mark.parametrize("body,notional,bid,ask,code", [
    ({"qty": 100000}, D(1), None, None, None),
    ({"qty": 100001}, D(1), None, None, "max_qty_exceeded"),
    ({}, D(250000), None, None, None),
    ({}, D("250000.01"), None, None, "max_notional_exceeded"),
    ({"limit_price": "110.00"}, D(1), D(99), D(100), None),  # exactly the band
    ({"limit_price": "110.01"}, D(1), D(99), D(100), "price_band"),  # a fat finger
    ({"side": "sell", "limit_price": "90.00"}, D(1), D(100), D(101), None),
    ({"side": "sell", "limit_price": "89.99"}, D(1), D(100), D(101), "price_band"),
])
def test_order_limits(body, notional, bid, ask, code) -> None:
    r = req(**body)
    if code is None:
        check_order_limits(r, notional, bid, ask, L)
    else:
        with pytest.raises(RiskRejection) as info:
            check_order_limits(r, notional, bid, ask, L)
        assert info.value.code == code


@pytest.mark.parametrize("control,side,code", [
    (SymbolControl(halted=True, reason="LULD"), "buy", "symbol_halted"),
    (SymbolControl(halted=True), "sell", "symbol_halted"),
    (SymbolControl(restriction="close_only", reason="volatility"), "buy", "symbol_close_only"),
    (SymbolControl(restriction="close_only"), "sell", None),  # the GME rule: selling allowed
    (SymbolControl(restriction="blocked"), "sell", "symbol_blocked"),
    (None, "buy", None),
])
def test_symbol_controls(control, side, code) -> None:
    r = req(side=side)
    if code is None:
        check_symbol(r, control)
    else:
        with pytest.raises(RiskRejection) as info:
            check_symbol(r, control)
        assert info.value.code == code
        if control.reason:
            assert control.reason in info.value.message


def test_day_trade_counting_and_window() -> None:
    wed = date(2026, 11, 25)
    fills = [Fill("AAPL", "buy", wed, 1), Fill("AAPL", "sell", wed, 2),  # day trade
             Fill("F", "sell", wed, 3), Fill("F", "buy", wed, 4),  # sell then buy: not one
             Fill("GME", "buy", date(2026, 11, 24), 5), Fill("GME", "sell", wed, 6),  # overnight
             Fill("AMC", "buy", date(2026, 11, 18), 7), Fill("AMC", "sell", date(2026, 11, 18), 8)]
    assert pdt_window_start(wed) == date(2026, 11, 19)  # 5 business days: 19, 20, 23, 24, 25
    assert day_trades(fills, pdt_window_start(wed)) == 1
    assert day_trades(fills, date(2026, 11, 18)) == 2
    assert pdt_window_start(date(2026, 11, 30)) == date(2026, 11, 23)  # skips Thanksgiving


@pytest.mark.parametrize("equity,count,side,bought_today,code", [
    (D("24999.99"), 3, "sell", True, "pattern_day_trader"),  # would be the 4th
    (D("24999.99"), 2, "sell", True, None),  # the 3rd is allowed
    (D("25000"), 3, "sell", True, None),  # exactly $25k: not restricted
    (D("24999.99"), 3, "sell", False, None),  # not a day trade
    (D("24999.99"), 3, "buy", True, None),  # opening is not closing
])
def test_pattern_day_trader_edges(equity, count, side, bought_today, code) -> None:
    r = req(side=side)
    if code is None:
        check_pdt(r, equity=equity, day_trade_count=count, bought_today=bought_today)
    else:
        with pytest.raises(RiskRejection) as info:
            check_pdt(r, equity=equity, day_trade_count=count, bought_today=bought_today)
        assert info.value.code == code
    assert not is_pattern_day_trader(3) and is_pattern_day_trader(4)


def test_concentration_is_a_soft_warning() -> None:
    assert concentration_warning("GME", D(2500), D(10000), L) is None  # exactly 25%
    warn = concentration_warning("GME", D("2500.01"), D(10000), L)
    assert warn and "GME" in warn
