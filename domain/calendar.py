"""The NYSE calendar (``exchange-calendars`` XNYS: holidays, half days) for trading and T+1
settlement, the sessions Alpaca's ``/v2/calendar`` lists (:func:`sessions_between`), and the
Federal Reserve's bank days for ACH (:func:`next_bank_day`). Pure functions of a time.

Never a hand-written holiday list. ``exchange-calendars`` and pandas take ~1.5 s to import
(more than the rest of a ``sherwood`` command's start-up), so they are imported on first use
(:func:`_pandas`, :func:`nyse`), not with this module: a command or process that never asks
the calendar never pays for them. Loading the calendar takes ~0.2 s more, so it is built once
per process (lazily) and shared. Its answers are cached per minute (sessions open and close on
whole minutes, so every time in a minute has the same answer) and per date: a pandas lookup
costs ~0.1 ms of CPU and the order path asks several times per order.

Workflow code asks these functions inside Temporal's sandbox, where a first-time import would
load pandas into the sandbox: ``workflows/__init__.py`` calls :func:`load` with the sandbox's
imports passed through, so the libraries are the host's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import ModuleType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from domain.errors import DomainError

if TYPE_CHECKING:
    import exchange_calendars as xcals
    import pandas as pd
    from pandas.tseries.holiday import AbstractHolidayCalendar

NY = "America/New_York"
_NY = ZoneInfo(NY)


@functools.cache
def _pandas() -> ModuleType:
    """pandas, imported on its first use (see the module's docstring)."""
    import pandas

    return pandas


def _ts(at: datetime | date) -> pd.Timestamp:
    """``pandas.Timestamp(at)``."""
    return _pandas().Timestamp(at)


def load() -> None:
    """Import the calendar's libraries now (what :func:`nyse` and :func:`_pandas` would on
    first use). Called by ``workflows/__init__.py`` with the sandbox's imports passed through."""
    import exchange_calendars  # noqa: F401
    import pandas.tseries.holiday  # noqa: F401

    _pandas()


@functools.lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    import exchange_calendars

    pd = _pandas()
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=365 * 2)).strftime("%Y-%m-%d")
    return exchange_calendars.get_calendar("XNYS", start=start)


def _minute(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("aware datetimes only")
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def is_open(at: datetime) -> bool:
    """True during the regular session (the close minute itself is closed)."""
    return _is_open(_minute(at))


@functools.lru_cache(maxsize=1024)
def _is_open(minute: datetime) -> bool:
    return bool(nyse().is_open_at_time(_ts(minute), side="left"))


@functools.lru_cache(maxsize=1024)
def _next_open(minute: datetime) -> datetime:
    return nyse().next_open(_ts(minute)).to_pydatetime()


@functools.lru_cache(maxsize=1024)
def _next_close(minute: datetime) -> datetime:
    return nyse().next_close(_ts(minute)).to_pydatetime()


def next_open(at: datetime) -> datetime:
    return _next_open(_minute(at))


def next_close(at: datetime) -> datetime:
    """The close of the session in progress at ``at``, else of the next session."""
    return _next_close(_minute(at))


def auction_at(tif: str, at: datetime) -> datetime:
    """The auction an ``opg`` (the next open) or ``cls`` (the close of the session in
    progress, else of the next one) order placed at ``at`` is for."""
    return next_open(at) if tif == "opg" else next_close(at)


def day_order_expiry(at: datetime) -> datetime:
    """When a DAY order placed at ``at`` expires: the close of the current or next session."""
    return next_close(at)


@functools.lru_cache(maxsize=1024)
def is_session(d: date) -> bool:
    return bool(nyse().is_session(_ts(d)))


@functools.lru_cache(maxsize=1024)
def session_hours(d: date) -> tuple[datetime, datetime] | None:
    """The regular session's open and close of ``d`` (UTC; a half day closes at 13:00 New
    York time), or None when ``d`` is no session."""
    if not is_session(d):
        return None
    cal, ts = nyse(), _ts(d)
    return (cal.session_open(ts).to_pydatetime().astimezone(UTC),
            cal.session_close(ts).to_pydatetime().astimezone(UTC))


@functools.lru_cache(maxsize=1024)
def next_session(d: date, n: int = 1) -> date:
    """The n-th NYSE business day after ``d``."""
    cal = nyse()
    ts = _ts(d)
    session = cal.date_to_session(ts, direction="next") if not cal.is_session(ts) else ts
    if session != ts:
        n -= 1
    return (cal.session_offset(session, n) if n else session).date()


def trade_date(at: datetime) -> date:
    """The trading date an execution at ``at`` belongs to (the New York calendar date)."""
    if at.tzinfo is None:
        raise ValueError("aware datetimes only")
    return at.astimezone(_NY).date()


def settle_date(trade: date, days: int = 1) -> date:
    """T+``days`` in NYSE business days."""
    return next_session(trade, days) if days else trade


# --- the calendar endpoint (Alpaca's /v2/calendar) ----------------------------------------------

@dataclass(frozen=True)
class SessionDay:
    """One NYSE session, times in New York: the regular ``open``/``close`` (13:00 on a half day),
    the extended ``session_open``/``session_close`` (04:00, and four hours after the close), and
    the T+1 ``settlement_date`` of a trade that day."""

    day: date
    open: time
    close: time
    session_open: time
    session_close: time
    settlement_date: date


class InvalidCalendarRange(DomainError):
    """A calendar request's start is after its end, or outside the dates the calendar knows."""

    code = "invalid_calendar_range"


def calendar_bounds() -> tuple[date, date]:
    """The first and last dates the calendar answers for (the last session's settlement date,
    the next session, must be known too)."""
    cal = nyse()
    return cal.first_session.date(), cal.sessions[-2].date()


def sessions_between(start: date | None, end: date | None) -> list[SessionDay]:
    """The sessions from ``start`` to ``end`` (inclusive; either missing: the calendar's bound).
    Raises :class:`InvalidCalendarRange` for a reversed range or one reaching past the calendar's
    bounds (it is never silently cut short)."""
    first, last = calendar_bounds()
    a, b = start or first, end or last
    if a > b:
        raise InvalidCalendarRange(f"start {a} is after end {b}")
    if a < first or b > last:
        raise InvalidCalendarRange(f"the calendar covers {first} to {last}")
    return list(_sessions(a, b))


@functools.lru_cache(maxsize=64)
def _sessions(a: date, b: date) -> tuple[SessionDay, ...]:
    cal = nyse()
    sched = cal.schedule
    days = sched.index
    lo, hi = days.searchsorted(_ts(a)), days.searchsorted(_ts(b), side="right")
    out = []
    for i in range(lo, hi):
        row = sched.iloc[i]
        op = row["open"].tz_convert(NY).to_pydatetime()
        cl = row["close"].tz_convert(NY).to_pydatetime()
        out.append(SessionDay(days[i].date(), op.time(), cl.time(), time(4, 0),
                              (cl + timedelta(hours=4)).time(), days[i + 1].date()))
    return tuple(out)


# --- bank days (ACH): the Federal Reserve's holidays, not the NYSE's ---------------------------

def fed_reserve_holidays() -> AbstractHolidayCalendar:
    """The Federal Reserve System's holidays (when ACH does not settle): the federal holidays,
    Columbus Day and Veterans Day included (NYSE sessions both). A holiday on a Sunday is
    observed the Monday after; one on a Saturday is not observed (the Fed is open that Friday).
    (A pandas holiday calendar, made here so that pandas is imported on first use.)"""
    from pandas.tseries.holiday import (
        AbstractHolidayCalendar,
        Holiday,
        USColumbusDay,
        USLaborDay,
        USMartinLutherKingJr,
        USMemorialDay,
        USPresidentsDay,
        USThanksgivingDay,
        sunday_to_monday,
    )

    class FedReserveHolidays(AbstractHolidayCalendar):
        rules = [
            Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
            USMartinLutherKingJr,
            USPresidentsDay,
            USMemorialDay,
            Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01",
                    observance=sunday_to_monday),
            Holiday("Independence Day", month=7, day=4, observance=sunday_to_monday),
            USLaborDay,
            USColumbusDay,
            Holiday("Veterans Day", month=11, day=11, observance=sunday_to_monday),
            USThanksgivingDay,
            Holiday("Christmas Day", month=12, day=25, observance=sunday_to_monday),
        ]

    return FedReserveHolidays()


@functools.lru_cache(maxsize=1)
def _fed_holidays() -> frozenset[date]:
    days = fed_reserve_holidays().holidays(start="2000-01-01", end="2100-12-31")
    return frozenset(ts.date() for ts in days)


def is_bank_day(d: date) -> bool:
    """A day ACH moves money: a weekday that is not a Federal Reserve holiday."""
    return d.weekday() < 5 and d not in _fed_holidays()


def next_bank_day(d: date, n: int = 1) -> date:
    """The n-th bank day after ``d`` (``d`` itself when ``n`` is 0 and it is a bank day)."""
    if n == 0:
        while not is_bank_day(d):
            d += timedelta(days=1)
        return d
    while n:
        d += timedelta(days=1)
        if is_bank_day(d):
            n -= 1
    return d
