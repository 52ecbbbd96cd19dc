"""The simulated market maker over real loopback FIX (fix.session initiator against MarketMaker)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplefix

from fix.session import FixInitiator, FixSession, SessionConfig
from fix.store import MemorySessionStore
from sherwood.embedded import free_port
from simulators.market_maker import MarketMaker, MarketMakerConfig, parse_slices, parse_symbols
from simulators.quote_sources import RandomWalkQuoteSource, RedisQuoteSource

D = Decimal
REPO = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)


def txt(msg: simplefix.FixMessage, tag: int) -> str | None:
    value = msg.get(tag)
    return None if value is None else value.decode()


class Broker:
    """A minimal broker side: a FixInitiator that records every application message."""

    def __init__(self, port: int, venue: str = "MM1") -> None:
        self.msgs: list[simplefix.FixMessage] = []
        self._changed = asyncio.Event()
        self.store = MemorySessionStore()
        cfg = SessionConfig("SHERWOOD", venue, heartbeat_interval=1.0,
                            reconnect_min_delay=0.05, reconnect_max_delay=0.2)
        self.initiator = FixInitiator(cfg, self.store, "127.0.0.1", port, self._on_message)
        self.logons = 0

    @property
    def session(self) -> FixSession:
        return self.initiator.session

    async def _on_message(self, session: FixSession, msg: simplefix.FixMessage) -> None:
        self.msgs.append(msg)
        self._changed.set()

    async def start(self) -> None:
        await self.initiator.start()
        await self.session.wait_logged_on(5)

    async def stop(self) -> None:
        await self.initiator.stop()

    def reports(self, cl: str | None = None) -> list[simplefix.FixMessage]:
        return [m for m in self.msgs if cl is None or txt(m, 11) == cl or txt(m, 41) == cl]

    async def wait_for(
        self, pred: Callable[[list[simplefix.FixMessage]], bool], within: float = 5.0
    ) -> list[simplefix.FixMessage]:
        async with asyncio.timeout(within):
            while not pred(self.msgs):
                self._changed.clear()
                await self._changed.wait()
        return self.msgs

    async def order(
        self, qty: int | str, side: str = "1", ord_type: str = "1", symbol: str = "AAPL",
        price: str | None = None, tif: str | None = None, cl: str | None = None,
    ) -> str:
        cl = cl or f"ord-{next(_ids)}"
        msg = simplefix.FixMessage()
        msg.append_pair(35, "D")
        msg.append_pair(11, cl)
        msg.append_pair(55, symbol)
        msg.append_pair(54, side)
        msg.append_utc_timestamp(60)
        msg.append_pair(38, str(qty))
        msg.append_pair(40, ord_type)
        if price is not None:
            msg.append_pair(44, price)
        if tif is not None:
            msg.append_pair(59, tif)
        await self.session.send(msg)
        return cl

    async def cancel(self, orig: str, symbol: str = "AAPL", side: str = "1") -> str:
        cl = f"cxl-{next(_ids)}"
        msg = simplefix.FixMessage()
        msg.append_pair(35, "F")
        msg.append_pair(41, orig)
        msg.append_pair(11, cl)
        msg.append_pair(55, symbol)
        msg.append_pair(54, side)
        msg.append_utc_timestamp(60)
        await self.session.send(msg)
        return cl

    async def replace(self, orig: str, qty: int, price: str, side: str = "1") -> str:
        cl = f"rpl-{next(_ids)}"
        msg = simplefix.FixMessage()
        for tag, value in ((35, "G"), (41, orig), (11, cl), (54, side), (55, "AAPL"),
                           (38, str(qty)), (40, "2"), (44, price)):
            msg.append_pair(tag, value)
        msg.append_utc_timestamp(60)
        await self.session.send(msg)
        return cl

    async def status(self, cl: str, symbol: str = "AAPL", side: str = "1") -> None:
        msg = simplefix.FixMessage()
        msg.append_pair(35, "H")
        msg.append_pair(11, cl)
        msg.append_pair(55, symbol)
        msg.append_pair(54, side)
        await self.session.send(msg)


def done(cl: str) -> Callable[[list[simplefix.FixMessage]], bool]:
    return lambda msgs: any(txt(m, 11) == cl and txt(m, 39) in ("2", "4", "8", "C")
                            and txt(m, 150) != "I" for m in msgs)


@contextlib.asynccontextmanager
async def venue(
    clock: Callable[[], float] = time.monotonic, **overrides: Any
) -> AsyncIterator[tuple[MarketMaker, Broker]]:
    overrides.setdefault("port", 0)
    overrides.setdefault("heartbeat_interval", 1.0)
    overrides.setdefault("tick_interval", 0.05)
    mm = MarketMaker(MarketMakerConfig(**overrides), quote_source=RandomWalkQuoteSource(1),
                     clock=clock)
    await mm.start()
    mm.set_quote("AAPL", "187.10", "187.12")
    broker = Broker(mm.port, overrides.get("sender_comp_id", "MM1"))
    try:
        await broker.start()
        yield mm, broker
    finally:
        await broker.stop()
        await mm.stop()


async def test_market_buy_filled_with_price_improvement() -> None:
    async with venue(price_improvement_bps=D(1)) as (_, broker):
        cl = await broker.order(100)
        msgs = [m for m in await broker.wait_for(done(cl)) if txt(m, 11) == cl]
        assert [(txt(m, 35), txt(m, 150), txt(m, 39)) for m in msgs] == [
            ("8", "0", "0"), ("8", "F", "2")]
        fill = msgs[1]
        assert txt(fill, 31) == "187.1013" and txt(fill, 32) == "100"
        assert (txt(fill, 14), txt(fill, 151), txt(fill, 6)) == ("100", "0", "187.1013")
        assert txt(fill, 17) != txt(msgs[0], 17) and txt(fill, 37) == txt(msgs[0], 37)
        assert txt(fill, 17).startswith("MM1-")  # type: ignore[union-attr]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cum(cl: str, qty: str) -> Callable[[list[simplefix.FixMessage]], bool]:
    return lambda msgs: any(txt(m, 11) == cl and txt(m, 14) == qty for m in msgs)


async def test_1000_shares_fill_as_400_300_300() -> None:
    clock = FakeClock()  # the venue's notion of time: slices fall due only when we say so
    async with venue(clock, fill_slices=(400, 300, 300), fill_delay=0.5) as (mm, broker):
        cl = await broker.order(1000, ord_type="2", price="190.00")
        await broker.wait_for(cum(cl, "400"))
        mm.set_quote("AAPL", "187.20", "187.22")  # the later slices fill at the new ask
        await asyncio.sleep(0.1)
        assert not cum(cl, "700")(broker.msgs)  # the next slice is not due yet
        clock.now = 1.0
        await broker.wait_for(cum(cl, "700"))
        await asyncio.sleep(0.1)
        assert not cum(cl, "1000")(broker.msgs)
        clock.now = 2.0
        msgs = [m for m in await broker.wait_for(done(cl)) if txt(m, 150) == "F"]
        assert [(txt(m, 32), txt(m, 14), txt(m, 151), txt(m, 39)) for m in msgs] == [
            ("400", "400", "600", "1"), ("300", "700", "300", "1"), ("300", "1000", "0", "2")]
        assert [txt(m, 31) for m in msgs] == ["187.12", "187.22", "187.22"]
        assert txt(msgs[-1], 6) == "187.18"  # (400*187.12 + 600*187.22) / 1000


async def test_cancel_status_and_rejects_over_fix() -> None:
    async with venue() as (mm, broker):
        rest = await broker.order(10, ord_type="2", price="150.00", tif="1")
        await broker.wait_for(lambda ms: any(txt(m, 11) == rest for m in ms))
        await broker.status(rest)
        await broker.wait_for(lambda ms: any(txt(m, 150) == "I" for m in ms))
        st = next(m for m in broker.msgs if txt(m, 150) == "I")
        assert (txt(st, 39), txt(st, 14), txt(st, 151)) == ("0", "0", "10")

        cxl = await broker.cancel(rest)
        await broker.wait_for(done(cxl))
        canceled = broker.reports(cxl)[-1]
        assert (txt(canceled, 150), txt(canceled, 39), txt(canceled, 41)) == ("4", "4", rest)
        assert txt(canceled, 151) == "0"

        unknown = await broker.cancel("never-sent")
        rej = (await broker.wait_for(lambda ms: any(txt(m, 35) == "9" for m in ms)))[-1]
        assert (txt(rej, 11), txt(rej, 37), txt(rej, 434), txt(rej, 102)) == (
            unknown, "NONE", "1", "1")

        mm.halt("AAPL")
        halted = await broker.order(5)
        await broker.wait_for(done(halted))
        r = broker.reports(halted)[-1]
        assert (txt(r, 150), txt(r, 39), txt(r, 103)) == ("8", "8", "2")
        assert "halted" in (txt(r, 58) or "")

        # a retry of a known ClOrdID never creates a second order
        await broker.order(5, cl=halted)
        await broker.wait_for(lambda ms: len(broker.reports(halted)) == 2)
        dup = broker.reports(halted)[-1]
        assert (txt(dup, 150), txt(dup, 39), txt(dup, 58)) == ("I", "8", "duplicate ClOrdID")

        await broker.status("nope")
        await broker.wait_for(lambda ms: any(txt(m, 11) == "nope" for m in ms))
        r = broker.reports("nope")[-1]
        assert (txt(r, 150), txt(r, 39), txt(r, 58)) == ("I", "8", "unknown order")


async def test_cancel_replace_over_fix() -> None:
    async with venue() as (_, broker):
        rest = await broker.order(10, ord_type="2", price="150.00", tif="1")
        await broker.wait_for(lambda ms: any(txt(m, 11) == rest for m in ms))
        new = await broker.replace(rest, 20, "151.00")
        await broker.wait_for(lambda ms: any(txt(m, 11) == new for m in ms))
        r = broker.reports(new)[-1]
        assert (txt(r, 35), txt(r, 150), txt(r, 39), txt(r, 41)) == ("8", "5", "0", rest)
        assert (txt(r, 38), txt(r, 44), txt(r, 151), txt(r, 14)) == ("20", "151", "20", "0")
        again = await broker.replace(rest, 30, "152.00")  # the old ClOrdID: too late
        await broker.wait_for(lambda ms: any(txt(m, 11) == again for m in ms))
        rej = broker.reports(again)[-1]
        assert (txt(rej, 35), txt(rej, 434), txt(rej, 102), txt(rej, 41)) == ("9", "2", "0", rest)
        filled = await broker.replace(new, 20, "187.12")  # marketable: fills at once
        await broker.wait_for(done(filled))
        assert [txt(m, 150) for m in broker.reports(filled)] == ["5", "F"]


async def test_day_orders_expire_at_close() -> None:
    async with venue() as (mm, broker):
        cl = await broker.order(10, ord_type="2", price="150.00")
        await broker.wait_for(lambda ms: any(txt(m, 11) == cl for m in ms))
        mm.expire_day_orders()
        await broker.wait_for(done(cl))
        assert txt(broker.reports(cl)[-1], 150) == "C"


async def test_fault_duplicate_reports_same_exec_id_twice() -> None:
    async with venue(duplicate_reports=True) as (_, broker):
        cl = await broker.order(100)
        await broker.wait_for(lambda ms: sum(txt(m, 150) == "F" for m in ms) == 2)
        fills = [m for m in broker.msgs if txt(m, 150) == "F"]
        assert txt(fills[0], 17) == txt(fills[1], 17)
        assert txt(fills[0], 34) != txt(fills[1], 34)
        assert len(broker.reports(cl)) == 4


async def test_fault_possresend_old_report() -> None:
    async with venue(possresend_old=True, fill_slices=(50,)) as (_, broker):
        await broker.order(100)
        await broker.wait_for(lambda ms: sum(txt(m, 97) == "Y" for m in ms) >= 2)
        seen: set[str] = set()
        for m in broker.msgs:
            exec_id = txt(m, 17)
            assert exec_id is not None
            if txt(m, 97) == "Y":
                assert exec_id in seen  # an old report, re-sent under a new MsgSeqNum
            seen.add(exec_id)


async def test_fault_never_ack_sends_nothing() -> None:
    async with venue(never_ack=True) as (_, broker):
        cl = await broker.order(100)
        await broker.status(cl)
        with pytest.raises(TimeoutError):
            await broker.wait_for(lambda ms: len(ms) > 0, within=0.8)
        assert broker.session.logged_on.is_set()


async def test_fault_latency_delays_reports() -> None:
    async with venue(latency=0.3) as (_, broker):
        t0 = time.monotonic()
        cl = await broker.order(100)
        await broker.wait_for(lambda ms: any(txt(m, 11) == cl for m in ms))
        assert time.monotonic() - t0 >= 0.3


async def test_fault_drop_connection_after_ack_reports_still_arrive() -> None:
    async with venue(drop_connection_after_ack=True, fill_delay=0.2, fill_slices=(60,)) as (
            _, broker):
        cl = await broker.order(100)
        await broker.wait_for(done(cl), within=10)
        reports = broker.reports(cl)
        exec_ids = [txt(m, 17) for m in reports]
        assert {txt(m, 150) for m in reports} >= {"0", "F"}
        assert len(set(exec_ids)) == len(exec_ids) == 3  # ack, 60, 40 - each once
        assert [txt(m, 14) for m in reports if txt(m, 150) == "F"] == ["60", "100"]
        assert any(txt(m, 43) == "Y" for m in reports)  # recovered through a ResendRequest
        assert broker.session.logged_on.is_set()
        # later orders are unaffected (the drop happens once)
        cl2 = await broker.order(10)
        await broker.wait_for(done(cl2))


async def test_fault_skip_seq_recovered_by_resend_request() -> None:
    async with venue(skip_seq=True, skip_seq_every=2) as (mm, broker):
        orders = [await broker.order(10) for _ in range(4)]
        await broker.wait_for(lambda ms: all(done(cl)(ms) for cl in orders), within=10)
        await asyncio.sleep(0.2)
        assert len(mm.seqs_skipped) >= 3
        exec_ids = [txt(m, 17) for m in broker.msgs]
        assert len(exec_ids) == len(set(exec_ids)) == 8  # ack + fill per order, each once
        seqs = [int(txt(m, 34) or 0) for m in broker.msgs]
        assert not set(seqs) & set(mm.seqs_skipped)
        assert broker.store.next_target_seq() == mm.store.next_sender_seq()


async def test_two_venues_side_by_side() -> None:
    async with venue(sender_comp_id="MM1") as (_, b1), venue(sender_comp_id="MM2") as (_, b2):
        c1, c2 = await b1.order(10), await b2.order(20)
        m1 = await b1.wait_for(done(c1))
        m2 = await b2.wait_for(done(c2))
        assert txt(m1[-1], 17).startswith("MM1-")  # type: ignore[union-attr]
        assert txt(m2[-1], 17).startswith("MM2-")  # type: ignore[union-attr]


async def test_sqlite_store_keeps_sequences_across_restart(tmp_path: Path) -> None:
    broker_store = MemorySessionStore()
    for round_ in range(2):
        mm = MarketMaker(MarketMakerConfig(port=0, data_dir=tmp_path, heartbeat_interval=1.0))
        await mm.start()
        try:
            broker = Broker(mm.port)
            broker.store = broker_store
            broker.initiator = FixInitiator(broker.session.config, broker_store, "127.0.0.1",
                                            mm.port, broker._on_message)
            await broker.start()
            cl = await broker.order(10)
            await broker.wait_for(done(cl))
            await broker.stop()
        finally:
            await mm.stop()
        if round_ == 0:
            first_seq = broker_store.next_target_seq()
    assert broker_store.next_target_seq() > first_seq > 3
    assert list(tmp_path.glob("*.sqlite"))


async def test_redis_quotes_and_halts_then_fallback(redis_url: str) -> None:
    """Quotes and halts from the real test Redis (shared fixture), under test-unique keys."""
    from redis.asyncio import Redis

    quotes_key, halts_key = f"simtest:{uuid.uuid4().hex}:quotes", f"simtest:{uuid.uuid4().hex}:halts"
    admin = Redis.from_url(redis_url)
    try:
        await admin.hset(quotes_key, "AAPL", '{"S":"AAPL","bp":"187.10","bs":3,"ap":"187.12",'
                                             '"as":2,"t":"2026-11-25T15:00:00Z"}')
        await admin.hset(quotes_key, "BAD", "not json")
        await admin.sadd(halts_key, "GME")
        src = RedisQuoteSource(redis_url, quotes_key, halts_key=halts_key,
                               fallback=RandomWalkQuoteSource(0))
        q = await src.get_quote("AAPL")
        assert q is not None and (q.bid, q.ask) == (D("187.10"), D("187.12"))
        msft = await src.get_quote("MSFT")  # not in redis: the random walk answers
        assert msft is not None and msft.bid > 0
        assert await src.get_quote("BAD") is None
        assert await src.halted_symbols() == {"GME"}

        mm = MarketMaker(MarketMakerConfig(port=0, redis_url=redis_url, heartbeat_interval=1.0,
                                           quotes_key=quotes_key, halts_key=halts_key),
                         quote_source=src)
        await mm.start()
        broker = Broker(mm.port)
        try:
            await broker.start()
            buy, gme = await broker.order(10), await broker.order(10, symbol="GME")
            await broker.wait_for(lambda ms: done(buy)(ms) and done(gme)(ms))
            assert txt(broker.reports(buy)[-1], 31) == "187.12"
            assert txt(broker.reports(gme)[-1], 58) == "halted: GME"
            await admin.srem(halts_key, "GME")  # a resumed symbol trades again
            gme2 = await broker.order(10, symbol="GME")
            await broker.wait_for(done(gme2))
            assert txt(broker.reports(gme2)[-1], 39) == "2"
        finally:
            await broker.stop()
            await mm.stop()
    finally:
        await admin.delete(quotes_key, halts_key)
        await admin.aclose()
    dead = RedisQuoteSource("redis://127.0.0.1:1", fallback=RandomWalkQuoteSource(0),
                            timeout=0.2)
    t0 = time.monotonic()
    assert await dead.get_quote("AAPL") is not None
    assert await dead.halted_symbols() == set()
    assert await dead.get_quote("ZZZZ") is None
    assert time.monotonic() - t0 < 1.0
    await dead.close()


def test_random_walk_stays_on_tick_and_positive() -> None:
    walk = RandomWalkQuoteSource(7, ref_prices={"AAPL": D("187.50"), "SIRI": D("0.0150")})
    for _ in range(500):
        walk.advance()
    for sym in ("AAPL", "SIRI"):
        q = walk.quote_now(sym)
        assert q is not None and D(0) < q.bid < q.ask
        assert q.bid == q.bid.quantize(D("0.0001"))
    assert walk.quote_now("NOPE") is None
    again = RandomWalkQuoteSource(7, ref_prices={"AAPL": D("187.50"), "SIRI": D("0.0150")})
    for _ in range(500):
        again.advance()
    assert again.quote_now("AAPL") == walk.quote_now("AAPL")


def test_cli_parsers() -> None:
    assert parse_slices("400,300,300") == (400, 300, 300)
    assert parse_slices("") == ()
    with pytest.raises(ValueError):
        parse_slices("400,-1")
    assert parse_symbols("gme, AMC,") == frozenset({"GME", "AMC"})


async def test_cli_market_maker_process_trades() -> None:
    port = free_port()
    code = "import sys; from simulators.cli import sim_app; sys.exit(sim_app())"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "market-maker", "--port", str(port),
        "--sender-comp-id", "MM9", "--target-comp-id", "SHERWOOD", "--heartbeat", "1",
        "--fill-slices", "60", "--price-improvement-bps", "1", "--halted", "GME,AMC",
        "--day-close", "16:00",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    broker = Broker(port, "MM9")
    try:
        await broker.initiator.start()
        await broker.session.wait_logged_on(10)
        cl, gme = await broker.order(100), await broker.order(1, symbol="GME")
        await broker.wait_for(lambda ms: done(cl)(ms) and done(gme)(ms))
        assert [txt(m, 32) for m in broker.reports(cl) if txt(m, 150) == "F"] == ["60", "40"]
        assert txt(broker.reports(gme)[-1], 150) == "8"
    finally:
        await broker.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
