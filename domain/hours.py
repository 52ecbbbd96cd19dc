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
  on a session day) and is refused with ``market_closed`` outside it;
* auction orders (``opg``: the opening auction, ``cls``: the closing one; market or limit) go to
  the venue at once, which holds them for the auction (:func:`domain.calendar.auction_at`) and
  executes them there or expires them. As Alpaca, an ``opg`` order is refused
  (``auction_window_closed``) from 2 minutes before the open until 19:00 New York on a session
  day, a ``cls`` order from 10 minutes before the close until 19:00; after 19:00 they are for
  the next session's auction.

What it does not do: read a clock (callers pass the time), re-check halts at the open (the
gateway does that right before it sends), or size holds.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain import calendar
from domain.errors import DomainError
from domain.orders import AUCTION_TIFS, OrderRequest

NY = ZoneInfo(calendar.NY)
EXTENDED_OPEN = time(7, 0)
EXTENDED_CLOSE = time(20, 0)


class MarketClosed(DomainError):
    """The order cannot be taken at this time (an extended-hours order outside 7:00-20:00)."""

    code = "market_closed"


class AuctionWindowClosed(MarketClosed):
    """An auction order placed too late for today's auction and before 19:00 New York."""

    code = "auction_window_closed"


AUCTION_CUT_OFF = {"opg": timedelta(minutes=2), "cls": timedelta(minutes=10)}
AUCTION_REOPENS = time(19, 0)  # New York: auction orders from then on are for the next session


def check_auction_window(tif: str, at: datetime) -> None:
    """Raise :class:`AuctionWindowClosed` for an ``opg``/``cls`` order placed between its
    cut-off before today's auction and 19:00 New York (see the module docstring)."""
    local = at.astimezone(NY)
    if not calendar.is_session(local.date()):
        return
    day_start = datetime.combine(local.date(), time(0), NY)
    auction = calendar.auction_at(tif, day_start)  # today's open / close
    if auction.astimezone(NY).date() != local.date():
        return
    reopens = datetime.combine(local.date(), AUCTION_REOPENS, NY)
    if auction - AUCTION_CUT_OFF[tif] <= at < reopens:
        what = "opening" if tif == "opg" else "closing"
        raise AuctionWindowClosed(
            f"{tif} orders for today's {what} auction are taken until "
            f"{(auction - AUCTION_CUT_OFF[tif]).astimezone(NY):%H:%M} ET; from 19:00 ET they are "
            "for the next session's")


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
    if req.time_in_force in AUCTION_TIFS:
        check_auction_window(req.time_in_force, at)
        return None  # the venue holds it for its auction
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
