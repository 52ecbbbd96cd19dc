"""The NYSE calendar (``exchange-calendars`` XNYS: holidays, half days). Pure functions of a time.

Never a hand-written holiday list. Loading the calendar takes ~0.2 s, so it is built once per
process (lazily) and shared.
"""

from __future__ import annotations

import functools
from datetime import date, datetime

import exchange_calendars as xcals
import pandas as pd

NY = "America/New_York"


@functools.lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=365 * 2)).strftime("%Y-%m-%d")
    return xcals.get_calendar("XNYS", start=start)


def _ts(at: datetime) -> pd.Timestamp:
    if at.tzinfo is None:
        raise ValueError("aware datetimes only")
    return pd.Timestamp(at).tz_convert("UTC")


def is_open(at: datetime) -> bool:
    """True during the regular session (the close minute itself is closed)."""
    return bool(nyse().is_open_at_time(_ts(at), side="left"))


def next_open(at: datetime) -> datetime:
    return nyse().next_open(_ts(at).floor("min")).to_pydatetime()


def next_close(at: datetime) -> datetime:
    """The close of the session in progress at ``at``, else of the next session."""
    return nyse().next_close(_ts(at).floor("min")).to_pydatetime()


def day_order_expiry(at: datetime) -> datetime:
    """When a DAY order placed at ``at`` expires: the close of the current or next session."""
    return next_close(at)


def is_session(d: date) -> bool:
    return bool(nyse().is_session(pd.Timestamp(d)))


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
    return pd.Timestamp(at).tz_convert(NY).date()


def settle_date(trade: date, days: int = 1) -> date:
    """T+``days`` in NYSE business days."""
    return next_session(trade, days) if days else trade

