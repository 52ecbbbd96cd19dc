"""The real trading stack for end-to-end tests: two simulated market makers (FIX acceptors),
the execution gateway (FIX initiators + Temporal activities), the shard workers (order
workflows), and the API app -- all on the session's Postgres, Redis and Temporal.

Venue behaviour is switched per test through :meth:`TradingStack.venues_behave` (the market
makers read their config on every order), always restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from temporalio.client import Client

from api.app import create_app
from db.accounts import OpenedAccount, open_account
from db.migrate import drop_database_as, migrate_gateway
from db.router import ShardRouter
from marketdata.quotes import LatestQuotes
from sherwood.contracts import RedisKeys
from sherwood.embedded import free_port
from sherwood.settings import Settings, VenueConfig
from sherwood.temporal import connect
from simulators.market_maker import MarketMaker
from workers.gateway import ExecutionGateway
from workers.shard import ShardWorkers

# venue_replace_timeout_s: tests make venues answer slowly on purpose (1 s per report while a
# fill races a replace); 3 s left such a Replaced behind the deadline on a busy CI machine
FAST_TIMEOUTS = {"venue_ack_timeout_s": 2.0, "venue_cancel_timeout_s": 1.0,
                 "venue_status_timeout_s": 1.0, "venue_replace_timeout_s": 8.0,
                 "trigger_heartbeat_timeout_s": 2.0, "trigger_poll_s": 0.2,
                 "trigger_write_interval_s": 0.1}


@dataclasses.dataclass
class TradingStack:
    settings: Settings
    router: ShardRouter
    redis: Redis
    temporal: Client
    venues: dict[str, MarketMaker]
    gateway: ExecutionGateway
    workers: ShardWorkers
    app: FastAPI
    quotes: LatestQuotes

    @contextlib.contextmanager
    def venues_behave(self, *, engine: dict[str, Any] | None = None, **changes: Any) -> Iterator[None]:
        """Every venue behaves differently inside the block: fault switches (``changes``, the
        market maker's config) and matching parameters (``engine``: fill_slices, fill_delay ...)."""
        old = {name: mm.config for name, mm in self.venues.items()}
        old_engine = {name: {k: getattr(mm.engine, k) for k in (engine or {})}
                      for name, mm in self.venues.items()}
        for mm in self.venues.values():
            mm.config = dataclasses.replace(mm.config, **changes)
            for k, v in (engine or {}).items():
                setattr(mm.engine, k, v)
        try:
            yield
        finally:
            for name, mm in self.venues.items():
                mm.config = old[name]
                for k, v in old_engine[name].items():
                    setattr(mm.engine, k, v)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a separate Sherwood process needs to join this stack."""
        import json
        import os

        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
        env.update({
            "SHERWOOD_POSTGRES_URL": s.postgres_url or "", "SHERWOOD_DB_PREFIX": s.db_prefix,
            "SHERWOOD_TEMPORAL_ADDRESS": s.temporal_address or "", "SHERWOOD_REDIS_URL": s.redis_url or "",
            "SHERWOOD_REDIS_PREFIX": s.redis_prefix, "SHERWOOD_DATA_DIR": str(s.data_dir),
            "SHERWOOD_SHARDS": str(s.shard_count), "SHERWOOD_DB_POOL_SIZE": str(s.db_pool_size),
            "SHERWOOD_DB_MAX_OVERFLOW": str(s.db_max_overflow),
            "SHERWOOD_ENFORCE_MARKET_HOURS": str(s.enforce_market_hours).lower(),
            "SHERWOOD_ORDER_RATE_PER_S": str(s.order_rate_per_s),
            "SHERWOOD_ORDER_ADMISSION_PER_SHARD": str(s.order_admission_per_shard),
            "SHERWOOD_VENUES": json.dumps([v.model_dump() for v in s.venues]),
            "SHERWOOD_GATEWAY_LINK_PORT": str(s.gateway_link_port),
            "SHERWOOD_OPS_OPERATORS": json.dumps(s.ops_operators),
            "SHERWOOD_OPS_FOUR_EYES_NOTIONAL": str(s.ops_four_eyes_notional),
            "SHERWOOD_GATEWAY_LINK_SECRET": (s.gateway_link_secret.get_secret_value()
                                             if s.gateway_link_secret else ""), **extra})
        return env

    async def restart_gateway(self, downtime: float = 0.0) -> None:
        """Stop the execution gateway, wait, start a new one on the same stores."""
        import asyncio

        await self.gateway.stop()
        await asyncio.sleep(downtime)
        self.gateway = ExecutionGateway.from_settings(self.settings, self.temporal)
        await self.gateway.start()
        await self.gateway.wait_logged_on(timeout=20)

    async def set_quote(self, symbol: str, bid: str, ask: str) -> None:
        await self.quotes.put(symbol, Decimal(bid), Decimal(ask))
        for mm in self.venues.values():
            mm.set_quote(symbol, Decimal(bid), Decimal(ask))

    async def account(self, cash: str = "100000", account_type: str = "cash") -> OpenedAccount:
        acct = await open_account(self.router, account_type=account_type)
        ledger = self.router.ledger(acct.shard)
        if Decimal(cash) > 0:
            await ledger.deposit(f"t:{acct.account_id}:dep", acct.account_id, cash)
            await ledger.settle_deposit(f"t:{acct.account_id}:set", acct.account_id, cash)
        return acct

    @contextlib.asynccontextmanager
    async def http(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sherwood.test",
                                     timeout=30) as c:
            yield c


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a loopback port, for clients that need a real socket (or a
    real timeout); its lifespan is not run again (the caller's is already running). Yields the
    base URL."""
    import asyncio

    import uvicorn

    port = free_port()
    # a request still hanging at the end is cut off, not waited for
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def headers(acct: OpenedAccount) -> dict[str, str]:
    return {"APCA-API-KEY-ID": acct.credentials.key_id,
            "APCA-API-SECRET-KEY": acct.credentials.secret_key}


async def ops_headers(router: ShardRouter, *scopes: str, holder: str = "ops-test",
                      days: int = 1) -> dict[str, str]:
    """Headers of a new ops key (``ops_keys``) of ``holder`` with ``scopes`` (all by default)."""
    from db.ops import Actor, create_key
    from domain.ops import SCOPES

    creds = await create_key(router.directory, holder=holder, scopes=tuple(scopes or SCOPES),
                             days=days, actor=Actor("test-setup"), reason="test key")
    return {"APCA-API-KEY-ID": creds.key_id, "APCA-API-SECRET-KEY": creds.secret_key}


async def stopped(what: str, stop: Awaitable[None], limit_s: float = 60.0) -> None:
    """Await ``stop``; past ``limit_s`` fail naming ``what`` did not stop, after printing every
    task still pending with its stack (a teardown that hangs says where, instead of waiting for
    the test timeout with nothing but the event loop's select on the stack)."""
    try:
        await asyncio.wait_for(stop, limit_s)
    except TimeoutError:
        for task in asyncio.all_tasks():
            print(f"--- pending: {task.get_name()}", file=sys.stderr)
            task.print_stack(file=sys.stderr)
        raise AssertionError(f"{what} did not stop within {limit_s:.0f} s") from None


@contextlib.asynccontextmanager
async def trading_stack(base: Settings, router: ShardRouter, redis: Redis,
                        data_dir: Path) -> AsyncIterator[TradingStack]:
    venues = {name: MarketMaker(sender_comp_id=name, target_comp_id="SHERWOOD", port=0,
                                heartbeat_interval=5, redis_url=base.redis_url,
                                quotes_key=RedisKeys(base.redis_prefix).quotes_latest,
                                halts_key=RedisKeys(base.redis_prefix).halts, tick_interval=0.2)
              for name in ("MM1", "MM2")}
    for mm in venues.values():
        await mm.start()
    settings = base.model_copy(update={
        **FAST_TIMEOUTS,
        # races (many POSTs at once on one shard) are what several tests are about: the shared
        # stack admits them all; tests/workflows/test_order_admission.py runs its own limits
        "order_admission_per_shard": 0,
        "venues": [VenueConfig(name=n, port=mm.port, heartbeat_interval=5) for n, mm in venues.items()],
        "gateway_data_dir": data_dir / f"gateway-{uuid.uuid4().hex[:6]}",
        "gateway_link_port": free_port(),
        "gateway_link_secret": SecretStr(secrets.token_hex(32)),
    })
    gw_url = settings.gateway_db_url_resolved()
    migrate_gateway(gw_url, settings.db_owner(), settings.api_login())  # the API reads it
    assert settings.temporal_address
    client = await connect(settings)
    gateway = ExecutionGateway.from_settings(settings, client)
    await gateway.start()
    await gateway.wait_logged_on(timeout=20)
    workers = ShardWorkers(settings, list(range(settings.shard_count)), client=client)
    await workers.start()
    app = create_app(settings)
    stack: TradingStack | None = None
    try:
        async with app.router.lifespan_context(app):
            stack = TradingStack(settings, router, redis, client, venues, gateway, workers, app,
                                 LatestQuotes(redis, settings.redis_prefix))
            yield stack
    finally:
        # tests may have replaced the gateway or the workers: stop the current ones
        await stopped("the shard workers", (stack.workers if stack else workers).stop())
        await stopped("the gateway", (stack.gateway if stack else gateway).stop())
        for name, mm in venues.items():
            await stopped(f"venue {name}", mm.stop())
        drop_database_as(gw_url, settings.db_owner())
