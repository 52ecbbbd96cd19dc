"""The market clock (``GET /v2/clock``) and calendar (``GET /v2/calendar``): NYSE sessions from
exchange-calendars (:mod:`domain.calendar`), in Alpaca's shapes, New York times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from api.deps import StateDep, TraderDep
from api.errors import ApiError
from api.schemas import CalendarDayOut, ClockOut
from domain import calendar

router = APIRouter(prefix="/v2", tags=["clock"])

NY = ZoneInfo(calendar.NY)


def market_clock(at: datetime) -> ClockOut:
    """Alpaca's clock at ``at`` (NYSE regular session, exchange-calendars), New York time with its
    offset. ``next_close`` is the close of the session in progress, else of the next session;
    ``next_open`` is always a future open (while open: the next session's)."""
    return ClockOut(
        timestamp=at.astimezone(NY).isoformat(timespec="milliseconds"),
        is_open=calendar.is_open(at),
        next_open=calendar.next_open(at).astimezone(NY).isoformat(timespec="seconds"),
        next_close=calendar.next_close(at).astimezone(NY).isoformat(timespec="seconds"),
    )


@router.get("/clock", response_model=ClockOut)
async def get_clock(_: TraderDep, state: StateDep) -> ClockOut:
    """Whether the market is open now, and the next open and close. "Now" is the business clock
    the order workers decide market hours with (``market_clock_offset_s`` ahead of the wall
    clock: tests and demos at another hour), so that the clock a client reads agrees with
    whether its order is queued for the open."""
    offset = timedelta(seconds=state.settings.market_clock_offset_s)
    return market_clock(datetime.now(UTC) + offset)


def parse_day(value: str | None, field: str) -> date | None:
    """A query date as Alpaca takes it: ``YYYY-MM-DD``, or an RFC 3339 time (its New York date).
    Anything else (or over 40 characters) is a 422 ``invalid_date``."""
    if value is None:
        return None
    try:
        if len(value) > 40:
            raise ValueError("too long")
        if len(value) == 10:
            return date.fromisoformat(value)
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError("an RFC 3339 time has an offset")
        return t.astimezone(NY).date()
    except ValueError as exc:
        raise ApiError(422, "invalid_date", f"{field}: not a date (YYYY-MM-DD) or an RFC 3339 time",
                       code=42210000) from exc


@router.get("/calendar", response_model=list[CalendarDayOut])
async def get_calendar(
    _: TraderDep,
    start: Annotated[str | None, Query(description="first date (inclusive), YYYY-MM-DD")] = None,
    end: Annotated[str | None, Query(description="last date (inclusive), YYYY-MM-DD")] = None,
) -> list[CalendarDayOut]:
    """The NYSE sessions from ``start`` to ``end``, half days with their 13:00 close. Without a
    bound, the calendar's own (about two years back to one ahead: ``invalid_calendar_range``
    past them, never a silently shorter list)."""
    days = calendar.sessions_between(parse_day(start, "start"), parse_day(end, "end"))
    return [CalendarDayOut(date=d.day.isoformat(), open=d.open.strftime("%H:%M"),
                           close=d.close.strftime("%H:%M"),
                           session_open=d.session_open.strftime("%H%M"),
                           session_close=d.session_close.strftime("%H%M"),
                           settlement_date=d.settlement_date.isoformat()) for d in days]
