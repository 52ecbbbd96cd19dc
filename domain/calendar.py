"""The NYSE calendar (``exchange-calendars`` XNYS: holidays, half days). Pure functions of a time.

Never a hand-written holiday list. Loading the calendar takes ~0.2 s, so it is built once per
process (lazily) and shared. Its answers are cached per minute (sessions open and close on whole
minutes, so every time in a minute has the same answer) and per date: a pandas lookup costs
~0.1 ms of CPU and the order path asks several times per order.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NY = "America/New_York"
_NY = ZoneInfo(NY)


@functools.lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=365 * 2)).strftime("%Y-%m-%d")
    return xcals.get_calendar("XNYS", start=start)


def _minute(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("aware datetimes only")
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def is_open(at: datetime) -> bool:
    """True during the regular session (the close minute itself is closed)."""
    return _is_open(_minute(at))


@functools.lru_cache(maxsize=1024)
def _is_open(minute: datetime) -> bool:
    return bool(nyse().is_open_at_time(pd.Timestamp(minute), side="left"))


@functools.lru_cache(maxsize=1024)
def _next_open(minute: datetime) -> datetime:
    return nyse().next_open(pd.Timestamp(minute)).to_pydatetime()


@functools.lru_cache(maxsize=1024)
def _next_close(minute: datetime) -> datetime:
    return nyse().next_close(pd.Timestamp(minute)).to_pydatetime()


def next_open(at: datetime) -> datetime:
    return _next_open(_minute(at))


def next_close(at: datetime) -> datetime:
    """The close of the session in progress at ``at``, else of the next session."""
    return _next_close(_minute(at))


def day_order_expiry(at: datetime) -> datetime:
    """When a DAY order placed at ``at`` expires: the close of the current or next session."""
    return next_close(at)


@functools.lru_cache(maxsize=1024)
def is_session(d: date) -> bool:
    return bool(nyse().is_session(pd.Timestamp(d)))


@functools.lru_cache(maxsize=1024)
def next_session(d: date, n: int = 1) -> date:
    """The n-th NYSE business day after ``d``."""
    cal = nyse()
    ts = pd.Timestamp(d)
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

