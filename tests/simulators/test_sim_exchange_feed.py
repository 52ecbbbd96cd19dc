"""Exchange feed simulator: its ticks pass ingest's validation, it paces itself, replays CSV,
halts/resumes, and reaches ingest over the TCP line protocol."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from domain.universe import MAX_UNIVERSE, known_symbols, universe
from marketdata.ingest import Ingest
from sherwood.embedded import free_port
from sherwood.settings import Settings
from simulators.exchange_feed import ExchangeFeed, FeedConfig, TcpSink, run_replay


def test_universe_is_deterministic_and_up_to_10000() -> None:
    u = universe(MAX_UNIVERSE)
    assert len(u) == 10_000 and len({x.symbol for x in u}) == 10_000
    assert u[0].symbol == "AAPL" and universe(MAX_UNIVERSE) == u
    assert all(x.ref_price > 0 for x in u)


async def test_feed_ticks_are_valid_hot_symbols_and_halts(migrated: Settings) -> None:
    assert migrated.redis_url
    ing = Ingest(migrated.redis_url, f"{migrated.redis_prefix}:feed1", known=known_symbols())
    await ing.start()
    try:
        feed = ExchangeFeed(FeedConfig(symbols=10_000, hot=3, hot_share=0.5, halt_every_s=0.001,
                                       halt_for_s=0.0))
        lines = feed.lines(20_000)
        await asyncio.sleep(0.002)
        lines += feed.lines(10)
        await ing.process(lines)
        assert sum(ing.dropped.values()) == ing.dropped["halted"], ing.dropped
        assert ing.accepted["quotes"] > 15_000 and ing.accepted["trades"] > 1_000
        assert ing.accepted["statuses"] >= 1
        hot = sum(1 for x in lines if x.split(b",")[1] in (b"AAPL", b"MSFT", b"GOOGL"))
        assert hot > 0.45 * len(lines)
    finally:
        await ing.close()


async def test_rate_tcp_transport_and_csv_replay(migrated: Settings, tmp_path: Path) -> None:
    assert migrated.redis_url
    ing = Ingest(migrated.redis_url, f"{migrated.redis_prefix}:feed2", known=known_symbols())
    await ing.start()
    port = free_port()
    await ing.serve_tcp("127.0.0.1", port)
    sink = TcpSink("127.0.0.1", port)
    try:
        stop = asyncio.Event()
        t0 = time.monotonic()
        sent = await ExchangeFeed(FeedConfig(rate=5000)).run(sink, stop, duration_s=1.0)
        assert 3500 <= sent <= 5600, sent
        assert time.monotonic() - t0 < 1.5
        csv = tmp_path / "ticks.csv"
        csv.write_text("type,symbol,bid,bid_size,ask,ask_size,price,size\n"
                       "q,AAPL,187.10,3,187.12,4,,\n"
                       "t,AAPL,,,,,187.11,100\n"
                       "h,AMC,,,,,,\n"
                       "q,AAPL,187.12,3,187.10,4,,\n"  # crossed: dropped by ingest
                       "r,AMC,,,,,,\n")
        before = dict(ing.accepted)
        assert await run_replay(csv, sink) == 5
        for _ in range(100):
            if ing.accepted["statuses"] - before["statuses"] == 2:
                break
            await asyncio.sleep(0.02)
        assert ing.accepted["statuses"] - before["statuses"] == 2
        assert ing.dropped["crossed"] == 1
        assert ing.accepted["quotes"] + ing.accepted["trades"] >= sent * 0.99
    finally:
        await sink.aclose()
        await ing.close()
