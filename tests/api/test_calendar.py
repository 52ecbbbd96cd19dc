"""GET /v2/calendar: NYSE sessions from exchange-calendars (half days included) in Alpaca's shape,
through alpaca-py's TradingClient over a real socket; bad dates are 422 with a code."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

import httpx

from db.accounts import OpenedAccount
from domain.calendar import calendar_bounds
from tests.stack import headers


async def test_alpaca_py_get_calendar_with_a_half_day(base_url: str, acct: OpenedAccount) -> None:
    from alpaca.trading.client import TradingClient
    from alpaca.trading.models import Calendar
    from alpaca.trading.requests import GetCalendarRequest

    tc = TradingClient(acct.credentials.key_id, acct.credentials.secret_key, paper=True,
                       url_override=base_url)
    days = await asyncio.to_thread(tc.get_calendar, GetCalendarRequest(
        start=date(2026, 11, 24), end=date(2026, 11, 30)))
    assert all(isinstance(d, Calendar) for d in days)
    # Thanksgiving (26th) is no session; the day after closes at 13:00
    assert [(d.date, d.open, d.close) for d in days] == [
        (date(2026, 11, 24), datetime(2026, 11, 24, 9, 30), datetime(2026, 11, 24, 16, 0)),
        (date(2026, 11, 25), datetime(2026, 11, 25, 9, 30), datetime(2026, 11, 25, 16, 0)),
        (date(2026, 11, 27), datetime(2026, 11, 27, 9, 30), datetime(2026, 11, 27, 13, 0)),
        (date(2026, 11, 30), datetime(2026, 11, 30, 9, 30), datetime(2026, 11, 30, 16, 0)),
    ]


async def test_calendar_shape_and_bad_dates(client: httpx.AsyncClient, acct: OpenedAccount) -> None:
    h = headers(acct)
    r = await client.get("/v2/calendar", params={"start": "2026-12-24", "end": "2026-12-28"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"date": "2026-12-24", "open": "09:30", "close": "13:00", "session_open": "0400",
         "session_close": "1700", "settlement_date": "2026-12-28"},
        {"date": "2026-12-28", "open": "09:30", "close": "16:00", "session_open": "0400",
         "session_close": "2000", "settlement_date": "2026-12-29"},
    ]
    # an RFC 3339 time counts as its New York date
    r = await client.get("/v2/calendar", params={"start": "2026-12-28T15:00:00Z", "end": "2026-12-28"},
                         headers=h)
    assert [d["date"] for d in r.json()] == ["2026-12-28"]
    first, last = calendar_bounds()
    r = await client.get("/v2/calendar", headers=h)  # no range: everything the calendar knows
    assert r.status_code == 200 and r.json()[0]["date"] >= first.isoformat()
    assert r.json()[-1]["date"] <= last.isoformat() and len(r.json()) > 500
    for params, code in [({"start": "2026-13-01"}, "invalid_date"),
                         ({"end": "yesterday"}, "invalid_date"),
                         ({"start": "2" * 60}, "invalid_date"),
                         ({"start": "2026-12-28", "end": "2026-12-01"}, "invalid_calendar_range"),
                         ({"start": "1990-01-02", "end": "1990-01-05"}, "invalid_calendar_range"),
                         ({"end": "2099-01-02"}, "invalid_calendar_range")]:
        r = await client.get("/v2/calendar", params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["reason"] == code, params
    assert (await client.get("/v2/calendar")).status_code == 401
