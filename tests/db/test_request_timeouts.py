"""Postgres on the request path: statement_timeout and lock_timeout on the API's and the shard
workers' sessions. A request blocked by a lock another connection holds is answered 503 with a
code within about lock_timeout, not left hanging; the errors are easy to classify (transient)."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest
from sqlalchemy import text

from api.app import create_app
from db.accounts import open_account
from db.engines import make_engine
from db.router import ShardRouter
from sherwood.settings import Settings


async def test_a_statement_over_statement_timeout_is_canceled_and_classified(migrated: Settings) -> None:
    from db.engines import is_db_timeout

    engine = make_engine(migrated.shard_url(0), pool_size=1, max_overflow=0,
                         statement_timeout_s=0.3, lock_timeout_s=0.2)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - t0 < 2.0
        assert is_db_timeout(caught.value), caught.value
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW lock_timeout"))).scalar() == "200ms"
    finally:
        await engine.dispose()


async def test_a_request_blocked_by_a_lock_gets_503_within_lock_timeout(
    migrated: Settings, router: ShardRouter,
) -> None:
    acct = await open_account(router)
    headers = {"APCA-API-KEY-ID": acct.credentials.key_id,
               "APCA-API-SECRET-KEY": acct.credentials.secret_key}
    s = migrated.model_copy(update={"db_lock_timeout_s": 0.5, "db_statement_timeout_s": 5.0})
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sherwood.test") as http:
            assert (await http.get("/v2/account", headers=headers)).status_code == 200
            locker = await psycopg.AsyncConnection.connect(
                s.shard_url(acct.shard).replace("postgresql+psycopg", "postgresql"))
            try:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
                    t0 = time.monotonic()
                    r = await asyncio.wait_for(http.get("/v2/account", headers=headers), 15)
                    elapsed = time.monotonic() - t0
            finally:
                await locker.close()
            assert r.status_code == 503, r.text
            assert r.json()["reason"] == "db_timeout" and isinstance(r.json()["code"], int)
            assert r.headers.get("Retry-After")
            assert elapsed < 3.0, elapsed
            # the lock gone, the same request is answered again
            assert (await http.get("/v2/account", headers=headers)).status_code == 200
