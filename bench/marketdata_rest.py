"""Market-data breadth: bar aggregation under load, and the multi-symbol REST reads.

* ``bars``: ingest with the market-data DB, fed 100,000 updates/s (10% trades, 1,000 symbols)
  across a minute boundary (the bench waits for one): how late each symbol's final 1-minute bar
  (``T:"b"``, every timeframe written in the same transaction) is published after its minute
  ends (by design at least ``marketdata_bar_grace_s``), and how long each flush takes (it must
  stay under ``marketdata_bar_flush_s`` to keep up).
* ``latest``: ``GET /v2/stocks/quotes/latest?symbols=<100>`` requests/s and p99 (8 concurrent
  clients over HTTP to uvicorn) against the baseline: the bare Redis ``HMGET`` of the same 100
  symbols from redis-py, same concurrency.
* ``snapshot``: ``GET /v2/stocks/{symbol}/snapshot`` and ``/v2/stocks/snapshots?symbols=<100>``
  p50/p99.

The REST part serves the market-data router alone with a static API key (key lookup is per
request and cached in the real app; it is not what is measured). Needs SHERWOOD_POSTGRES_URL (a
scratch database is created and dropped) and SHERWOOD_REDIS_URL. One JSON line per result.
``python -m bench.marketdata_rest [--seconds 5] [--rate 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from bench.marketdata import N_SYMBOLS, emit, feed_at, pct
from db.accounts import ApiKey
from db.engines import make_engine
from db.migrate import drop_database, ensure_database, migrate_marketdata
from db.router import ShardRouter
from domain.universe import known_symbols
from marketdata.bars import MINUTE_NS
from marketdata.ingest import Ingest
from sherwood.contracts import RedisKeys
from sherwood.embedded import free_port
from sherwood.settings import Settings
from simulators.exchange_feed import ExchangeFeed, FeedConfig


def trade_template(n: int) -> list[bytes]:
    feed = ExchangeFeed(FeedConfig(symbols=N_SYMBOLS, hot=0, trade_ratio=0.1, seed=2))
    return [x.replace(b",0,", b",{T},", 1) for x in feed.lines(n, now_ns=0)]


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a loopback port (uvicorn, in this process); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class TimedIngest(Ingest):
    flushes: list[float]

    async def flush_bars(self, *, final_all: bool = False) -> None:
        t0 = time.perf_counter()
        await super().flush_bars(final_all=final_all)
        self.flushes.append(time.perf_counter() - t0)


async def bench_bars(redis_url: str, md_url: str, prefix: str, rate: float, settings: Settings) -> None:
    engine = make_engine(md_url, pool_size=2, max_overflow=2)
    ing = TimedIngest(redis_url, prefix, known=known_symbols(N_SYMBOLS), engine=engine, max_jump=10,
                      bar_flush_s=settings.marketdata_bar_flush_s,
                      bar_grace_s=settings.marketdata_bar_grace_s)
    ing.flushes = []
    sub = Redis.from_url(redis_url)
    ps = sub.pubsub()
    await ps.psubscribe(RedisKeys(prefix).md_channel_prefix + "*")
    lags: list[float] = []
    boundary = 0

    async def reader() -> None:
        async for m in ps.listen():
            data = m.get("data")
            if isinstance(data, bytes) and data.startswith(b'{"T":"b"') and boundary:
                lags.append(time.time() - boundary / 1e9)

    # start 3 s before a minute ends; keep feeding until that minute's bars have come out (no new
    # one for 2 s after the first) or 30 s after it ended
    now = time.time_ns()
    boundary = now - now % MINUTE_NS + MINUTE_NS
    wait = (boundary - now) / 1e9 - 3
    if wait < 0:
        boundary += MINUTE_NS
        wait += 60
    await asyncio.sleep(wait)
    await ing.start()
    task = asyncio.create_task(reader())
    feeding = asyncio.create_task(feed_at(ing, rate, 33, trade_template(200_000)))
    while time.time_ns() < boundary + 30 * 10**9 and not feeding.done():
        await asyncio.sleep(0.5)
        if lags and time.time() - boundary / 1e9 - lags[-1] > 2:
            break
    feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeding
    sent = ing.accepted["quotes"] + ing.accepted["trades"]
    task.cancel()
    await ing.close()
    await ps.aclose()
    await sub.aclose()
    await engine.dispose()
    emit(bench="marketdata_rest", kind="bars", offered_per_s=rate, accepted=sent, bars_published=len(lags),
         bar_lag_after_minute_end_p50_ms=pct(lags, 0.5), bar_lag_p99_ms=pct(lags, 0.99),
         grace_s=settings.marketdata_bar_grace_s, flush_interval_s=settings.marketdata_bar_flush_s,
         flush_p50_ms=pct(ing.flushes, 0.5), flush_p99_ms=pct(ing.flushes, 0.99),
         flush_max_ms=pct(ing.flushes, 1.0))


async def timed(fn: Any, seconds: float, conc: int = 8) -> tuple[int, list[float]]:
    lat: list[float] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await fn()
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(conc)))
    return len(lat), lat


async def bench_rest(redis_url: str, md_url: str, prefix: str, seconds: float, settings: Settings) -> None:
    from api.deps import get_api_key
    from api.errors import install_error_handlers
    from api.routers import marketdata as md_routes
    from api.services.marketdata import marketdata_engine
    from api.state import AppState

    redis = Redis.from_url(redis_url)
    syms = sorted(known_symbols(N_SYMBOLS))[:100]
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(md_routes.router)
    app.state.sherwood = AppState(settings=settings.model_copy(update={"redis_prefix": prefix}),
                                  router=cast(ShardRouter, None), redis=redis)
    app.state.marketdata_engine = marketdata_engine(md_url)
    app.dependency_overrides[get_api_key] = lambda: ApiKey("bench", None, "trader")
    key = RedisKeys(prefix).quotes_latest
    async with served(app) as url, httpx.AsyncClient(base_url=url) as client:
        q = {"symbols": ",".join(syms)}
        assert len((await client.get("/v2/stocks/quotes/latest", params=q)).json()["quotes"]) == 100

        async def latest() -> None:
            r = await client.get("/v2/stocks/quotes/latest", params=q)
            assert r.status_code == 200

        async def hmget() -> None:
            await redis.hmget(key, syms)

        async def one() -> None:
            assert (await client.get(f"/v2/stocks/{syms[0]}/snapshot")).status_code == 200

        async def many() -> None:
            assert (await client.get("/v2/stocks/snapshots", params=q)).status_code == 200

        n_b, lat_b = await timed(hmget, seconds)
        n, lat = await timed(latest, seconds)
        emit(bench="marketdata_rest", kind="latest_quotes_100", requests_per_s=round(n / seconds),
             p50_ms=pct(lat, 0.5), p99_ms=pct(lat, 0.99), baseline="redis-py HMGET of 100",
             baseline_per_s=round(n_b / seconds), baseline_p99_ms=pct(lat_b, 0.99),
             ours_over_baseline=round(n / max(1, n_b), 3))
        for name, fn in (("snapshot_1", one), ("snapshots_100", many)):
            n, lat = await timed(fn, seconds)
            emit(bench="marketdata_rest", kind=name, requests_per_s=round(n / seconds),
                 p50_ms=pct(lat, 0.5), p99_ms=pct(lat, 0.99))
    await app.state.marketdata_engine.dispose()
    await redis.aclose()


async def main(seconds: float, rate: float) -> None:
    settings = Settings()
    redis_url = os.environ.get("SHERWOOD_REDIS_URL")
    if not redis_url or not settings.postgres_url:
        raise SystemExit("bench.marketdata_rest needs SHERWOOD_POSTGRES_URL and SHERWOOD_REDIS_URL")
    md_url = settings.model_copy(update={"db_prefix": f"bench_md_{uuid.uuid4().hex[:6]}"}
                                 ).marketdata_db_url_resolved()
    ensure_database(md_url)
    try:
        migrate_marketdata(md_url)
        prefix = f"bench:{uuid.uuid4().hex[:6]}"
        await bench_bars(redis_url, md_url, prefix, rate, settings)
        await bench_rest(redis_url, md_url, prefix, seconds, settings)
    finally:
        drop_database(md_url)


def cli() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=100_000.0)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rate))


if __name__ == "__main__":
    cli()
