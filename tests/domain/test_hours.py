"""``domain.hours``: may an order trade now, wait for the open, or not be taken (pure: the NYSE
calendar of exchange-calendars, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import calendar
from domain.hours import MarketClosed, route_at, session_phase
from domain.orders import OrderError, parse_order_request

NY_OPEN = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)  # Wednesday 9:30 ET
WED_CLOSE = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)  # 16:00 ET, the day before Thanksgiving
FRI_OPEN = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # the half day after Thanksgiving
MON_OPEN = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
MARKET = {"type": "market", "limit_price": None}
STOP = {"type": "stop", "limit_price": None, "stop_price": "90"}


def req(**kw):
    base = {"symbol": "AAPL", "qty": 10, "side": "buy", "type": "limit", "limit_price": "100",
            "time_in_force": "day"}
    base.update(kw)
    return parse_order_request({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("at,phase", [
    (datetime(2026, 11, 25, 14, 29, tzinfo=UTC), "extended"),  # 9:29 ET
    (NY_OPEN, "regular"),
    (datetime(2026, 11, 25, 20, 59, tzinfo=UTC), "regular"),  # 15:59 ET: the minute before the close
    (WED_CLOSE, "extended"),  # 16:00 ET: the close
    (datetime(2026, 11, 26, 15, 0, tzinfo=UTC), "closed"),  # Thanksgiving
    (datetime(2026, 11, 27, 17, 59, tzinfo=UTC), "regular"),  # 12:59 ET, half day
    (datetime(2026, 11, 27, 18, 0, tzinfo=UTC), "extended"),  # 13:00 ET: half-day close
    (datetime(2026, 11, 28, 15, 0, tzinfo=UTC), "closed"),  # Saturday
    (datetime(2026, 11, 25, 11, 59, tzinfo=UTC), "closed"),  # 6:59 ET
    (datetime(2026, 11, 25, 12, 0, tzinfo=UTC), "extended"),  # 7:00 ET
    (datetime(2026, 11, 26, 0, 59, tzinfo=UTC), "extended"),  # 19:59 ET
    (datetime(2026, 11, 26, 1, 0, tzinfo=UTC), "closed"),  # 20:00 ET
])
def test_session_phases_from_the_calendar(at, phase) -> None:
    assert session_phase(at) == phase


@pytest.mark.parametrize("at,body,expected", [
    (NY_OPEN, MARKET, None),  # in the session: now
    (NY_OPEN, STOP, None),
    # Wednesday 20:00 ET: a market order waits for Friday's open (Thursday is Thanksgiving)
    (datetime(2026, 11, 26, 1, 0, tzinfo=UTC), MARKET, FRI_OPEN),
    (WED_CLOSE, MARKET, FRI_OPEN),  # the close minute itself is closed
    (WED_CLOSE, STOP, FRI_OPEN),
    (WED_CLOSE, {**MARKET, "time_in_force": "gtc"}, FRI_OPEN),
    (WED_CLOSE, {}, FRI_OPEN),  # a DAY limit after the close: queued, not rested at the venue
    (WED_CLOSE, {"type": "stop_limit", "stop_price": "90"}, FRI_OPEN),
    (WED_CLOSE, {"time_in_force": "gtc"}, None),  # GTC limit: rests at the venue now
    (WED_CLOSE, {"time_in_force": "ioc"}, None),
    (WED_CLOSE, {"extended_hours": True}, None),  # trades in the extended session
    (datetime(2026, 11, 25, 13, 0, tzinfo=UTC), MARKET, NY_OPEN),  # 8:00 ET: this morning's open
    (datetime(2026, 11, 27, 18, 1, tzinfo=UTC), MARKET, MON_OPEN),  # after the half-day close
    (datetime(2026, 11, 28, 15, 0, tzinfo=UTC), MARKET, MON_OPEN),  # Saturday
])
def test_when_an_order_routes(at, body, expected) -> None:
    assert route_at(req(**body), at) == expected


@pytest.mark.parametrize("at", [datetime(2026, 11, 26, 15, 0, tzinfo=UTC),  # Thanksgiving
                                datetime(2026, 11, 26, 1, 0, tzinfo=UTC)])  # 20:00 ET
def test_extended_hours_outside_the_extended_session_is_refused(at) -> None:
    with pytest.raises(MarketClosed) as info:
        route_at(req(extended_hours=True), at)
    assert info.value.code == "market_closed"


ORDERS = st.sampled_from([MARKET, STOP, {}, {"time_in_force": "gtc"}, {**MARKET, "time_in_force": "gtc"},
                          {"type": "stop_limit", "stop_price": "90"}])
TIMES = st.datetimes(min_value=datetime(2025, 6, 1), max_value=datetime(2027, 6, 1),
                     timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(at=TIMES, body=ORDERS)
def test_an_order_routes_now_in_the_session_or_at_the_very_next_open(at, body) -> None:
    """Whatever the time: in the session every order routes now; outside it a queued order
    routes at an open that is in the future, is a session's open, and has no open before it."""
    when = route_at(req(**body), at)
    if calendar.is_open(at):
        assert when is None
        return
    if when is None:  # only limit orders that rest at the venue
        assert body in ({"time_in_force": "gtc"},)
        return
    assert when > at
    assert calendar.is_open(when) and not calendar.is_open(when - timedelta(minutes=1))
    assert when == calendar.next_open(at)


# --- auction orders (opg: the opening auction, cls: the closing auction) --------------------

@pytest.mark.parametrize("tif,at,ok", [
    ("opg", datetime(2026, 11, 25, 14, 27, tzinfo=UTC), True),  # 9:27 ET: today's open
    ("opg", datetime(2026, 11, 25, 14, 28, tzinfo=UTC), False),  # 9:28 ET: too late for it
    ("opg", NY_OPEN + timedelta(hours=2), False),  # in the session
    ("opg", datetime(2026, 11, 25, 23, 59, tzinfo=UTC), False),  # 18:59 ET
    ("opg", datetime(2026, 11, 26, 0, 0, tzinfo=UTC), True),  # 19:00 ET: the next session's open
    ("opg", datetime(2026, 11, 26, 15, 0, tzinfo=UTC), True),  # Thanksgiving: no session
    ("cls", NY_OPEN + timedelta(hours=2), True),  # in the session: today's close
    ("cls", datetime(2026, 11, 25, 20, 49, tzinfo=UTC), True),  # 15:49 ET
    ("cls", datetime(2026, 11, 25, 20, 50, tzinfo=UTC), False),  # 15:50 ET: too late for it
    ("cls", datetime(2026, 11, 27, 17, 50, tzinfo=UTC), False),  # 12:50 ET on the half day
    ("cls", datetime(2026, 11, 27, 17, 49, tzinfo=UTC), True),
    ("cls", datetime(2026, 11, 26, 1, 0, tzinfo=UTC), True),  # 20:00 ET: the next session's close
])
def test_auction_orders_are_taken_outside_their_cut_off_and_go_to_the_venue_at_once(
        tif: str, at: datetime, ok: bool) -> None:
    for kind in ({}, MARKET):
        r = req(time_in_force=tif, **kind)
        if ok:
            assert route_at(r, at) is None  # the venue holds it for its auction
        else:
            with pytest.raises(MarketClosed) as exc:
                route_at(r, at)
            assert exc.value.code == "auction_window_closed"


def test_auction_orders_are_market_or_limit_orders_without_extended_hours() -> None:
    assert req(time_in_force="opg").time_in_force == "opg"
    assert req(time_in_force="cls", **MARKET).time_in_force == "cls"
    for bad in (STOP, {"extended_hours": True}):
        with pytest.raises(OrderError) as exc:
            req(time_in_force="opg", **bad)
        assert exc.value.code in ("invalid_time_in_force", "invalid_extended_hours")


def test_an_auction_order_expires_at_its_auction() -> None:
    from domain.order_row import new_order

    def expires(tif: str, at: datetime) -> datetime | None:
        r = req(time_in_force=tif)
        return new_order(order_id="00000000-0000-0000-0000-0000000000aa",
                         account_id="00000000-0000-0000-0000-0000000000bb", req=r,
                         request_hash="h", actor="c", now=at).expires_at

    evening = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)  # Wednesday 20:00 ET
    assert expires("opg", evening) == FRI_OPEN
    assert expires("cls", evening) == calendar.next_close(FRI_OPEN)
    assert expires("cls", NY_OPEN) == WED_CLOSE
    assert expires("gtc", NY_OPEN) is None
