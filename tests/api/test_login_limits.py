"""Failed logins are rate-limited per source address before the directory lookup: past N
failures in the window a source gets 429 with a code and Retry-After, and the directory database
is not asked (proved with its api_keys table locked: a lookup would wait on the lock); good keys
from other sources are unaffected."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from api.app import create_app
from db.accounts import open_account
from db.router import ShardRouter
from sherwood.settings import Settings
from tests.owner import owner_url

LIMIT = 3


@pytest.fixture
async def limited_app(migrated: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(migrated.model_copy(update={"login_failures_per_source": LIMIT,
                                                 "login_failure_window_s": 60.0}))
    async with app.router.lifespan_context(app):
        yield app


def source() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                             base_url="http://sherwood.test")


async def test_failed_logins_are_limited_per_source_before_the_directory_lookup(
    limited_app: FastAPI, migrated: Settings, router: ShardRouter,
) -> None:
    good = (await open_account(router)).credentials
    attacker, other = source(), source()
    bad = {"APCA-API-KEY-ID": good.key_id, "APCA-API-SECRET-KEY": "wrong-secret"}
    unknown = {"APCA-API-KEY-ID": "PKNOSUCHKEY", "APCA-API-SECRET-KEY": "x"}
    refused = REGISTRY.get_sample_value("sherwood_rate_limit_refusals_total",
                                        {"limit": "login_failures"}) or 0.0
    async with client_from(limited_app, attacker) as http:
        for n in range(LIMIT):
            r = await http.get("/v2/account", headers=bad if n % 2 else unknown)
            assert r.status_code == 401, r.text
        # the directory's keys table locked: a lookup now would wait (and end in db_timeout)
        # (as the owner: locking a table exclusively is no service's business)
        locker = await psycopg.AsyncConnection.connect(owner_url(migrated, migrated.directory_db_url()))
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                r = await asyncio.wait_for(http.get("/v2/account", headers=bad), 10)
                assert r.status_code == 429, r.text
                assert r.json()["reason"] == "too_many_failed_logins"
                assert isinstance(r.json()["code"], int)
                assert int(r.headers["Retry-After"]) >= 1
                # counted for /metrics by the limit's kind, never by the source address
                assert REGISTRY.get_sample_value("sherwood_rate_limit_refusals_total",
                                                 {"limit": "login_failures"}) == refused + 1
        finally:
            await locker.close()
    ok = {"APCA-API-KEY-ID": good.key_id, "APCA-API-SECRET-KEY": good.secret_key}
    async with client_from(limited_app, other) as http:
        assert (await http.get("/v2/account", headers=ok)).status_code == 200
        # failures from the other source count for it alone
        assert (await http.get("/v2/account", headers=bad)).status_code == 401
