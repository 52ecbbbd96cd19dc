"""The stream's channels through alpaca-py's StockDataStream (msgpack, every channel in one
subscribe message): a channel the server lacks does not refuse the ones it has; dailyBars,
updatedBars and statuses (from the feed and from operations) arrive as alpaca-py models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alpaca.data.live.stock import StockDataStream
from alpaca.data.models import Bar, Quote, TradingStatus
from redis.asyncio import Redis
from sqlalchemy import text

from db.accounts import OpenedAccount
from db.controls import ControlsStore
from db.engines import make_engine
from db.router import ShardRouter
from domain.universe import known_symbols
from marketdata.bars import MINUTE_NS, minute_start
from marketdata.ingest import Ingest
from sherwood.settings import Settings
from tests.marketdata.conftest import FanoutFactory, authed_client
from tests.marketdata.helpers import q, tr
from tests.owner import owner_engine

SYM = "ZAAC"  # synthetic: nobody else writes its bars


class Got:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.event = asyncio.Event()

    def handler(self, kind: str) -> Any:
        async def _h(x: Any) -> None:
            self.items.append((kind, x))
            self.event.set()
        return _h

    async def until(self, kind: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            got = [x for k, x in self.items if k == kind]
            if len(got) >= n:
                return got
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), max(0.01, end - loop.time()))


@pytest.fixture
async def bar_ingest(migrated: Settings, md_db: str, prefix: str) -> AsyncIterator[Ingest]:
    assert migrated.redis_url
    engine = make_engine(md_db, pool_size=1, max_overflow=1)
    async with owner_engine(migrated, md_db) as owner, owner.begin() as conn:  # bars: the owner's
        for table in ("bars_1min", "bars_5min", "bars_15min", "bars_1hour", "bars_1day"):
            await conn.execute(text(f"DELETE FROM {table} WHERE symbol = :s"), {"s": SYM})
    ing = Ingest(migrated.redis_url, prefix, known=known_symbols(), engine=engine, bar_flush_s=3600,
                 max_tick_age_s=400, bar_grace_s=0, max_jump=10)
    await ing.start()
    yield ing
    await ing.close()
    await engine.dispose()


async def test_alpaca_py_gets_quotes_bars_daily_updated_and_statuses_from_one_subscribe(
        make_fanout: FanoutFactory, account: OpenedAccount, bar_ingest: Ingest, router: ShardRouter,
        redis: Redis, prefix: str) -> None:
    srv = await make_fanout()
    got = Got()
    stream = StockDataStream(account.credentials.key_id, account.credentials.secret_key,
                             url_override=f"ws://127.0.0.1:{srv.port}/v2/iex")
    stream.subscribe_quotes(got.handler("q"), SYM)
    stream.subscribe_bars(got.handler("b"), SYM)
    stream.subscribe_daily_bars(got.handler("d"), SYM)
    stream.subscribe_updated_bars(got.handler("u"), SYM)
    stream.subscribe_trading_statuses(got.handler("s"), SYM)
    task = asyncio.create_task(stream._run_forever())
    try:
        # the subscription is live once the server echoes it: wait for the fan-out to hold it
        for _ in range(500):
            if any(SYM in c.subs["quotes"] for c in srv.conns):
                break
            await asyncio.sleep(0.01)
        (conn,) = srv.conns
        assert {k for k, v in conn.subs.items() if SYM in v} == {
            "quotes", "bars", "dailyBars", "updatedBars", "statuses"}

        # a minute that has ended: its bar, then the day so far; a trade after the bar went out
        # (in order, the feed was slow) updates it
        minute = minute_start(time.time_ns()) - 2 * MINUTE_NS
        await bar_ingest.process([tr(SYM, "10.01", 100, t=minute + 1, i=1),
                                  tr(SYM, "10.05", 50, t=minute + 2, i=2)])
        await bar_ingest.flush_bars()
        (bar,) = await got.until("b")
        assert isinstance(bar, Bar) and (bar.open, bar.high, bar.close, bar.volume) == (
            10.01, 10.05, 10.05, 150)
        (day,) = await got.until("d")
        assert isinstance(day, Bar) and day.volume == 150 and day.trade_count == 2
        assert day.timestamp.hour in (4, 5) and day.timestamp.minute == 0  # midnight New York
        await bar_ingest.process([tr(SYM, "9.99", 10, t=minute + 3, i=3)])  # late, same minute
        await bar_ingest.flush_bars()
        (upd,) = await got.until("u")
        assert isinstance(upd, Bar) and (upd.low, upd.close, upd.volume, upd.trade_count) == (
            9.99, 9.99, 160, 3)
        days = await got.until("d", 2)
        assert days[1].volume == 160 and days[1].close == 9.99
        assert bar_ingest.dropped["stale"] == 0
        async with bar_ingest.engine.connect() as c:  # type: ignore[union-attr]
            v = (await c.execute(text("SELECT v FROM bars_1min WHERE symbol = :s"), {"s": SYM})).scalar()
        assert v == 160

        # (a tick of now: later trades for that minute would be out of order)
        await bar_ingest.process([q(SYM, "10.00", "10.02")])
        (quote,) = await got.until("q")
        assert isinstance(quote, Quote) and quote.bid_price == 10.00

        # statuses: a halt from the feed, then a halt and a resumption by operations
        await bar_ingest.process([f"H,{SYM},{time.time_ns()},T1".encode()])
        (halt,) = await got.until("s")
        assert isinstance(halt, TradingStatus) and halt.status_code == "H"
        await bar_ingest.process([f"R,{SYM},{time.time_ns()},T2".encode()])
        await got.until("s", 2)
        controls = ControlsStore(router.directory, redis, prefix)
        await controls.set(SYM, actor="test", halted=True, reason="operations halt")
        ops = (await got.until("s", 3))[2]
        assert (ops.status_code, ops.reason_message) == ("H", "operations halt")
        await controls.set(SYM, actor="test", halted=False, reason="resumed")
        assert (await got.until("s", 4))[3].status_code == "T"
        await controls.set(SYM, actor="test", restriction="close_only", reason="")
        await controls.set(SYM, actor="test", restriction=None, reason="")
        await bar_ingest.process([f"H,{SYM},{time.time_ns()},T1".encode()])
        statuses = await got.until("s", 5)  # the restriction changes were no trading status
        assert statuses[4].reason_code == "T1"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await stream.close()


async def test_unsupported_channels_do_not_refuse_the_others(
        make_fanout: FanoutFactory, account: OpenedAccount) -> None:
    srv = await make_fanout()
    c = await authed_client(srv, account)
    sub = await c.request({"action": "subscribe", "quotes": ["AAPL"], "lulds": ["AAPL"],
                           "dailyBars": ["AAPL"], "corrections": ["AAPL"]})
    assert sub == [{"T": "subscription", "trades": [], "quotes": ["AAPL"], "bars": [],
                    "updatedBars": [], "dailyBars": ["AAPL"], "statuses": [], "lulds": [],
                    "corrections": [], "cancelErrors": []}]
    # only channels this feed lacks: refused, as before
    assert (await c.request({"action": "subscribe", "lulds": ["AAPL"]}))[0]["code"] == 410
    sub = await c.request({"action": "unsubscribe", "dailyBars": ["AAPL"], "lulds": ["AAPL"]})
    assert sub[0]["dailyBars"] == [] and sub[0]["quotes"] == ["AAPL"]
    await c.ws.close()
