"""Exchange feed simulator: synthetic quotes, trades and halts for up to 10,000 symbols.

The universe is ``domain.universe.universe(n)`` (the seeded assets, then synthetic ``Z...``
symbols), the same list ingest accepts. Prices follow a random walk per symbol with a realistic
spread (one cent, or ~2 bp for dear stocks; 1/100 cent under $1) and sizes; a few hot symbols
(the first ``hot`` listings) take ``hot_share`` of all updates. A share ``trade_ratio`` of updates
are trades printed inside the spread. ``halt_every_s`` halts a random symbol now and then and
resumes it ``halt_for_s`` later. :func:`replay_csv` plays back a CSV of recorded ticks instead.

Transport to ingest -- the **feed line protocol**: ASCII lines over TCP to
``127.0.0.1:<marketdata_feed_port>`` (ingest listens; one or more feeds connect; the feed
reconnects if ingest restarts), or the same lines handed in-process to ``Ingest.process`` (benches,
tests). Timestamps are integer nanoseconds since the epoch::

    Q,<sym>,<bid>,<bid_size>,<ask>,<ask_size>,<t_ns>,<bid_exch>,<ask_exch>,<tape>
    T,<sym>,<price>,<size>,<t_ns>,<trade_id>,<exch>,<tape>
    H,<sym>,<t_ns>,<reason>          (trading halt)
    R,<sym>,<t_ns>,<reason>          (resumption)

CSV replay columns (header required): ``type,symbol,bid,bid_size,ask,ask_size,price,size``
(``type`` q/t/h/r); rows are re-stamped with the current time as they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from domain.universe import universe

log = logging.getLogger(__name__)

Sink = Callable[[list[bytes]], Awaitable[object]]

_EXCH = {"NASDAQ": ("Q", "C"), "NYSE": ("N", "A"), "ARCA": ("P", "B"), "SYNTH": ("V", "C")}


@dataclass
class FeedConfig:
    symbols: int = 1000
    rate: float = 1000.0  # updates per second (quotes + trades)
    hot: int = 5
    hot_share: float = 0.3
    trade_ratio: float = 0.1
    volatility: float = 0.0005  # per-update relative step (std dev)
    halt_every_s: float = 0.0  # 0: never halt on its own
    halt_for_s: float = 5.0
    seed: int = 0
    batch_interval_s: float = 0.01


def _tick(px: float) -> float:
    return 0.0001 if px < 1 else 0.01


def _fmt(px: float) -> str:
    return f"{px:.4f}" if px < 1 else f"{px:.2f}"


class ExchangeFeed:
    def __init__(self, config: FeedConfig) -> None:
        self.config = config
        self.listings = universe(config.symbols)
        if not self.listings:
            raise ValueError("empty universe")
        self.rng = random.Random(config.seed)
        self.mid = [float(x.ref_price) for x in self.listings]
        self.sym = [x.symbol for x in self.listings]
        self.exch = [_EXCH.get(x.exchange, ("V", "C")) for x in self.listings]
        self.trade_id = 0
        self.halted: dict[int, float] = {}  # index -> resume at (monotonic)
        self._next_halt = time.monotonic() + config.halt_every_s if config.halt_every_s else math.inf

    def _pick(self) -> int:
        c = self.config
        n = len(self.sym)
        if c.hot and self.rng.random() < c.hot_share:
            return self.rng.randrange(min(c.hot, n))
        return self.rng.randrange(n)

    def lines(self, n: int, now_ns: int | None = None) -> list[bytes]:
        """The next ``n`` updates (quotes and trades) stamped ``now_ns``, plus due halts/resumes."""
        t = now_ns if now_ns is not None else time.time_ns()
        rng = self.rng
        c = self.config
        out: list[bytes] = self._halts(t)
        for _ in range(n):
            i = self._pick()
            mid = self.mid[i] * (1.0 + rng.gauss(0.0, c.volatility))
            mid = max(mid, 0.01)
            self.mid[i] = mid
            tick = _tick(mid)
            half = max(tick, round(mid * 0.0001 / tick) * tick)
            bid = max(tick, round((mid - half) / tick) * tick)
            ask = bid + max(tick, round(2 * half / tick) * tick)
            x, z = self.exch[i]
            if rng.random() < c.trade_ratio and i not in self.halted:
                self.trade_id += 1
                px = bid + tick * rng.randint(0, max(0, round((ask - bid) / tick)))
                out.append(f"T,{self.sym[i]},{_fmt(px)},{rng.randint(1, 50) * 10},{t},{self.trade_id},"
                           f"{x},{z}".encode())
            else:
                out.append(f"Q,{self.sym[i]},{_fmt(bid)},{rng.randint(1, 20)},{_fmt(ask)},"
                           f"{rng.randint(1, 20)},{t},{x},{x},{z}".encode())
        return out

    def halt_line(self, symbol: str, t_ns: int | None = None, reason: str = "T1") -> bytes:
        return f"H,{symbol},{t_ns or time.time_ns()},{reason}".encode()

    def resume_line(self, symbol: str, t_ns: int | None = None, reason: str = "T2") -> bytes:
        return f"R,{symbol},{t_ns or time.time_ns()},{reason}".encode()

    def _halts(self, t: int) -> list[bytes]:
        now = time.monotonic()
        out = []
        for i, until in list(self.halted.items()):
            if now >= until:
                del self.halted[i]
                out.append(self.resume_line(self.sym[i], t))
        if now >= self._next_halt:
            self._next_halt = now + self.config.halt_every_s
            i = self.rng.randrange(len(self.sym))
            if i not in self.halted:
                self.halted[i] = now + self.config.halt_for_s
                out.append(self.halt_line(self.sym[i], t))
        return out

    async def run(self, sink: Sink, stop: asyncio.Event, *, duration_s: float | None = None) -> int:
        """Send updates at ``config.rate`` per second until ``stop`` (or ``duration_s``). Returns
        how many updates were sent. If the sink is slower than the rate, the feed falls behind
        rather than bursting (the debt is capped at one second)."""
        c = self.config
        start = time.monotonic()
        sent = 0
        owed = 0.0
        last = start
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            owed = min(owed + (now - last) * c.rate, c.rate)
            last = now
            n = int(owed)
            if n:
                owed -= n
                await sink(self.lines(n))
                sent += n
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), c.batch_interval_s)
        return sent


def replay_csv(path: Path) -> Iterator[bytes]:
    """Feed lines from a CSV of recorded ticks (timestamps re-stamped when sent, see :func:`restamp`)."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            kind = (row.get("type") or "").strip().lower()
            sym = (row.get("symbol") or "").strip().upper()
            if kind == "q":
                yield (f"Q,{sym},{row['bid']},{row['bid_size']},{row['ask']},{row['ask_size']},{{t}},"
                       "V,V,C").encode()
            elif kind == "t":
                yield f"T,{sym},{row['price']},{row['size']},{{t}},0,V,C".encode()
            elif kind == "h":
                yield f"H,{sym},{{t}},T1".encode()
            elif kind == "r":
                yield f"R,{sym},{{t}},T2".encode()


def restamp(line: bytes, t_ns: int) -> bytes:
    return line.replace(b"{t}", str(t_ns).encode())


async def run_replay(path: Path, sink: Sink, *, rate: float = 0.0, batch: int = 500) -> int:
    """Replay a CSV through ``sink``; ``rate`` lines/s (0: as fast as the sink takes them)."""
    sent = 0
    buf: list[bytes] = []
    start = time.monotonic()
    for line in replay_csv(path):
        buf.append(line)
        if len(buf) >= batch:
            t = time.time_ns()
            await sink([restamp(x, t) for x in buf])
            sent += len(buf)
            buf = []
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    if buf:
        t = time.time_ns()
        await sink([restamp(x, t) for x in buf])
        sent += len(buf)
    return sent


class TcpSink:
    """Send feed lines to ingest over TCP; reconnects with backoff, dropping lines meanwhile
    (a market-data feed does not queue the past)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.writer: asyncio.StreamWriter | None = None
        self._retry_at = 0.0
        self._backoff = 0.1
        self.dropped = 0

    async def __call__(self, lines: list[bytes]) -> None:
        if self.writer is None:
            if time.monotonic() < self._retry_at:
                self.dropped += len(lines)
                return
            try:
                _, self.writer = await asyncio.open_connection(self.host, self.port)
                self._backoff = 0.1
                log.info("feed connected to ingest at %s:%s", self.host, self.port)
            except OSError as exc:
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, 5.0)
                log.warning("ingest not reachable (%s)", exc)
                self.dropped += len(lines)
                return
        try:
            self.writer.write(b"\n".join(lines) + b"\n")
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.warning("ingest connection lost: %s", exc)
            self.writer.close()
            self.writer = None
            self.dropped += len(lines)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = None


async def run_exchange_feed(config: FeedConfig, host: str, port: int, stop: asyncio.Event,
                            *, replay: Path | None = None) -> int:
    sink = TcpSink(host, port)
    try:
        if replay is not None:
            return await run_replay(replay, sink, rate=config.rate)
        return await ExchangeFeed(config).run(sink, stop)
    finally:
        await sink.aclose()
