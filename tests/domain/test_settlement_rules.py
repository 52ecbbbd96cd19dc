"""Pure settlement, netting, street comparison and good-faith-violation rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from domain import calendar
from domain.gfv import BuyLot, restriction_until, violating_lots
from domain.settlement import Fill, StreetFill, catch_up_dates, compare, merge, net, sessions_between


def test_t_plus_one_on_the_nyse_calendar() -> None:
    assert calendar.settle_date(date(2026, 11, 25)) == date(2026, 11, 27)  # Thanksgiving closed
    assert calendar.settle_date(date(2026, 11, 20)) == date(2026, 11, 23)  # Friday -> Monday
    assert calendar.settle_date(date(2026, 12, 24)) == date(2026, 12, 28)  # before Christmas
    assert calendar.settle_date(date(2026, 7, 2)) == date(2026, 7, 6)  # July 3 observed


def test_catch_up_covers_missed_sessions_in_order() -> None:
    assert sessions_between(date(2026, 11, 25), date(2026, 11, 30)) == [
        date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]
    assert catch_up_dates(date(2026, 11, 24), date(2026, 11, 30), 10) == [
        date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]
    assert catch_up_dates(None, date(2026, 11, 26), 10) == []  # Thanksgiving: nothing
    assert catch_up_dates(date(2026, 11, 30), date(2026, 11, 30), 10) == [date(2026, 11, 30)]


def test_netting_totals_equal_the_fills() -> None:
    fills = [Fill("MM1", "1", "AAPL", "buy", Decimal(10), Decimal("100.5")),
             Fill("MM1", "2", "AAPL", "sell", Decimal(4), Decimal("101")),
             Fill("MM2", "3", "F", "buy", Decimal(100), Decimal("12.3"))]
    n = merge([net(fills[:2]).values(), net(fills[2:]).values()])
    assert n["AAPL"].net_shares == 6 and n["AAPL"].net_cash == Decimal("404") - Decimal("1005")
    assert n["F"].bought == 100 and n["F"].fills == 1


def test_compare_lists_every_break() -> None:
    ours = [StreetFill("MM1", "a", Decimal(1), Decimal(10)), StreetFill("MM1", "b", Decimal(2), Decimal(10)),
            StreetFill("MM1", "c", Decimal(3), Decimal(10))]
    theirs = [StreetFill("MM1", "b", Decimal(5), Decimal(10)),
              StreetFill("MM1", "c", Decimal(3), Decimal(11)),
              StreetFill("MM1", "d", Decimal(1), Decimal(1))]
    kinds = [(b.kind, b.exec_id) for b in compare(ours, theirs).breaks]
    assert kinds == [("missing_at_street", "a"), ("qty_mismatch", "b"), ("price_mismatch", "c"),
                     ("missing_at_sherwood", "d")]


def test_good_faith_violation_rule() -> None:
    lot = BuyLot("o", date(2026, 11, 23), Decimal(5), Decimal(500), date(2026, 11, 25))
    assert violating_lots(date(2026, 11, 24), [lot]) == [lot]  # sold before the funds settled
    assert violating_lots(date(2026, 11, 25), [lot]) == []
    paid = BuyLot("p", date(2026, 11, 23), Decimal(5), Decimal(0), None)
    assert violating_lots(date(2026, 11, 24), [paid]) == []
    assert restriction_until([date(2026, 1, 5), date(2026, 6, 1)], date(2026, 6, 1)) is None
    assert restriction_until([date(2026, 1, 5), date(2026, 6, 1), date(2026, 9, 1)],
                             date(2026, 9, 1)) == date(2026, 11, 30)
    assert restriction_until([date(2025, 1, 5), date(2026, 6, 1), date(2026, 9, 1)], date(2026, 9, 1)) is None


def test_ach_settles_on_federal_reserve_bank_days_not_nyse_sessions() -> None:
    from domain.calendar import is_bank_day, is_session, next_bank_day

    columbus, veterans = date(2026, 10, 12), date(2026, 11, 11)
    assert is_session(columbus) and is_session(veterans)  # the NYSE trades
    assert not is_bank_day(columbus) and not is_bank_day(veterans)  # the Fed does not settle ACH
    assert next_bank_day(date(2026, 10, 9)) == date(2026, 10, 13)  # Fri -> (Columbus Mon) -> Tue
    assert next_bank_day(date(2026, 11, 10)) == date(2026, 11, 12)
    assert next_bank_day(date(2026, 11, 25), 2) == date(2026, 11, 30)  # Thanksgiving, weekend
    good_friday = date(2026, 4, 3)
    assert not is_session(good_friday) and is_bank_day(good_friday)  # NYSE closed, the Fed open
    assert is_bank_day(date(2027, 12, 24))  # Christmas on a Saturday: the Fed opens on Friday
    assert next_bank_day(date(2026, 10, 10), 0) == date(2026, 10, 13)
