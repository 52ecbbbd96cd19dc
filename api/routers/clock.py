from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fastapi import APIRouter

from api.deps import StateDep, TraderDep
from api.schemas import ClockOut
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
