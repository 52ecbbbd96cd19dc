"""Portfolio history rules (pure): the request's bounds and defaults, the points it asks for,
the ledger replay and profit/loss net of deposits; a position's change since the close."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import portfolio_history as ph
from domain.positions import day_change

D = Decimal
TODAY = date(2026, 12, 3)  # a Thursday; 2026-11-26 is Thanksgiving, 11-27 a half day


def parse(**kw: object) -> ph.HistoryQuery:
    args: dict[str, object] = {"period": None, "timeframe": None, "date_end": None,
                               "extended_hours": None, "today": TODAY}
    args.update(kw)
    return ph.parse_query(**args)  # type: ignore[arg-type]


def test_defaults_are_alpacas() -> None:
    q = parse()
    assert q.timeframe == "1D" and q.sessions[-1] == TODAY
    assert date(2026, 11, 26) not in q.sessions  # a holiday is no session
    assert parse(period="1D").timeframe == "1Min"
    assert parse(period="2W").timeframe == "15Min"
    assert parse(period="1A").timeframe == "1D"


def test_a_period_in_days_counts_sessions_and_date_end_bounds_the_window() -> None:
    q = parse(period="3D", timeframe="1D", date_end="2026-11-30")
    assert q.sessions == (date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30))
    # a date_end in the future is today; an RFC 3339 time names its date
    assert parse(period="1D", date_end="2030-01-01").sessions == (TODAY,)
    assert parse(period="1D", date_end="2026-12-02T10:00:00Z").sessions == (date(2026, 12, 2),)


@pytest.mark.parametrize(("kw", "code"), [
    ({"period": "0D"}, "invalid_period"),
    ({"period": "1Y"}, "invalid_period"),
    ({"period": "-1D"}, "invalid_period"),
    ({"period": "99999D"}, "invalid_period"),
    ({"period": "2A"}, "invalid_period"),
    ({"period": "1D" * 20}, "invalid_period"),
    ({"timeframe": "2Min"}, "invalid_timeframe"),
    ({"timeframe": "1d"}, "invalid_timeframe"),
    ({"date_end": "yesterday"}, "invalid_date_end"),
    ({"date_end": "2026-13-01"}, "invalid_date_end"),
    ({"date_end": "2026-01-01" + "x" * 40}, "invalid_date_end"),
    ({"extended_hours": "maybe"}, "invalid_extended_hours"),
    ({"period": "1A", "timeframe": "1Min"}, "too_many_points"),
])
def test_bad_parameters_are_refused_with_a_code(kw: dict[str, object], code: str) -> None:
    with pytest.raises(ph.HistoryError) as err:
        parse(**kw)
    assert err.value.code == code


def test_intraday_points_cover_the_session_left_labeled_up_to_now() -> None:
    full = parse(period="1D", timeframe="1Min", date_end="2026-12-02")
    pts = ph.intraday_points(full, datetime(2026, 12, 3, tzinfo=UTC))
    assert len(pts) == 390 and pts[0] == datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
    half = parse(period="1D", timeframe="5Min", date_end="2026-11-27")
    assert len(ph.intraday_points(half, datetime(2026, 12, 3, tzinfo=UTC))) == 42  # 09:30-13:00
    ext = parse(period="1D", timeframe="1H", date_end="2026-12-02", extended_hours="true")
    assert len(ph.intraday_points(ext, datetime(2026, 12, 3, tzinfo=UTC))) == 16  # 04:00-20:00
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # 10:00 New York: 30 minutes in
    assert len(ph.intraday_points(full, now)) == 31


T0 = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_replay_books_entries_as_they_came_and_marks_at_the_price_known_then() -> None:
    book = ph.PriceBook(fallback={"AAPL": D("100")})
    book.add("AAPL", at(5), D("110"))
    book.add("AAPL", at(10), D("90"))
    book.freeze()
    moves = [
        ph.LedgerMove(at(1), "cash", D("1000"), external=True),  # a deposit
        ph.LedgerMove(at(2), "cash", D("-200")),  # a buy of 2 at 100
        ph.LedgerMove(at(2), "shares_unsettled:AAPL", D("2")),
    ]
    pts = ph.replay({"cash": D("50")}, moves, book, [at(0), at(1), at(3), at(6), at(11)])
    assert [p.equity for p in pts] == [D("50"), D("1050"), D("1050"), D("1070"), D("1030")]
    assert [p.cashflow for p in pts] == [0, D("1000"), D("1000"), D("1000"), D("1000")]
    pl, pct = ph.profit_loss([p.equity for p in pts], [p.cashflow for p in pts], D("50"))
    assert pl == [0, 0, 0, D("20"), D("-20")]  # the deposit is not a profit
    assert pct[3] == D("0.4")
    assert ph.profit_loss([D("5")], [D("0")], D("0"))[1] == [None]


@given(st.lists(st.tuples(st.integers(0, 100), st.decimals(-1000, 1000, places=2)), max_size=30))
def test_replay_at_the_end_equals_the_sum_of_every_entry(entries: list[tuple[int, Decimal]]) -> None:
    moves = [ph.LedgerMove(at(m), "cash", a) for m, a in entries]
    [last] = ph.replay({"cash": D("7")}, moves, ph.PriceBook(), [at(100)])
    assert last.equity == D("7") + sum((a for _, a in entries), D(0))


def test_the_change_since_the_close() -> None:
    c = day_change(D("10"), D("105"), D("100"))
    assert (c.lastday_price, c.change_today, c.intraday_pl, c.intraday_plpc) == (
        D("100"), D("0.05"), D("50"), D("0.05"))
    assert day_change(D("10"), D("105"), None).change_today is None
    assert day_change(D("10"), None, D("100")).intraday_pl is None
