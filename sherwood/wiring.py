"""Building shared resources from Settings (used by entry points only), and choosing the outside
world.

The back office talks to a bank and a clearinghouse only through the ports of
:mod:`domain.ports`; :func:`outside_world` is the one place that picks their implementation (today
the simulators of :mod:`simulators`), and :func:`run_backoffice` (``sherwood serve backoffice``)
hands them to the back-office worker (:mod:`workers.backoffice`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from db.engines import make_engine
from db.router import ShardRouter
from domain.ports import Bank, Clearinghouse
from sherwood.redis_client import redis_from_settings
from sherwood.settings import Settings


def shard_urls(settings: Settings) -> list[str]:
    return [settings.shard_url(n) for n in range(settings.shard_count)]


def build_router(settings: Settings, redis: Redis | None = None, *,
                 request_path: bool = False) -> ShardRouter:
    """The directory + shard router. ``request_path``: its sessions get the settings'
    statement_timeout and lock_timeout (the API, the fan-out; not the CLI's long audits)."""
    return ShardRouter(
        settings.directory_db_url(),
        shard_urls(settings),
        redis=redis,
        redis_prefix=settings.redis_prefix,
        cache_ttl_s=settings.shard_cache_ttl_s,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        house_stripes=settings.house_balance_stripes,
        statement_timeout_s=settings.db_statement_timeout_s if request_path else None,
        lock_timeout_s=settings.db_lock_timeout_s if request_path else None,
    )


@asynccontextmanager
async def outside_world(settings: Settings) -> AsyncIterator[tuple[Bank, Clearinghouse]]:
    """The bank and the clearinghouse the back office talks to; what they hold is closed on exit.

    Today the simulators: the ACH bank (:class:`simulators.bank.AchBank`, its instructions in Redis,
    in memory without Redis) and the clearinghouse (:class:`simulators.clearinghouse.Clearinghouse`),
    whose street fills are what the venues reported to the execution gateway
    (:class:`simulators.clearinghouse.GatewayFills`). A real integration is chosen here.
    """
    # imported here: the API imports this module (build_router) and must not load the fakes
    from simulators.bank import AchBank
    from simulators.clearinghouse import Clearinghouse as SimulatedClearinghouse
    from simulators.clearinghouse import GatewayFills

    redis = redis_from_settings(settings)
    gateway = make_engine(settings.gateway_db_url_resolved(), pool_size=1, max_overflow=2)
    try:
        yield AchBank(redis, settings.redis_prefix), SimulatedClearinghouse(GatewayFills(gateway))
    finally:
        if redis is not None:
            await redis.aclose()
        await gateway.dispose()


async def run_backoffice(settings: Settings) -> None:
    """``sherwood serve backoffice``: the back-office workers, talking to :func:`outside_world`."""
    from workers import backoffice  # here, not at the top: the API imports this module for build_router

    async with outside_world(settings) as (bank, clearinghouse), shard_gauges(settings):
        await backoffice.run(settings, bank, clearinghouse)


@asynccontextmanager
async def shard_gauges(settings: Settings) -> AsyncIterator[None]:
    """The back office's scrape-time shard gauges (sherwood.metrics.ShardGauges) while inside:
    one small engine per shard, every statement bounded by ``metrics_scrape_timeout_s``."""
    import asyncio

    from sherwood.metrics import REGISTRY, ShardGauges, register_once

    engines = [make_engine(url, pool_size=1, max_overflow=1,
                           statement_timeout_s=settings.metrics_scrape_timeout_s)
               for url in shard_urls(settings)]
    collector = register_once(ShardGauges(list(enumerate(engines)), asyncio.get_running_loop(),
                                          settings.metrics_scrape_timeout_s))
    try:
        yield
    finally:
        REGISTRY.unregister(collector)
        for engine in engines:
            await engine.dispose()


def migrate_databases(settings: Settings, progress: Callable[[str], None] = print) -> None:
    """``sherwood migrate`` (and ``sherwood dev``): create and migrate the directory, every
    shard, the gateway's and the market-data database; with an owner configured, as the owner,
    granting each URL's user its service privileges and the API's login (when configured) the
    API's (db/roles.py)."""
    from db.migrate import migrate_all, migrate_gateway, migrate_marketdata

    owner, api = settings.db_owner(), settings.api_login()
    migrate_all(settings.directory_db_url(), shard_urls(settings), progress=progress, owner=owner,
                api=api)
    progress("migrating gateway database")
    migrate_gateway(settings.gateway_db_url_resolved(), owner, api)
    progress("migrating market-data database")
    migrate_marketdata(settings.marketdata_db_url_resolved(), owner, api)
