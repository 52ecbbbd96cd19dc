"""Market hours for an order: may it trade now, wait for the next regular session's open
(queued), or not be taken at all? Pure functions of the order and a time; the NYSE calendar
(``domain.calendar``, exchange-calendars) decides sessions, half days and holidays.

What it decides (:func:`route_at`):

* regular session: every order routes now;
* outside it, market and stop orders (any time in force) and DAY limit / stop-limit orders
  without ``extended_hours`` are accepted and queued: they route at the next session's open
  (a market order's price is unknowable hours ahead, so its hold is sized on the last quote
  with the collar, as in the session, and the customer can cancel until the open);
* a GTC / IOC / FOK limit order outside the session routes now and rests at the venue;
* ``extended_hours`` (limit + day only) trades in the extended session (7:00-20:00 New York
  on a session day) and is refused with ``market_closed`` outside it.

What it does not do: read a clock (callers pass the time), re-check halts at the open (the
gateway does that right before it sends), or size holds.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from domain import calendar
from domain.errors import DomainError
from domain.orders import OrderRequest

NY = ZoneInfo(calendar.NY)
EXTENDED_OPEN = time(7, 0)
EXTENDED_CLOSE = time(20, 0)


class MarketClosed(DomainError):
    """The order cannot be taken at this time (an extended-hours order outside 7:00-20:00)."""

    code = "market_closed"


def session_phase(at: datetime) -> str:
    """``regular``, ``extended`` (7:00-9:30 and close-20:00 New York on a session day) or
    ``closed``."""
    if calendar.is_open(at):
        return "regular"
    local = at.astimezone(NY)
    if calendar.is_session(local.date()) and EXTENDED_OPEN <= local.time() < EXTENDED_CLOSE:
        return "extended"
    return "closed"


def queues_outside_session(req: OrderRequest) -> bool:
    """Whether ``req``, placed outside the regular session (and not trading in the extended one),
    waits for the open rather than going to the venue now."""
    return req.type in ("market", "stop") or req.time_in_force == "day"


def route_at(req: OrderRequest, at: datetime) -> datetime | None:
    """When ``req`` placed at ``at`` goes to a venue: None for now, else the next regular
    session's open (UTC). Raises :class:`MarketClosed` for an extended-hours order outside the
    extended session."""
    phase = session_phase(at)
    if phase == "regular":
        return None
    if req.extended_hours:
        if phase == "extended":
            return None
        raise MarketClosed("extended-hours trading runs 7:00-20:00 ET on trading days")
    if queues_outside_session(req):
        return calendar.next_open(at)
    return None
