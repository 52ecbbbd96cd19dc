"""The fan-out's Redis subscriber: one pub/sub connection per fan-out process.

What it does: :class:`RedisSubscriber` keeps one RESP connection SUBSCRIBEd to what the server
wants (:meth:`Sink.wanted`): ingest's batch channels ``<prefix>:mdb:<k>``
(:mod:`marketdata.batches`) of the symbols some local client wants (all of them while anyone
wants ``"*"``), and ``<prefix>:md:<SYMBOL>`` of the symbols someone wants ``statuses`` of
(PSUBSCRIBEd to ``<prefix>:md:*`` for ``"*"``), where only the operations statuses are taken
(:func:`own_status`: ingest's own messages come in its batches). It subscribes as the server
asks, waiting briefly for Redis to confirm (so the echo to the client means "live"), and reads
the pushes inline (no per-message task or await): a batch is split into its messages, in order;
a quote of a symbol some connection pulls only replaces that channel's newest payload in the
server's ``latest`` and marks it ``dirty``; everything else (trades, bars, statuses, quotes via
``"*"``) goes to the server's ``dispatch``, under the symbol's channel name as before. If Redis
goes away it reconnects with backoff and resubscribes everything wanted; the link is PINGed
every ``ping_s`` and a link silent for three of them (a hung Redis, a host gone, a partition
that never sends a reset) counts as gone too.

What it deliberately does not do: know connections or decide who gets what (the server's
maps: ``local``, ``qsubs``, ``dispatch``), replay what was published while it was away (clients
see the gap through ``sq``), or publish (ingest does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Container
from typing import Protocol

from marketdata.batches import SYM_AT as _SYM_AT
from marketdata.resp import RespConnection, RespError, encode, parse_reply

log = logging.getLogger("marketdata.fanout")  # the fan-out's logger, as before the split

_MSG = b"*3\r\n$7\r\nmessage\r\n$"
_Q = ord("q")
_S = ord("s")


def own_status(payload: bytes) -> bool:
    """A trading status published on a symbol's own channel by someone else than ingest (an
    operations halt, ``db/controls.py``: no ``sq``). The fan-out takes only these from there:
    ingest's messages, statuses included, reach it in ingest's batches."""
    return len(payload) > 7 and payload[6] == _S and b'"sq":' not in payload


class Sink(Protocol):
    """What the subscriber feeds: :class:`marketdata.fanout.FanoutServer`."""

    @property
    def local(self) -> Collection[str]:
        """Symbols some local connection wants ("*" too)."""

    def wanted(self) -> tuple[list[bytes], list[bytes]]:
        """The channels and the patterns to (re)subscribe."""

    @property
    def qsubs(self) -> Container[bytes]:
        """Quote channels some connection pulls (conflated in ``latest``)."""

    latest: dict[bytes, bytes]
    dirty: set[bytes]

    def dispatch(self, chan: bytes, payload: bytes, wildcard: bool) -> None: ...


class RedisSubscriber:
    """The subscriber of one fan-out process (see the module docstring)."""

    def __init__(
        self,
        redis_url: str,
        chan_prefix: bytes,
        batch_prefix: bytes,
        sink: Sink,
        stats: dict[str, int],
        *,
        backoff_max_s: float,
        ping_s: float,
    ) -> None:
        self.redis_url = redis_url
        self.chan_prefix = chan_prefix
        self.pattern = chan_prefix + b"*"
        self.batch_prefix = batch_prefix
        self.sink = sink
        self.stats = stats  # the server's: redis_reconnects, redis_silent, received
        self.backoff_max = backoff_max_s
        self.redis_ping = ping_s
        self._rx_at = 0.0  # when the Redis connection last delivered anything
        self._redis: RespConnection | None = None
        self._redis_ready = asyncio.Event()
        self._acks: dict[bytes, list[asyncio.Future[None]]] = {}

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def run(self) -> None:
        """Connect, subscribe what is wanted, read; reconnect with backoff, forever."""
        backoff = 0.05
        first = True
        while True:
            try:
                conn = await RespConnection.connect(self.redis_url, connect_timeout=1.0, select_db=False)
            except (TimeoutError, OSError, RespError) as exc:
                log.warning("fan-out: Redis unavailable (%s); retry in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = 0.05
            if not first:
                self.stats["redis_reconnects"] += 1
                log.info("fan-out: Redis reconnected; resubscribing %d symbols", len(self.sink.local))
            first = False
            self._redis = conn
            chans, patterns = self.sink.wanted()
            for i in range(0, len(chans), 1000):
                conn.write(encode("SUBSCRIBE", *chans[i:i + 1000]))
            if patterns:
                conn.write(encode("PSUBSCRIBE", *patterns))
            self._redis_ready.set()
            self._rx_at = time.monotonic()
            heartbeat = asyncio.create_task(self._heartbeat(conn), name="fanout-redis-ping")
            try:
                await self._read(conn)
            except (OSError, RespError, ConnectionError) as exc:
                log.warning("fan-out: lost Redis (%s); reconnecting", exc)
            finally:
                heartbeat.cancel()
                self._redis_ready.clear()
                self._redis = None
                conn.close()
                for futs in self._acks.values():
                    for f in futs:
                        if not f.done():
                            f.set_result(None)
                self._acks.clear()

    async def _heartbeat(self, conn: RespConnection) -> None:
        """PING the subscriber connection; silent for 3 pings: a hung Redis or a dead link that
        sent no reset (a host gone, a partition): drop the connection, the loop reconnects."""
        while True:
            await asyncio.sleep(self.redis_ping)
            if time.monotonic() - self._rx_at > 3 * self.redis_ping:
                log.warning("fan-out: Redis silent for %.1fs; reconnecting", time.monotonic() - self._rx_at)
                self.stats["redis_silent"] += 1
                transport = conn.writer.transport
                transport.abort()
                return
            with contextlib.suppress(OSError, RuntimeError):
                conn.write(b"*1\r\n$4\r\nPING\r\n")

    async def _read(self, conn: RespConnection) -> None:
        reader = conn.reader
        rest = b""
        while True:
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise RespError("connection closed by Redis")
            self._rx_at = time.monotonic()
            data = rest + chunk if rest else chunk
            pos = self._consume(data)
            rest = data[pos:]

    def _consume(self, data: bytes) -> int:
        """Handle every complete push in ``data``; return where the incomplete tail starts.

        ``message`` pushes (all the traffic) are parsed inline; a quote only replaces the newest
        payload of its channel. Anything else goes through the generic RESP parser."""
        n = len(data)
        pos = 0
        find = data.find
        sink = self.sink
        latest = sink.latest
        dirty = sink.dirty
        qsubs = sink.qsubs
        local = sink.local
        dispatch = sink.dispatch
        bprefix = self.batch_prefix
        cprefix = self.chan_prefix
        mlen = len(_MSG)
        got = 0
        while pos < n:
            if data.startswith(_MSG, pos):
                p = pos + mlen
                e = find(b"\r\n", p)
                if e < 0:
                    break
                cs = e + 2
                ce = cs + int(data[p:e])
                e = find(b"\r\n", ce + 3)
                if e < 0:
                    break
                ps = e + 2
                pe = ps + int(data[ce + 3:e])
                if pe + 2 > n:
                    break
                chan = data[cs:ce]
                payload = data[ps:pe]
                pos = pe + 2
                if chan.startswith(bprefix):  # ingest's batch: its messages, in order
                    msgs = payload.split(b"\n")
                    got += len(msgs)
                    wild = "*" in local
                    for m in msgs:
                        ch = cprefix + m[_SYM_AT:m.find(b'"', _SYM_AT)]
                        if len(m) > 7 and m[6] == _Q:
                            if ch in qsubs:
                                latest[ch] = m
                                dirty.add(ch)
                        else:
                            dispatch(ch, m, False)
                        if wild:
                            dispatch(ch, m, True)
                elif own_status(payload):  # a symbol's own channel: operations statuses only
                    got += 1
                    dispatch(chan, payload, False)
                continue
            r = parse_reply(data, pos)
            if r is None:
                break
            item, pos = r
            if not isinstance(item, list) or not item:
                continue
            kind = item[0]
            if kind == b"pmessage" or kind == b"message":  # (a batch always comes as a message)
                pch, pay = item[-2], item[-1]
                assert isinstance(pch, bytes) and isinstance(pay, bytes)
                if own_status(pay):
                    got += 1
                    sink.dispatch(pch, pay, kind == b"pmessage")
            elif kind in (b"subscribe", b"psubscribe"):
                sub = item[1]
                assert isinstance(sub, bytes)
                for f in self._acks.pop(sub, []):
                    if not f.done():
                        f.set_result(None)
        self.stats["received"] += got
        return pos

    async def subscribe(self, channels: list[bytes], pattern: bool = False) -> None:
        """SUBSCRIBE and wait (briefly) for Redis to confirm, so the echo means 'live'."""
        conn = self._redis
        if conn is None or not channels:
            return
        loop = asyncio.get_running_loop()
        futs = []
        for ch in channels:
            f: asyncio.Future[None] = loop.create_future()
            self._acks.setdefault(ch, []).append(f)
            futs.append(f)
        try:
            conn.write(encode("PSUBSCRIBE" if pattern else "SUBSCRIBE", *channels))
        except (OSError, RuntimeError):
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*futs), 2.0)

    def unsubscribe(self, channels: list[bytes], pattern: bool = False) -> None:
        if self._redis is not None and channels:
            with contextlib.suppress(OSError, RuntimeError):
                self._redis.write(encode("PUNSUBSCRIBE" if pattern else "UNSUBSCRIBE", *channels))
