"""GET /stream (trade updates WebSocket): the real app served by uvicorn in-process, real Redis,
events published by the real outbox publisher."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import api.routers.stream as stream_module
from api.services.activities import fill_uuid
from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from sherwood.contracts import RedisKeys
from sherwood.embedded import free_port
from sherwood.settings import Settings
from tests.api.test_positions import auth, funded, trade
from workers.outbox import OutboxPublisher

WAIT = 10.0


@pytest.fixture(scope="module")
async def ws_url(app: FastAPI) -> AsyncIterator[str]:
    """The session's app (lifespan already running) served over a real socket."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield f"ws://127.0.0.1:{port}/stream"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), "JSON text frames"
    msg: dict[str, Any] = json.loads(raw)
    return msg


async def authed(
    url: str, acct: OpenedAccount, *, listen: bool = True, legacy: bool = False
) -> ClientConnection:
    ws = await connect(url)
    if legacy:
        await ws.send(json.dumps({"action": "authenticate", "data": {
            "key_id": acct.credentials.key_id, "secret_key": acct.credentials.secret_key}}))
    else:
        await ws.send(json.dumps({"action": "auth", "key": acct.credentials.key_id,
                                  "secret": acct.credentials.secret_key}))
    assert await recv(ws) == {"stream": "authorization",
                              "data": {"status": "authorized", "action": "authenticate"}}
    if listen:
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert await recv(ws) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    return ws


async def publish_all(router: ShardRouter, redis: Redis, settings: Settings) -> None:
    for shard in range(router.shard_count):
        publisher = OutboxPublisher(router.engine(shard), redis, prefix=settings.redis_prefix)
        while await publisher.publish_once():
            pass


async def test_each_account_gets_only_its_own_trade_updates(
    ws_url: str, router: ShardRouter, redis: Redis, migrated: Settings, client: httpx.AsyncClient,
) -> None:
    a = await funded(router)
    b = await funded(router)
    await publish_all(router, redis, migrated)  # nothing stale in the way
    ws_a = await authed(ws_url, a)
    ws_b = await authed(ws_url, b, legacy=True)
    try:
        oid = await trade(router, a, "MSFT", "buy", 3, "420.00", [(1, "415.10"), (2, "415.20")])
        await publish_all(router, redis, migrated)
        events = [await recv(ws_a) for _ in range(5)]
        assert [e["stream"] for e in events] == ["trade_updates"] * 5
        assert [e["data"]["event"] for e in events] == ["accepted", "pending_new", "new",
                                                        "partial_fill", "fill"]
        for e in events:
            d = e["data"]
            assert d["order"]["id"] == oid and d["order"]["symbol"] == "MSFT"
            assert "account_id" not in d and d["timestamp"]
        fill = events[4]["data"]
        assert fill["order"]["status"] == "filled" and fill["order"]["filled_qty"] == "3"
        assert (fill["price"], fill["qty"], fill["position_qty"]) == ("415.20", "2", "3")
        assert fill["execution_id"] == str(fill_uuid("MM1", f"{oid}:F1"))
        assert events[3]["data"]["position_qty"] == "1" and "price" not in events[0]["data"]
        # the execution id is the one the FILL activity carries
        acts = (await client.get("/v2/account/activities/FILL", headers=auth(a))).json()
        assert acts[0]["id"].endswith("::" + fill["execution_id"])

        # B's next message is B's own event: none of A's five came before it
        oid_b = await trade(router, b, "MSFT", "buy", 1, "420.00", [])
        await publish_all(router, redis, migrated)
        got = await recv(ws_b)
        assert got["data"]["order"]["id"] == oid_b and got["data"]["event"] == "accepted"
        # ... and A does not see B's
        with pytest.raises(TimeoutError):
            await recv(ws_a, timeout=0.5)
    finally:
        await ws_a.close()
        await ws_b.close()


async def test_repeats_and_foreign_payloads_are_not_forwarded(
    ws_url: str, router: ShardRouter, redis: Redis, migrated: Settings,
) -> None:
    a = await open_account(router)
    b = await open_account(router)
    ws = await authed(ws_url, a)
    try:
        channel = RedisKeys(migrated.redis_prefix).trade_updates(a.account_id)
        order = {"id": str(uuid.uuid4()), "symbol": "KO", "status": "new"}
        mine = json.dumps({"event": "new", "account_id": str(a.account_id), "order": order,
                           "timestamp": "2026-01-02T15:00:00Z"})
        foreign = json.dumps({"event": "new", "account_id": str(b.account_id), "order": order,
                              "timestamp": "2026-01-02T15:00:01Z"})
        await redis.publish(channel, foreign)  # misrouted: must never reach A
        await redis.publish(channel, "not json")
        await redis.publish(channel, mine)
        await redis.publish(channel, mine)  # the outbox publishes at least once
        marker = json.dumps({"event": "canceled", "account_id": str(a.account_id), "order": order,
                             "timestamp": "2026-01-02T15:00:02Z"})
        await redis.publish(channel, marker)
        first, second = await recv(ws), await recv(ws)
        assert first["data"] == {"event": "new", "order": order, "timestamp": "2026-01-02T15:00:00Z"}
        assert second["data"]["event"] == "canceled"

        # listen to nothing: no more events
        await ws.send(json.dumps({"action": "listen", "data": {"streams": []}}))
        assert await recv(ws) == {"stream": "listening", "data": {"streams": []}}
        await redis.publish(channel, marker.replace("15:00:02", "15:00:03"))
        with pytest.raises(TimeoutError):
            await recv(ws, timeout=0.5)
        assert dict(await redis.pubsub_numsub(channel))[channel.encode()] == 0
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert await recv(ws) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
        assert dict(await redis.pubsub_numsub(channel))[channel.encode()] == 1
    finally:
        await ws.close()
    # the subscription goes with the connection
    for _ in range(100):
        if dict(await redis.pubsub_numsub(channel))[channel.encode()] == 0:
            break
        await asyncio.sleep(0.05)
    assert dict(await redis.pubsub_numsub(channel))[channel.encode()] == 0


async def test_bad_credentials_are_refused_and_closed(ws_url: str, router: ShardRouter) -> None:
    a = await open_account(router)
    from tests.stack import ops_headers

    ops_hdr = await ops_headers(router)  # an ops key: no trading account, never a customer key
    attempts = [
        {"action": "auth", "key": a.credentials.key_id, "secret": "wrong"},
        {"action": "authenticate", "data": {"key_id": "PKNOSUCHKEY", "secret_key": "x"}},
        {"action": "auth", "key": ops_hdr["APCA-API-KEY-ID"],
         "secret": ops_hdr["APCA-API-SECRET-KEY"]},
        {"action": "auth"},
    ]
    for msg in attempts:
        async with connect(ws_url) as ws:
            await ws.send(json.dumps(msg))
            assert await recv(ws) == {"stream": "authorization",
                                      "data": {"status": "unauthorized", "action": "authenticate"}}
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1008


async def test_protocol_errors_keep_the_connection(ws_url: str, router: ShardRouter) -> None:
    a = await open_account(router)
    async with connect(ws_url) as ws:
        await ws.send("{not json")
        err = await recv(ws)
        assert err["stream"] == "error" and set(err["data"]) == {"code", "message", "reason"}
        assert err["data"]["reason"] == "invalid_json" and isinstance(err["data"]["code"], int)
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert (await recv(ws))["data"]["reason"] == "unauthorized"
        await ws.send(json.dumps({"action": "dance"}))
        assert (await recv(ws))["data"]["reason"] == "invalid_action"
        await ws.send(json.dumps([1, 2]))
        assert (await recv(ws))["data"]["reason"] == "invalid_message"
        await ws.send(json.dumps({"action": "auth", "key": a.credentials.key_id,
                                  "secret": a.credentials.secret_key}))
        assert (await recv(ws))["data"]["status"] == "authorized"
        await ws.send(json.dumps({"action": "subscribe"}))
        assert (await recv(ws))["data"]["reason"] == "invalid_action"
        await ws.send(json.dumps({"action": "listen", "data": {"streams": "trade_updates"}}))
        assert (await recv(ws))["data"]["reason"] == "invalid_message"
        await ws.send(json.dumps({"action": "auth", "key": "x", "secret": "y"}))
        assert (await recv(ws))["data"]["reason"] == "already_authenticated"
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "bogus"]}}))
        assert await recv(ws) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}


async def test_no_auth_in_time_closes(ws_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "AUTH_TIMEOUT_S", 0.3)
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"action": "dance"}))  # activity is not authentication
        assert (await recv(ws))["stream"] == "error"
        msg = await recv(ws, timeout=5)
        assert msg["stream"] == "authorization" and msg["data"]["status"] == "unauthorized"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1008


def test_default_auth_timeout_is_ten_seconds() -> None:
    assert stream_module.AUTH_TIMEOUT_S == 10.0


async def test_connections_per_key_are_capped(ws_url: str, app: FastAPI, router: ShardRouter) -> None:
    """One API key holds at most stream_max_connections_per_key trade streams (per API process);
    the next one gets a 406 error and is closed; other keys are not affected; a freed slot is
    taken again."""
    cap = app.state.sherwood.settings.stream_max_connections_per_key
    a = await open_account(router)
    b = await open_account(router)
    held = [await authed(ws_url, a, listen=False) for _ in range(cap)]
    try:
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"action": "auth", "key": a.credentials.key_id,
                                      "secret": a.credentials.secret_key}))
            msg = await recv(ws)
            assert msg == {"stream": "error", "data": {
                "code": 406, "message": "connection limit exceeded",
                "reason": "connection_limit_exceeded"}}, msg
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1008
        other = await authed(ws_url, b, listen=False)  # another key: unaffected
        await other.close()
        await held.pop().close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:  # the server frees the slot once it has seen the close
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"action": "auth", "key": a.credentials.key_id,
                                          "secret": a.credentials.secret_key}))
                if (await recv(ws))["stream"] == "authorization":
                    break
            assert loop.time() < deadline, "the closed stream's slot was never freed"
            await asyncio.sleep(0.05)
    finally:
        for ws in held:
            await ws.close()
