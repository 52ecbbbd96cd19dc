"""The API connects as its own database login (db/roles.py, ``Settings.for_api``): every engine the
app builds, and the sessions it really opens on the server, are the API's role, not the services'.
What that role may not do is tested in tests/db/test_roles.py; that the API still works with it,
by every test of tests/api."""

from __future__ import annotations

import httpx
import psycopg
from fastapi import FastAPI
from sqlalchemy import text

from api.routers.marketdata import _engine as marketdata_engine_of
from api.state import AppState
from db.accounts import open_account
from db.roles import login_of
from db.router import ShardRouter
from sherwood.settings import Settings
from tests.owner import owner_url
from tests.stack import headers


async def _current_user(engine) -> str:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return str((await conn.execute(text("SELECT current_user"))).scalar_one())


async def test_every_engine_of_the_app_is_the_api_role(app: FastAPI, stack_settings: Settings) -> None:
    api = stack_settings.api_login()
    assert api is not None
    service = login_of(stack_settings.directory_db_url()).user
    state: AppState = app.state.sherwood
    assert await _current_user(state.router.directory) == api.user
    for n in range(state.router.shard_count):
        assert await _current_user(state.router.engine(n)) == api.user
    assert state.gateway is not None
    assert state.gateway.engine.url.username == api.user  # lazy: its database may not exist here
    request = type("R", (), {"app": app})()
    assert await _current_user(marketdata_engine_of(request, state)) == api.user  # type: ignore[arg-type]
    assert api.user != service
    # nothing in the app's settings still names the services' user
    urls = [state.settings.directory_db_url(), state.settings.gateway_db_url_resolved(),
            state.settings.marketdata_db_url_resolved(),
            *[state.settings.shard_url(n) for n in range(state.router.shard_count)]]
    assert {login_of(u).user for u in urls} == {api.user}


async def test_the_sessions_the_api_opens_are_the_api_role(
        app: FastAPI, client: httpx.AsyncClient, router: ShardRouter, stack_settings: Settings) -> None:
    """Seen from the server: while the API serves a request that reads the directory and a shard
    and writes a watchlist, its sessions there are the API's login (application-independent:
    pg_stat_activity by backend, matched to the app's own pooled connection)."""
    api = stack_settings.api_login()
    assert api is not None
    acct = await open_account(router)
    r = await client.post("/v2/watchlists", headers=headers(acct), json={"name": "role", "symbols": ["AAPL"]})
    assert r.status_code == 200, r.text
    assert (await client.get("/v2/account", headers=headers(acct))).status_code == 200
    state: AppState = app.state.sherwood
    async with state.router.engine(acct.shard).connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    with psycopg.connect("postgresql://" + owner_url(stack_settings, stack_settings.shard_url(acct.shard))
                         .partition("://")[2]) as owner:
        row = owner.execute("SELECT usename, datname FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        assert row == (api.user, f"{stack_settings.db_prefix}_shard_{acct.shard}")
        written = owner.execute("SELECT count(*) FROM watchlists WHERE account_id = %s",
                                (acct.account_id,)).fetchone()
        assert written == (1,)
