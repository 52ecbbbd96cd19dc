"""Ingest in several processes: the feed's lines routed by symbol to worker processes.

What it does: with ``marketdata_ingest_workers`` = N > 1, ``sherwood serve ingest`` runs an
:class:`IngestRouter`: it listens for the feed as one ingest does (same port, same line
protocol), and sends each line to the worker that owns its symbol (``shard_of``: CRC-32 of the
symbol modulo N, so a symbol always goes to the same worker). Each worker is a process running a
plain :class:`marketdata.ingest.Ingest` over its share of the universe: it validates, sequences,
publishes and aggregates bars of its symbols only, so sequence numbers stay per symbol and per
process as with one ingest, and Redis, the channels and the market-data DB see what one ingest
would write. The router's own work per line is finding the symbol: the parsing, formatting and
publishing (about 5 microseconds a quote in Python) spread over N processes, N cores.

Between router and worker: one socketpair each. Router -> worker: frames ``kind (1 byte) +
length (4 bytes) + payload``: ``L`` feed lines (joined by newlines), ``S`` a sync request (its
id). Worker -> router: JSON lines with its accepted and dropped counts, every second and in answer
to a sync (``{"sync": id, ...}``, sent once everything before it is written to Redis); the first
one says the worker's Ingest has started, and :meth:`IngestRouter.start` waits for every
worker's. The router's ``accepted`` / ``dropped`` are the workers' sums as last reported (the
metrics read them).

Failure: a worker that dies ends the router (``failed`` is set, ``process`` raises, and
``run_ingest`` returns an error), so the process supervisor restarts ingest as a whole; a worker
whose router is gone (EOF on its socket) exits. Backpressure: the router waits for a worker's
socket to drain (4 MiB buffered at most), so a slow worker slows the feed's reading down.

What it deliberately does not do: balance hot symbols (a symbol's whole flow is one worker's),
share state between workers, or retry a batch a dead worker did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketdata.feed_listener import FeedListener
from marketdata.ingest import REASONS, Ingest
from sherwood import metrics

log = logging.getLogger("marketdata.ingest")

_HEAD = 5  # frame kind + 4-byte length
MAX_BUFFER = 4 << 20  # bytes the router may have queued for one worker before it waits


def shard_of(symbol: bytes, n: int) -> int:
    """The worker (0..n-1) that owns ``symbol``: stable across processes and restarts."""
    return zlib.crc32(symbol) % n


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its Ingest (picklable: workers are spawned)."""

    redis_url: str
    prefix: str
    known: tuple[str, ...]
    options: dict[str, float]  # Ingest's keyword options (max_price, bar_flush_s, ...)
    db_url: str | None = None  # the market-data database (bars, trades); None: no bars stored


class IngestRouter(FeedListener):
    """The feed's lines to N ingest worker processes by symbol (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        if workers < 2:
            raise ValueError("an ingest router needs 2 workers or more")
        self.spec = spec
        self.n = workers
        self._shard = {s.encode(): shard_of(s.encode(), workers) for s in spec.known}
        self.procs: list[Any] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []
        self._reports: list[dict[str, dict[str, int]]] = [{} for _ in range(workers)]
        self._synced = [0] * workers  # per worker, the last sync it answered
        self._reported = asyncio.Event()  # set at every report
        self._sync_id = 0
        self.failed = asyncio.Event()
        self._closing = False

    @property
    def accepted(self) -> dict[str, int]:
        return self._sum("accepted", ("quotes", "trades", "statuses", "bars"))

    @property
    def dropped(self) -> dict[str, int]:
        return self._sum("dropped", REASONS)

    def _sum(self, what: str, keys: tuple[str, ...]) -> dict[str, int]:
        out = dict.fromkeys(keys, 0)
        for r in self._reports:
            for k, v in r.get(what, {}).items():
                out[k] = out.get(k, 0) + v
        return out

    async def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.n):
            mine, theirs = socket.socketpair()
            p = ctx.Process(target=_worker_entry, args=(self.spec, i, self.n, theirs),
                            name=f"ingest-worker-{i}", daemon=True)
            p.start()
            theirs.close()
            reader, writer = await asyncio.open_connection(sock=mine, limit=1 << 20)
            writer.transport.set_write_buffer_limits(high=MAX_BUFFER)
            self.procs.append(p)
            self._writers.append(writer)
            self._readers.append(asyncio.create_task(self._read_reports(i, reader)))
        # each worker reports once its Ingest has started (imports, Redis state): until then what
        # the feed sends would only pile up in the socket buffers
        async with asyncio.timeout(60):
            while not all(self._reports) and not self.failed.is_set():
                self._reported.clear()
                await self._reported.wait()
        if self.failed.is_set():
            raise RuntimeError("an ingest worker ended while starting")

    async def _read_reports(self, i: int, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                report = json.loads(line)
                self._reports[i] = report
                self._synced[i] = report.get("sync", self._synced[i])
                self._reported.set()
        except (OSError, ValueError) as exc:
            log.error("ingest worker %d: broken link (%s)", i, exc)
        if not self.failed.is_set() and not self._closing:
            log.error("ingest worker %d ended (exit code %s): ingest stops", i, self.procs[i].exitcode)
            self.failed.set()
            self._reported.set()

    async def process(self, lines: list[bytes]) -> int:
        """Route a batch of feed lines to their workers; returns how many were routed (what each
        worker accepted shows in ``accepted`` / ``dropped`` at its next report)."""
        if self.failed.is_set():
            raise RuntimeError("an ingest worker ended")
        parts: list[list[bytes]] = [[] for _ in range(self.n)]
        shard = self._shard
        for line in lines:  # "<kind>,<symbol>,...": kinds are one letter; others go to worker 0,
            parts[shard.get(line[2:line.find(b",", 2)], 0)].append(line)  # which refuses them
        for i, part in enumerate(parts):
            if part:
                payload = b"\n".join(part)
                self._writers[i].write(b"L" + len(payload).to_bytes(4, "big") + payload)
        for w in self._writers:
            await w.drain()
        return len(lines)

    async def sync(self) -> None:
        """Wait until every worker has written to Redis everything routed so far."""
        self._sync_id += 1
        sid = self._sync_id
        for w in self._writers:
            w.write(b"S" + (4).to_bytes(4, "big") + sid.to_bytes(4, "big"))
        async with asyncio.timeout(30):
            while min(self._synced) < sid:
                if self.failed.is_set():
                    raise RuntimeError("an ingest worker ended")
                self._reported.clear()
                await self._reported.wait()

    async def close(self) -> None:
        await self.stop_listening()
        self._closing = True
        for w in self._writers:
            w.close()  # EOF: each worker flushes its bars and exits
        for p in self.procs:
            await asyncio.to_thread(p.join, 10)
            if p.is_alive():
                p.terminate()
        for t in self._readers:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


def _worker_entry(spec: WorkerSpec, shard: int, n: int, sock: socket.socket) -> None:
    from sherwood.lifecycle import run_loop

    run_loop(_worker(spec, shard, n, sock))


async def _worker(spec: WorkerSpec, shard: int, n: int, sock: socket.socket) -> None:
    """One worker: an Ingest over its symbols, fed by the router until the router goes away."""
    engine = None
    if spec.db_url is not None:
        from db.engines import make_engine

        engine = make_engine(spec.db_url, pool_size=2, max_overflow=2)
    known = frozenset(s for s in spec.known if shard_of(s.encode(), n) == shard)
    ing = Ingest(spec.redis_url, spec.prefix, known=known, engine=engine, **spec.options)  # type: ignore[arg-type]
    await ing.start()
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)

    def report(**extra: int) -> None:
        writer.write(json.dumps({"accepted": ing.accepted, "dropped": ing.dropped, **extra}).encode() + b"\n")

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            report()

    report()  # started
    ticker = asyncio.create_task(every_second())
    try:
        while True:
            try:
                head = await reader.readexactly(_HEAD)
                payload = await reader.readexactly(int.from_bytes(head[1:], "big"))
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the router is gone
            if head[:1] == b"L":
                await ing.process(payload.split(b"\n"))
            elif head[:1] == b"S":
                await ing.sync()
                report(sync=int.from_bytes(payload, "big"))
    finally:
        ticker.cancel()
        await ing.close()
        if engine is not None:
            await engine.dispose()


def ingest_options(settings: Any) -> dict[str, float]:
    """Ingest's keyword options from the settings (also what each ingest worker gets)."""
    return {"max_price": settings.marketdata_max_price, "max_jump": settings.marketdata_max_jump,
            "max_tick_age_s": settings.marketdata_max_tick_age_s,
            "max_future_s": settings.marketdata_max_future_s, "quote_max_age_s": settings.quote_max_age_s,
            "bar_flush_s": settings.marketdata_bar_flush_s, "bar_grace_s": settings.marketdata_bar_grace_s,
            "trade_retention_s": settings.marketdata_trade_retention_s}


def ingest_from_settings(settings: Any, engine: AsyncEngine | None) -> Ingest:
    from domain.universe import known_symbols

    assert settings.redis_url, "market-data ingest needs SHERWOOD_REDIS_URL"
    return Ingest(settings.redis_url, settings.redis_prefix,
                  known=known_symbols(settings.marketdata_universe_size), engine=engine,
                  **ingest_options(settings))  # type: ignore[arg-type]


def router_from_settings(settings: Any, db_url: str | None) -> IngestRouter:
    from domain.universe import known_symbols

    assert settings.redis_url, "market-data ingest needs SHERWOOD_REDIS_URL"
    spec = WorkerSpec(settings.redis_url, settings.redis_prefix,
                      tuple(sorted(known_symbols(settings.marketdata_universe_size))),
                      ingest_options(settings), db_url)
    return IngestRouter(spec, settings.marketdata_ingest_workers)


async def run_ingest(settings: Any, stop: asyncio.Event | None = None) -> None:
    """``sherwood serve ingest``: migrate the market-data DB, listen for the feed, run until stopped
    (one process, or a router and ``marketdata_ingest_workers`` workers:
    :mod:`marketdata.ingest_workers`)."""
    from db.engines import make_engine
    from db.migrate import migrate_marketdata

    url = settings.marketdata_db_url_resolved()
    await asyncio.to_thread(migrate_marketdata, url)
    if settings.marketdata_ingest_workers > 1:
        router = router_from_settings(settings, url)
        metrics.register_once(metrics.IngestCounters(router))
        await router.start()
        await router.serve_tcp(settings.bind_host, settings.marketdata_feed_port)
        log.info("ingest (%d workers) listening for the feed on %s:%s", router.n, settings.bind_host,
                 settings.marketdata_feed_port)
        waits = [asyncio.create_task(router.failed.wait()),
                 asyncio.create_task(stop.wait() if stop is not None else asyncio.Event().wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()
            await router.close()
        if router.failed.is_set():
            raise RuntimeError("an ingest worker ended; see the log")
        return
    engine = make_engine(url, pool_size=2, max_overflow=2)
    ingest = ingest_from_settings(settings, engine)
    metrics.register_once(metrics.IngestCounters(ingest))
    await ingest.start()
    await ingest.serve_tcp(settings.bind_host, settings.marketdata_feed_port)
    log.info("ingest listening for the feed on %s:%s", settings.bind_host, settings.marketdata_feed_port)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await ingest.close()
        await engine.dispose()
