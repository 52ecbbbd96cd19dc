"""Redis clients with socket timeouts: a Redis that accepts the TCP connection and never answers
(a black hole, as a hung or overloaded server looks) fails our calls within the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.exceptions import RedisError

from api.app import create_app
from db.accounts import open_account
from db.router import ShardRouter
from sherwood.settings import Settings


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A TCP server that accepts every connection, reads what comes and answers nothing."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for w in held:
        w.close()
    server.close()


async def test_a_redis_that_never_answers_fails_the_call_within_the_timeout(
    black_hole: str, migrated: Settings,
) -> None:
    from sherwood.redis_client import redis_from_url

    s = migrated.model_copy(update={"redis_socket_timeout_s": 0.3, "redis_connect_timeout_s": 0.3})
    redis = redis_from_url(black_hole, s)
    t0 = time.monotonic()
    try:
        with pytest.raises((RedisError, OSError)):
            await asyncio.wait_for(redis.get("anything"), 10)
    finally:
        await redis.aclose()
    assert time.monotonic() - t0 < 2.0


async def test_the_api_answers_while_redis_never_does(
    black_hole: str, migrated: Settings, router: ShardRouter,
) -> None:
    """The API's Redis (rate limits, shard cache) is a black hole: requests are still answered
    (the limiter lets them through after the socket timeout), they do not hang."""
    acct = await open_account(router)
    creds = acct.credentials
    s = migrated.model_copy(update={"redis_url": black_hole, "redis_socket_timeout_s": 0.3,
                                    "redis_connect_timeout_s": 0.3})
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sherwood.test") as http:
            t0 = time.monotonic()
            r = await asyncio.wait_for(http.get("/v2/account", headers={
                "APCA-API-KEY-ID": creds.key_id, "APCA-API-SECRET-KEY": creds.secret_key}), 15)
            elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed < 5.0, elapsed
