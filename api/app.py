"""The FastAPI application: Alpaca-style REST plus ops endpoints. Build with :func:`create_app`.

Reads go to the shard databases; writes go through the service layer (and, from the orders
slice on, Temporal). The app owns its ShardRouter and Redis client for its lifetime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.admission import Admission
from api.errors import install_error_handlers
from api.ratelimit import RateLimiter
from api.routers import (
    account,
    activities,
    assets,
    backoffice_ops,
    clock,
    corporate_actions,
    health,
    ops,
    ops_admin,
    orders,
    positions,
    reports,
    stream,
    transfers,
    watchlists,
)
from api.routers import marketdata as marketdata_routes
from api.state import AppState
from db.gateway import GatewayStore
from sherwood.redis_client import redis_from_settings
from sherwood.settings import Settings
from sherwood.temporal import connect
from sherwood.wiring import build_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app on ``settings``; its databases are reached with the API's login when one is set
    (``SHERWOOD_API_DB_USER``: db/roles.py), whatever user the URLs name."""
    settings = (settings or Settings()).resolved().for_api()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = redis_from_settings(settings)
        router = build_router(settings, redis, request_path=True)
        temporal = await connect(settings, lazy=True) if settings.temporal_address else None
        gateway = GatewayStore.from_url(settings.gateway_db_url_resolved(), pool_size=1,
                                        max_overflow=2)
        app.state.sherwood = AppState(settings=settings, router=router, redis=redis,
                                      temporal=temporal,
                                      limiter=RateLimiter(redis, settings.redis_prefix),
                                      admission=Admission(
                                          settings.order_admission_per_shard,
                                          settings.order_admission_retry_after_s, redis=redis,
                                          prefix=settings.redis_prefix,
                                          hold_max_s=settings.order_admission_hold_max_s,
                                          wait_s=settings.order_admission_wait_s),
                                      gateway=gateway)
        # wakes the requests waiting for an admission slot when their shard frees one
        wakeups = asyncio.create_task(app.state.sherwood.admission.run(), name="admission-wakeups")
        try:
            yield
        finally:
            wakeups.cancel()
            # bounded: the shutdown never waits on the wake-ups for long, whatever redis-py does
            await asyncio.wait((wakeups,), timeout=3)
            await gateway.dispose()
            await router.dispose()
            if redis is not None:
                await redis.aclose()

    app = FastAPI(title="Sherwood", version="0.1.0", lifespan=lifespan,
                  description="Retail brokerage API (Alpaca v2 shape).")
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(account.router)
    app.include_router(orders.router)
    app.include_router(ops.router)
    app.include_router(assets.router)
    app.include_router(clock.router)
    app.include_router(positions.router)
    app.include_router(activities.router)
    app.include_router(stream.router)
    app.include_router(marketdata_routes.router)
    app.include_router(transfers.router)
    app.include_router(watchlists.router)
    app.include_router(backoffice_ops.router)
    app.include_router(reports.router)
    app.include_router(ops_admin.router)
    app.include_router(corporate_actions.router)
    return app
