"""Market-data fixtures: real Redis (per-test key prefix), the market-data DB, a real account."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect

from db.accounts import OpenedAccount, open_account
from db.migrate import drop_database_as, migrate_marketdata
from db.router import ShardRouter
from domain.universe import known_symbols
from marketdata.fanout import FanoutServer, directory_authenticator
from marketdata.ingest import Ingest
from sherwood.settings import Settings


@pytest.fixture(scope="session")
def md_db(migrated: Settings) -> Iterator[str]:
    url = migrated.marketdata_db_url_resolved()
    migrate_marketdata(url, migrated.db_owner(), migrated.api_login())
    yield url
    drop_database_as(url, migrated.db_owner())


@pytest.fixture
def prefix(migrated: Settings) -> str:
    return f"{migrated.redis_prefix}:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
async def account(router: ShardRouter) -> OpenedAccount:
    return await open_account(router)


@pytest.fixture
async def ingest(migrated: Settings, prefix: str) -> AsyncIterator[Ingest]:
    assert migrated.redis_url
    ing = Ingest(migrated.redis_url, prefix, known=known_symbols(), bar_flush_s=0.2)
    await ing.start()
    yield ing
    await ing.close()


FanoutFactory = Callable[..., Awaitable[FanoutServer]]


@pytest.fixture
async def make_fanout(migrated: Settings, prefix: str, router: ShardRouter) -> AsyncIterator[FanoutFactory]:
    servers: list[FanoutServer] = []

    async def _make(redis_url: str | None = None, **kw: Any) -> FanoutServer:
        kw.setdefault("ping_interval_s", None)
        kw.setdefault("flush_interval_s", 0.005)
        srv = FanoutServer(redis_url or migrated.redis_url or "", prefix, directory_authenticator(router),
                           redis_backoff_max_s=0.2, **kw)
        await srv.start("127.0.0.1", 0)
        servers.append(srv)
        return srv

    yield _make
    for s in servers:
        await s.close()


class Client:
    """A test client: JSON or msgpack, with helpers to wait for data messages."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(msg) if self.binary else json.dumps(msg))

    async def recv(self, timeout: float = 3.0) -> list[dict[str, Any]]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.binary:
            assert isinstance(raw, bytes)
            out: list[dict[str, Any]] = msgpack.unpackb(raw, timestamp=3)
            return out
        assert isinstance(raw, str), "JSON clients get text frames"
        res: list[dict[str, Any]] = json.loads(raw)
        return res

    async def request(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        await self.send(msg)
        return await self.recv()

    async def collect(self, seconds: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                out.extend(await self.recv(left))
            except TimeoutError:
                break
        return out

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for m in await self.recv(max(0.01, end - loop.time())):
                if pred(m):
                    return m


async def open_client(server: FanoutServer, *, binary: bool = False, path: str = "/v2/iex",
                      **kw: Any) -> Client:
    headers = {"Content-Type": "application/msgpack"} if binary else {}
    ws = await connect(f"ws://127.0.0.1:{server.port}{path}", additional_headers=headers, **kw)
    c = Client(ws, binary)
    assert await c.recv() == [{"T": "success", "msg": "connected"}]
    return c


async def authed_client(server: FanoutServer, account: OpenedAccount, **kw: Any) -> Client:
    c = await open_client(server, **kw)
    got = await c.request({"action": "auth", "key": account.credentials.key_id,
                           "secret": account.credentials.secret_key})
    assert got == [{"T": "success", "msg": "authenticated"}]
    return c
