"""GET /v2/assets, /v2/assets/{symbol_or_id} and /v2/clock through the real app."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.routers.clock import market_clock
from db.accounts import open_account
from db.router import ShardRouter
from domain import calendar
from domain.assets import ASSETS, get_asset

NY = ZoneInfo("America/New_York")
ASSET_KEYS = {"id", "class", "exchange", "symbol", "status", "tradable", "marginable", "shortable",
              "easy_to_borrow", "fractionable"}


@pytest.fixture
async def headers(router: ShardRouter) -> dict[str, str]:
    acct = await open_account(router)
    return {"APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key}


async def test_assets_list_the_universe_in_alpaca_shape(client: httpx.AsyncClient, headers) -> None:
    r = await client.get("/v2/assets", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["symbol"] for a in body] == sorted(a.symbol for a in ASSETS)
    aapl = next(a for a in body if a["symbol"] == "AAPL")
    assert ASSET_KEYS <= set(aapl) and "asset_class" not in aapl
    assert aapl["class"] == "us_equity" and aapl["exchange"] == "NASDAQ" and aapl["status"] == "active"
    assert aapl["id"] == str(get_asset("AAPL").id) and aapl["name"] == "Apple Inc."
    assert all(isinstance(aapl[k], bool) for k in ("tradable", "marginable", "shortable",
                                                   "easy_to_borrow", "fractionable"))
    # the firm offers neither margin nor short selling: no asset says otherwise
    assert {(a["marginable"], a["shortable"], a["easy_to_borrow"]) for a in body} == {(False, False, False)}


async def test_assets_filters(client: httpx.AsyncClient, headers) -> None:
    r = await client.get("/v2/assets", params={"status": "active", "asset_class": "us_equity"},
                         headers=headers)
    assert r.status_code == 200 and len(r.json()) == len(ASSETS)
    r = await client.get("/v2/assets", params={"status": "inactive"}, headers=headers)
    assert r.status_code == 200 and r.json() == []
    r = await client.get("/v2/assets", params={"exchange": "ARCA"}, headers=headers)
    assert {a["symbol"] for a in r.json()} == {a.symbol for a in ASSETS if a.exchange == "ARCA"}
    r = await client.get("/v2/assets", params={"status": "bogus"}, headers=headers)
    assert r.status_code == 422 and set(r.json()) == {"code", "message", "reason"}


async def test_one_asset_by_symbol_or_id(client: httpx.AsyncClient, headers) -> None:
    spy = get_asset("SPY")
    for key in ("SPY", "spy", str(spy.id)):
        r = await client.get(f"/v2/assets/{key}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["symbol"] == "SPY" and body["id"] == str(spy.id) and body["exchange"] == "ARCA"
        assert body["class"] == "us_equity"


@pytest.mark.parametrize("key", ["NOPE", "0bf99c4f-e3ab-4f85-8848-5aa6805d2998"])
async def test_unknown_asset_is_404(client: httpx.AsyncClient, headers, key: str) -> None:
    r = await client.get(f"/v2/assets/{key}", headers=headers)
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"code", "message", "reason"} and body["code"] == 40410000


@pytest.mark.parametrize("path", ["/v2/assets", "/v2/assets/AAPL", "/v2/clock"])
async def test_auth_required(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 401 and r.json()["reason"] == "unauthorized"


async def test_clock_now(client: httpx.AsyncClient, headers) -> None:
    r = await client.get("/v2/clock", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"timestamp", "is_open", "next_open", "next_close"}
    at = datetime.fromisoformat(body["timestamp"])
    for k in ("timestamp", "next_open", "next_close"):
        t = datetime.fromisoformat(body[k])
        assert t.utcoffset() == t.astimezone(NY).utcoffset()  # New York time with its offset
        assert body[k][-6:] in ("-05:00", "-04:00")
    assert body["is_open"] is calendar.is_open(at)
    assert datetime.fromisoformat(body["next_open"]) == calendar.next_open(at)
    assert datetime.fromisoformat(body["next_close"]) == calendar.next_close(at)
    assert datetime.fromisoformat(body["next_open"]) > at


def _ny(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=NY)


CASES = [
    # a normal session, open; Thanksgiving (Thu) is a holiday
    ("2026-11-25T12:00:00", True, "2026-11-27T09:30:00-05:00", "2026-11-25T16:00:00-05:00"),
    # on the holiday: the next session is the Black Friday half day (13:00 close)
    ("2026-11-26T12:00:00", False, "2026-11-27T09:30:00-05:00", "2026-11-27T13:00:00-05:00"),
    # the close minute itself is closed
    ("2026-11-27T13:00:00", False, "2026-11-30T09:30:00-05:00", "2026-11-30T16:00:00-05:00"),
    # before the open
    ("2026-11-30T09:29:59", False, "2026-11-30T09:30:00-05:00", "2026-11-30T16:00:00-05:00"),
    # a Friday evening before the spring DST change: Monday opens at -04:00
    ("2026-03-06T17:00:00", False, "2026-03-09T09:30:00-04:00", "2026-03-09T16:00:00-04:00"),
]


@pytest.mark.parametrize("at,is_open,next_open,next_close", CASES)
def test_clock_on_known_dates(at: str, is_open: bool, next_open: str, next_close: str) -> None:
    t = _ny(at)
    cal = calendar.nyse()
    if not cal.first_session.date() <= t.date() <= cal.last_session.date():
        pytest.skip("date outside the loaded calendar window")
    clock = market_clock(t)
    # the literal expectations agree with the calendar module itself
    assert clock.is_open is calendar.is_open(t) is is_open
    assert clock.next_open == next_open and datetime.fromisoformat(next_open) == calendar.next_open(t)
    assert clock.next_close == next_close and datetime.fromisoformat(next_close) == calendar.next_close(t)
    assert clock.timestamp == t.isoformat(timespec="milliseconds")
