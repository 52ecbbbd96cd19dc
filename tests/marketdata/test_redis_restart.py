"""Kill Redis during a run: the fan-out reconnects with backoff, resubscribes and resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from db.accounts import OpenedAccount
from domain.universe import known_symbols
from marketdata.ingest import Ingest
from sherwood.embedded import EmbeddedRedis, free_port
from tests.marketdata.conftest import FanoutFactory, authed_client
from tests.marketdata.helpers import tr


async def test_fanout_and_ingest_survive_a_redis_restart(
        make_fanout: FanoutFactory, account: OpenedAccount, prefix: str, tmp_path: Path) -> None:
    rd = EmbeddedRedis(tmp_path / "redis", port=free_port())
    url = await asyncio.to_thread(rd.start)
    ing = Ingest(url, prefix, known=known_symbols())
    try:
        await ing.start()
        srv = await make_fanout(redis_url=url)
        c = await authed_client(srv, account)
        await c.request({"action": "subscribe", "trades": ["AAPL"]})
        await ing.process([tr("AAPL", "187.10", i=1)])
        first = await c.until(lambda m: m.get("T") == "t")
        await asyncio.to_thread(rd.stop)
        await ing.process([tr("AAPL", "187.11", i=2)])  # Redis down: dropped, counted
        await asyncio.sleep(0.3)
        assert ing.dropped["redis_unavailable"] >= 1
        await asyncio.to_thread(rd.start)
        # ingest reconnects with backoff; the fan-out resubscribes: data flows again
        got = None
        for i in range(100):
            await ing.process([tr("AAPL", f"187.{12 + i % 80:02d}", i=3 + i)])
            try:
                got = await c.until(lambda m: m.get("T") == "t", timeout=0.2)
                break
            except TimeoutError:
                continue
        assert got is not None, srv.stats
        assert srv.stats["redis_reconnects"] >= 1
        assert got["sq"] > first["sq"] + 1  # the gap is visible to the client
        await c.ws.close()
    finally:
        await ing.close()
        await asyncio.to_thread(rd.stop)
