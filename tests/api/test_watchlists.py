"""/v2/watchlists: Alpaca's CRUD through alpaca-py's TradingClient over a real socket; by name;
limits (count per account, symbols per list), unknown symbols and duplicate names are 422 with a
code and change nothing; an account never sees another's lists."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI

from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from tests.stack import headers


async def test_alpaca_py_watchlist_calls(base_url: str, acct: OpenedAccount) -> None:
    from alpaca.trading.client import TradingClient
    from alpaca.trading.models import Watchlist
    from alpaca.trading.requests import CreateWatchlistRequest, UpdateWatchlistRequest

    tc = TradingClient(acct.credentials.key_id, acct.credentials.secret_key, paper=True,
                       url_override=base_url)

    def run(fn, *a):  # type: ignore[no-untyped-def]
        return asyncio.to_thread(fn, *a)

    wl = await run(tc.create_watchlist, CreateWatchlistRequest(name="Tech", symbols=["AAPL", "msft"]))
    assert isinstance(wl, Watchlist) and wl.name == "Tech" and wl.account_id == acct.account_id
    assert [a.symbol for a in wl.assets or []] == ["AAPL", "MSFT"]
    other = await run(tc.create_watchlist, CreateWatchlistRequest(name="Empty", symbols=[]))
    lists = await run(tc.get_watchlists)
    assert sorted(w.name for w in lists) == ["Empty", "Tech"]
    got = await run(tc.get_watchlist_by_id, wl.id)
    assert got.id == wl.id and [a.symbol for a in got.assets or []] == ["AAPL", "MSFT"]
    added = await run(tc.add_asset_to_watchlist_by_id, wl.id, "NVDA")
    assert [a.symbol for a in added.assets or []] == ["AAPL", "MSFT", "NVDA"]
    removed = await run(tc.remove_asset_from_watchlist_by_id, wl.id, "MSFT")
    assert [a.symbol for a in removed.assets or []] == ["AAPL", "NVDA"]
    updated = await run(tc.update_watchlist_by_id, wl.id, UpdateWatchlistRequest(
        name="Chips", symbols=["NVDA", "AMD"]))
    assert updated.name == "Chips" and [a.symbol for a in updated.assets or []] == ["NVDA", "AMD"]
    assert updated.updated_at >= wl.updated_at
    await run(tc.delete_watchlist_by_id, other.id)
    assert [w.name for w in await run(tc.get_watchlists)] == ["Chips"]


async def test_by_name_limits_and_refusals(client: httpx.AsyncClient, acct: OpenedAccount,
                                           router: ShardRouter, app: FastAPI) -> None:
    h = headers(acct)
    r = await client.post("/v2/watchlists", json={"name": "Home", "symbols": ["AAPL"]}, headers=h)
    assert r.status_code == 200, r.text
    wl = r.json()
    assert set(wl) == {"id", "account_id", "name", "created_at", "updated_at", "assets"}
    r = await client.get("/v2/watchlists:by_name", params={"name": "Home"}, headers=h)
    assert r.status_code == 200 and r.json()["id"] == wl["id"]
    r = await client.post("/v2/watchlists:by_name", params={"name": "Home"}, json={"symbol": "TSLA"},
                          headers=h)
    assert [a["symbol"] for a in r.json()["assets"]] == ["AAPL", "TSLA"]
    r = await client.put("/v2/watchlists:by_name", params={"name": "Home"},
                         json={"name": "Home 2", "symbols": ["TSLA"]}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Home 2"
    r = await client.get("/v2/watchlists", headers=h)
    assert [w["name"] for w in r.json()] == ["Home 2"] and "assets" not in r.json()[0]

    async def refused(method: str, url: str, status: int, reason: str, **kw: object) -> None:
        before = (await client.get(f"/v2/watchlists/{wl['id']}", headers=h)).json()
        r = await client.request(method, url, headers=h, **kw)  # type: ignore[arg-type]
        assert r.status_code == status, (method, url, kw, r.text)
        assert r.json()["reason"] == reason, (method, url, kw, r.text)
        assert (await client.get(f"/v2/watchlists/{wl['id']}", headers=h)).json() == before
        assert len((await client.get("/v2/watchlists", headers=h)).json()) == 1

    url = f"/v2/watchlists/{wl['id']}"
    await refused("POST", "/v2/watchlists", 422, "duplicate_watchlist_name",
                  json={"name": "Home 2", "symbols": []})
    await refused("POST", "/v2/watchlists", 422, "unknown_symbol", json={"name": "X", "symbols": ["ZZZZZ"]})
    await refused("POST", "/v2/watchlists", 422, "invalid_watchlist_name", json={"name": "", "symbols": []})
    await refused("POST", "/v2/watchlists", 422, "invalid_watchlist_name",
                  json={"name": "n" * 65, "symbols": []})
    await refused("POST", "/v2/watchlists", 422, "duplicate_symbol",
                  json={"name": "X", "symbols": ["AAPL", "aapl"]})
    await refused("POST", "/v2/watchlists", 422, "invalid_symbol", json={"name": "X", "symbols": ["A$"]})
    await refused("POST", "/v2/watchlists", 422, "invalid_request", json={"name": "X", "symbols": "AAPL"})
    await refused("POST", url, 422, "unknown_symbol", json={"symbol": "ZZZZZ"})
    await refused("POST", url, 422, "symbol_already_in_watchlist", json={"symbol": "TSLA"})
    await refused("DELETE", f"{url}/AAPL", 404, "symbol_not_in_watchlist")
    await refused("PUT", url, 422, "invalid_request", json={})
    await refused("GET", f"/v2/watchlists/{uuid.uuid4()}", 404, "watchlist_not_found")
    await refused("GET", "/v2/watchlists/not-a-uuid", 404, "watchlist_not_found")
    await refused("GET", "/v2/watchlists:by_name?name=nope", 404, "watchlist_not_found")

    # limits (settings): symbols per list, lists per account
    settings = app.state.sherwood.settings
    old = (settings.watchlist_max_symbols, settings.watchlist_max_per_account)
    settings.watchlist_max_symbols, settings.watchlist_max_per_account = 2, 2
    try:
        r = await client.post(url, json={"symbol": "AAPL"}, headers=h)
        assert r.status_code == 200, r.text
        await refused("POST", url, 422, "watchlist_too_long", json={"symbol": "MSFT"})
        await refused("PUT", url, 422, "watchlist_too_long", json={"symbols": ["AAPL", "MSFT", "NVDA"]})
        r = await client.post("/v2/watchlists", json={"name": "Second"}, headers=h)
        assert r.status_code == 200 and r.json()["assets"] == []
        r = await client.post("/v2/watchlists", json={"name": "Third"}, headers=h)
        assert r.status_code == 422 and r.json()["reason"] == "watchlist_limit_reached"
        r = await client.delete("/v2/watchlists:by_name", params={"name": "Second"}, headers=h)
        assert r.status_code == 204
    finally:
        settings.watchlist_max_symbols, settings.watchlist_max_per_account = old

    # another account sees none of them, and cannot touch them
    b = headers(await open_account(router))
    assert (await client.get("/v2/watchlists", headers=b)).json() == []
    assert (await client.get(url, headers=b)).status_code == 404
    assert (await client.delete(url, headers=b)).status_code == 404
    assert (await client.get(url, headers=h)).status_code == 200
    assert (await client.delete(url, headers=h)).status_code == 204
    assert (await client.get(url, headers=h)).status_code == 404
    assert (await client.get("/v2/watchlists")).status_code == 401


async def test_concurrent_creates_never_pass_the_limit(client: httpx.AsyncClient, acct: OpenedAccount,
                                                       app: FastAPI) -> None:
    h = headers(acct)
    settings = app.state.sherwood.settings
    old = settings.watchlist_max_per_account
    settings.watchlist_max_per_account = 3
    try:
        rs = await asyncio.gather(*(client.post("/v2/watchlists", json={"name": f"L{i}"}, headers=h)
                                    for i in range(8)))
    finally:
        settings.watchlist_max_per_account = old
    assert sorted(r.status_code for r in rs) == [200] * 3 + [422] * 5
    assert {r.json()["reason"] for r in rs if r.status_code == 422} == {"watchlist_limit_reached"}
    assert len((await client.get("/v2/watchlists", headers=h)).json()) == 3
