"""Kill Redis during a run: the fan-out reconnects with backoff, resubscribes and resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from db.accounts import OpenedAccount
from domain.universe import known_symbols
from marketdata.ingest import Ingest
from sherwood.embedded import EmbeddedRedis, free_port
from tests.marketdata.conftest import Client, FanoutFactory, authed_client
from tests.marketdata.helpers import tr


async def trade_arrives(ing: Ingest, c: Client, *, tries: int, wait: float) -> dict | None:
    """Feed fresh AAPL trades until the client receives one (Redis coming back, links
    re-established); the trade it got, or None."""
    for i in range(tries):
        await ing.process([tr("AAPL", f"187.{12 + i % 80:02d}", i=3 + i)])
        try:
            return await c.until(lambda m: m.get("T") == "t", timeout=wait)
        except TimeoutError:
            continue
    return None


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
        got = await trade_arrives(ing, c, tries=100, wait=0.2)
        assert got is not None, srv.stats
        assert srv.stats["redis_reconnects"] >= 1
        assert got["sq"] > first["sq"] + 1  # the gap is visible to the client
        await c.ws.close()
    finally:
        await ing.close()
        await asyncio.to_thread(rd.stop)


class Blackhole:
    """A TCP proxy to Redis whose existing connections can go silent (no data, no reset) the way
    a dead host or a partition leaves them; connections opened afterwards work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pipes: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.generation = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [w, uw]
        gen = self.generation
        for src, dst in ((r, uw), (ur, w)):
            self.pipes.append(asyncio.create_task(self._pipe(src, dst, gen)))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gen: int) -> None:
        while data := await src.read(65536):
            if gen == self.generation:  # an older generation's bytes vanish
                dst.write(data)

    def cut(self) -> None:
        self.generation += 1

    async def close(self) -> None:
        for t in self.pipes:
            t.cancel()
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()


async def test_fanout_leaves_a_silently_dead_redis_link(
        make_fanout: FanoutFactory, account: OpenedAccount, prefix: str, tmp_path: Path) -> None:
    """No reset ever comes (host gone, partition): the fan-out's pings go unanswered, it drops the
    link and reconnects instead of waiting forever."""
    rd = EmbeddedRedis(tmp_path / "redis", port=free_port())
    url = await asyncio.to_thread(rd.start)
    hole = Blackhole(rd.port)
    ing = Ingest(url, prefix, known=known_symbols())
    try:
        port = await hole.start()
        await ing.start()
        srv = await make_fanout(redis_url=f"redis://127.0.0.1:{port}/0", redis_ping_s=0.2)
        c = await authed_client(srv, account)
        await c.request({"action": "subscribe", "trades": ["AAPL"]})
        await ing.process([tr("AAPL", "187.10", i=1)])
        first = await c.until(lambda m: m.get("T") == "t")
        hole.cut()
        await ing.process([tr("AAPL", "187.11", i=2)])  # lost in the dead link
        got = await trade_arrives(ing, c, tries=40, wait=0.1)
        assert got is not None, srv.stats
        assert srv.stats["redis_silent"] >= 1 and srv.stats["redis_reconnects"] >= 1
        assert got["sq"] > first["sq"] + 1
        await c.ws.close()
    finally:
        await ing.close()
        await hole.close()
        await asyncio.to_thread(rd.stop)


class ResetProxy(Blackhole):
    """A TCP proxy to Redis whose client-side connections can be reset (RST, as a killed Redis
    with bytes in flight leaves them); connections opened afterwards work."""

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.clients = [*getattr(self, "clients", []), w]
        await super()._conn(r, w)

    def reset(self) -> None:
        import socket
        import struct

        for w in getattr(self, "clients", []):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        self.clients = []
        self.cut()


def test_ingest_recovers_from_a_reset_redis_link_on_uvloop(tmp_path: Path) -> None:
    """Processes run on uvloop, whose reset transports raise RuntimeError ("the handler is
    closed") on write, not OSError: ingest must drop that connection and reconnect like any other
    (it kept the dead one, every batch raised, the feed reconnected in a loop and quotes never
    came back after the chaos run killed Redis)."""
    import uvloop

    async def scenario() -> None:
        rd = EmbeddedRedis(tmp_path / "redis", port=free_port())
        await asyncio.to_thread(rd.start)
        proxy = ResetProxy(rd.port)
        port = await proxy.start()
        ing = Ingest(f"redis://127.0.0.1:{port}/0", "swtuv:", known=known_symbols())
        try:
            await ing.start()
            await ing.process([tr("AAPL", "187.10", i=1)])
            await ing.sync()
            proxy.reset()
            await asyncio.sleep(0.2)  # the reset reaches ingest's reply reader
            for i in range(200):  # a batch gets through once ingest has reconnected
                before = ing.dropped["redis_unavailable"]
                await ing.process([tr("AAPL", f"187.{11 + i % 80:02d}", i=2 + i)])
                if ing.dropped["redis_unavailable"] == before:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"ingest never got a batch through: {ing.dropped}")
        finally:
            await ing.close()
            await proxy.close()
            await asyncio.to_thread(rd.stop)

    uvloop.run(scenario())
