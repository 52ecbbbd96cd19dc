"""Market-data REST breadth through alpaca-py's StockHistoricalDataClient over a real socket:
latest quotes for 100 symbols in one call, latest trades and bars, snapshots; bars of every
timeframe aggregated in the market-data DB; sort, limit, page_token; bad input 422."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from api.app import create_app
from db.accounts import OpenedAccount
from db.engines import make_engine
from domain.universe import known_symbols
from marketdata.bars import MINUTE_NS, minute_start, ny_midnight
from marketdata.ingest import Ingest
from sherwood.settings import Settings
from tests.marketdata.helpers import q, tr
from tests.owner import owner_engine
from tests.stack import served

BAR_TABLES = ("bars_1min", "bars_5min", "bars_15min", "bars_1hour", "bars_1day")
SYMS = sorted(known_symbols())[:100]
BARSYM = "ZAAD"  # synthetic: nobody else writes its bars


@pytest.fixture
async def md_app(migrated: Settings, md_db: str, prefix: str) -> AsyncIterator[FastAPI]:
    app = create_app(migrated.model_copy(update={"redis_prefix": prefix}))
    async with app.router.lifespan_context(app):
        yield app
    engine = getattr(app.state, "marketdata_engine", None)
    if engine is not None:
        await engine.dispose()


@pytest.fixture
async def bar_ingest(migrated: Settings, md_db: str, prefix: str) -> AsyncIterator[Ingest]:
    assert migrated.redis_url
    engine = make_engine(md_db, pool_size=1, max_overflow=1)
    async with owner_engine(migrated, md_db) as owner, owner.begin() as conn:  # bars: the owner's
        for table in BAR_TABLES:
            await conn.execute(text(f"DELETE FROM {table} WHERE symbol = :s"), {"s": BARSYM})
    ing = Ingest(migrated.redis_url, prefix, known=known_symbols(), engine=engine, bar_flush_s=3600,
                 max_tick_age_s=3 * 86_400, bar_grace_s=0, max_jump=10)
    await ing.start()
    yield ing
    await ing.close()
    await engine.dispose()


def data_client(account: OpenedAccount, url: str):  # type: ignore[no-untyped-def]
    from alpaca.data.historical.stock import StockHistoricalDataClient

    return StockHistoricalDataClient(account.credentials.key_id, account.credentials.secret_key,
                                     url_override=url)


async def test_latest_for_100_symbols_and_snapshots(
        md_app: FastAPI, ingest: Ingest, account: OpenedAccount) -> None:
    from alpaca.data.requests import (
        StockLatestQuoteRequest,
        StockLatestTradeRequest,
        StockSnapshotRequest,
    )

    lines = []
    for i, s in enumerate(SYMS):
        px = 10 + i
        lines += [q(s, f"{px}.00", f"{px}.02"), tr(s, f"{px}.01", 5 + i, i=i)]
    await ingest.process(lines)
    await ingest.sync()
    async with served(md_app) as url:
        dc = data_client(account, url)
        quotes = await asyncio.to_thread(dc.get_stock_latest_quote,
                                         StockLatestQuoteRequest(symbol_or_symbols=SYMS))
        assert sorted(quotes) == SYMS
        assert [(quotes[s].bid_price, quotes[s].ask_price) for s in SYMS[:2]] == [
            (10.0, 10.02), (11.0, 11.02)]
        trades = await asyncio.to_thread(dc.get_stock_latest_trade,
                                         StockLatestTradeRequest(symbol_or_symbols=SYMS[:3]))
        assert {s: t.price for s, t in trades.items()} == {SYMS[0]: 10.01, SYMS[1]: 11.01, SYMS[2]: 12.01}
        snaps = await asyncio.to_thread(dc.get_stock_snapshot,
                                        StockSnapshotRequest(symbol_or_symbols=SYMS[:2]))
        assert sorted(snaps) == SYMS[:2]
        s0 = snaps[SYMS[0]]
        assert s0.latest_quote is not None and s0.latest_quote.bid_price == 10.0
        assert s0.latest_trade is not None and s0.latest_trade.price == 10.01
    headers = {"APCA-API-KEY-ID": account.credentials.key_id,
               "APCA-API-SECRET-KEY": account.credentials.secret_key}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app), base_url="http://t",
                                 headers=headers) as client:
        r = await client.get(f"/v2/stocks/{SYMS[0]}/snapshot")
        assert r.status_code == 200 and r.json()["symbol"] == SYMS[0]
        assert r.json()["latestQuote"]["bp"] == 10.0
        # a symbol with no data is left out of a multi-symbol answer
        r = await client.get("/v2/stocks/quotes/latest", params={"symbols": f"{SYMS[0]},ZZZZZ"})
        assert r.status_code == 200 and list(r.json()["quotes"]) == [SYMS[0]]
        for params in ({"symbols": ""}, {"symbols": "A$B"}, {"symbols": ",".join(["AAPL"] * 1001)}, {}):
            r = await client.get("/v2/stocks/quotes/latest", params=params)
            assert r.status_code == 422 and r.json()["reason"] == "invalid_symbols", params


async def test_bars_of_every_timeframe_from_the_database(
        md_app: FastAPI, bar_ingest: Ingest, account: OpenedAccount) -> None:
    from alpaca.data.requests import StockBarsRequest, StockSnapshotRequest
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    # trades over two New York days: yesterday (one trade) and the last 40 minutes
    now = time.time_ns()
    today = ny_midnight(now)
    y = ny_midnight(today - 3600 * 10**9)
    trades = [tr(BARSYM, "50.00", 10, t=y + 15 * 3600 * 10**9, i=1)]
    first = minute_start(now) - 40 * MINUTE_NS
    if first < today:
        pytest.skip("too close to midnight in New York")
    for k in range(40):
        trades.append(tr(BARSYM, f"{100 + k}.00", 1 + k, t=first + k * MINUTE_NS + 1, i=10 + k))
    for line in trades:
        await bar_ingest.process([line])
    await bar_ingest.flush_bars()
    await bar_ingest.flush_bars(final_all=True)
    headers = {"APCA-API-KEY-ID": account.credentials.key_id,
               "APCA-API-SECRET-KEY": account.credentials.secret_key}
    start = datetime.fromtimestamp(y / 1e9, UTC) - timedelta(days=1)
    async with served(md_app) as url:
        dc = data_client(account, url)
        day = await asyncio.to_thread(dc.get_stock_bars, StockBarsRequest(
            symbol_or_symbols=[BARSYM], timeframe=TimeFrame.Day, start=start))
        bars = day.data[BARSYM]
        assert [(b.open, b.close, b.volume) for b in bars] == [
            (50.0, 50.0, 10), (100.0, 139.0, sum(range(1, 41)))]
        assert bars[1].high == 139.0 and bars[1].low == 100.0 and bars[1].trade_count == 40
        assert bars[1].timestamp == datetime.fromtimestamp(today / 1e9, UTC)
        five = await asyncio.to_thread(dc.get_stock_bars, StockBarsRequest(
            symbol_or_symbols=BARSYM, timeframe=TimeFrame(5, TimeFrameUnit.Minute),
            start=datetime.fromtimestamp((first - first % (5 * MINUTE_NS)) / 1e9, UTC)))
        fb = five.data[BARSYM]
        assert sum(b.volume for b in fb) == sum(range(1, 41)) and sum(b.trade_count for b in fb) == 40
        assert all(b.timestamp.minute % 5 == 0 for b in fb)
        assert fb[0].open == 100.0 and fb[-1].close == 139.0
        snap = (await asyncio.to_thread(dc.get_stock_snapshot,
                                        StockSnapshotRequest(symbol_or_symbols=BARSYM)))[BARSYM]
        assert snap.daily_bar is not None and snap.daily_bar.close == 139.0
        assert snap.previous_daily_bar is not None and snap.previous_daily_bar.close == 50.0
        assert snap.minute_bar is not None and snap.minute_bar.close == 139.0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app), base_url="http://t",
                                 headers=headers) as client:
        s = start.isoformat().replace("+00:00", "Z")
        # every timeframe's bars add up to the same volume; 1Hour buckets are whole hours
        for tf in ("1Min", "5Min", "15Min", "1Hour", "1Day", "1T", "1H", "1D"):
            r = await client.get("/v2/stocks/bars", params={"symbols": BARSYM, "timeframe": tf, "start": s})
            assert r.status_code == 200, (tf, r.text)
            assert sum(b["v"] for b in r.json()["bars"][BARSYM]) == 10 + sum(range(1, 41)), tf
        # sort=desc, limit and page_token walk the same bars backwards, no repeats
        seen: list[str] = []
        token = None
        while True:
            params = {"timeframe": "1Min", "start": s, "sort": "desc", "limit": 7}
            if token:
                params["page_token"] = token
            r = await client.get(f"/v2/stocks/{BARSYM}/bars", params=params)
            assert r.status_code == 200, r.text
            seen += [b["t"] for b in r.json()["bars"]]
            token = r.json()["next_page_token"]
            if not token:
                break
        assert len(seen) == 41 and seen == sorted(seen, reverse=True)
        r = await client.get("/v2/stocks/bars/latest", params={"symbols": BARSYM})
        assert r.status_code == 200 and r.json()["bars"][BARSYM]["c"] == 139.0
        # a date (not a time) works; bad input is 422 with a code
        r = await client.get("/v2/stocks/bars", params={"symbols": BARSYM, "timeframe": "1Day",
                                                        "start": start.date().isoformat()})
        assert r.status_code == 200 and len(r.json()["bars"][BARSYM]) == 2
        for params, reason in [({"timeframe": "2Day"}, "invalid_timeframe"),
                               ({"timeframe": "1Min", "start": "yesterday"}, "invalid_time"),
                               ({"timeframe": "1Min", "end": "2026-02-30"}, "invalid_time"),
                               ({"timeframe": "1Min", "sort": "up"}, "invalid_request"),
                               ({"timeframe": "1Min", "page_token": "!!"}, "invalid_page_token"),
                               ({"timeframe": "1Min", "limit": 0}, "invalid_request")]:
            r = await client.get("/v2/stocks/bars", params={"symbols": BARSYM, **params})
            assert r.status_code == 422 and r.json()["reason"] == reason, (params, r.text)


async def test_historical_trades_paged_and_kept_for_the_retention(
        md_app: FastAPI, bar_ingest: Ingest, account: OpenedAccount) -> None:
    from alpaca.data.requests import StockTradesRequest

    sym = "ZAAE"
    assert bar_ingest.engine is not None
    async with bar_ingest.engine.begin() as conn:  # the service's retention may delete trades
        await conn.execute(text("DELETE FROM trades WHERE symbol = :s"), {"s": sym})
    now = time.time_ns()
    old = now - 2 * 86_400 * 10**9  # two days ago
    lines = [tr(sym, "20.00", 1, t=old, i=1)]
    lines += [tr(sym, f"{21 + k}.00", 2 + k, t=now - (10 - k) * 10**9, i=2 + k) for k in range(5)]
    for line in lines:
        await bar_ingest.process([line])
    await bar_ingest.flush_bars()
    start = datetime.fromtimestamp(old / 1e9, UTC) - timedelta(hours=1)
    async with served(md_app) as url:
        dc = data_client(account, url)
        got = await asyncio.to_thread(dc.get_stock_trades, StockTradesRequest(
            symbol_or_symbols=sym, start=start))
        assert [(t.price, t.size, t.id) for t in got.data[sym]] == [
            (20.0, 1, 1), (21.0, 2, 2), (22.0, 3, 3), (23.0, 4, 4), (24.0, 5, 5), (25.0, 6, 6)]
    headers = {"APCA-API-KEY-ID": account.credentials.key_id,
               "APCA-API-SECRET-KEY": account.credentials.secret_key}
    s = start.isoformat().replace("+00:00", "Z")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app), base_url="http://t",
                                 headers=headers) as client:
        ids: list[int] = []
        token = None
        while True:
            params = {"start": s, "limit": 4, "sort": "desc", **({"page_token": token} if token else {})}
            r = await client.get(f"/v2/stocks/{sym}/trades", params=params)
            assert r.status_code == 200, r.text
            ids += [t["i"] for t in r.json()["trades"]]
            if not (token := r.json()["next_page_token"]):
                break
        assert ids == [6, 5, 4, 3, 2, 1]
        r = await client.get(f"/v2/stocks/{sym}/trades", params={"start": s, "page_token": "WyJhIl0="})
        assert r.status_code == 422 and r.json()["reason"] == "invalid_page_token"
        # the retention: a day kept -> the trade of two days ago goes, the others stay
        bar_ingest.trade_retention_ns = 86_400 * 10**9
        assert await bar_ingest.sweep_trades() >= 1
        r = await client.get("/v2/stocks/trades", params={"symbols": sym, "start": s})
        assert [t["i"] for t in r.json()["trades"][sym]] == [2, 3, 4, 5, 6]
