"""Market-data fan-out: a WebSocket server speaking Alpaca's v2 stock stream protocol.

``ws://<bind_host>:<fanout_port>/v2/iex`` (``/v2/sip`` serves the same feed). Protocol
(``../shared/reference/market-data-stream.md``):

* on connect ``[{"T":"success","msg":"connected"}]``; ``{"action":"auth","key","secret"}`` (an
  account API key id/secret, checked against the directory DB; a success is cached for 60 s) ->
  ``[{"T":"success","msg":"authenticated"}]``; ``{"action":"subscribe"|"unsubscribe","trades",
  "quotes","bars","statuses"}`` (``"*"`` = every symbol) -> the full subscription
  ``[{"T":"subscription",...}]``.
* data: ``T:"q"`` quotes, ``T:"t"`` trades, ``T:"b"`` minute bars, ``T:"s"`` trading status
  (halts/resumptions), batched several to an array, each carrying ``sq`` (per-symbol sequence
  number over q/t/b/s: a jump means the client missed updates) and ``it`` (ingest time, ns).
* errors ``[{"T":"error","code","msg"}]``: 400 invalid syntax, 401 not authenticated, 402 auth
  failed (then closed), 403 already authenticated, 404 auth timeout (closed), 405 symbol limit
  exceeded (subscriptions unchanged), 406 connection limit exceeded (closed), 407 slow client
  (closed), 409 insufficient subscription (a symbol list that is not a list of symbols),
  410 invalid subscribe action for this feed (e.g. ``lulds``), 500 internal error.
* JSON text frames, or msgpack binary frames for clients that send ``Content-Type:
  application/msgpack`` (``t`` is then a msgpack Timestamp, as alpaca-py expects).

Inside: a local map symbol -> connections. The process SUBSCRIBEs ``<prefix>:md:<SYMBOL>`` while
it has at least one local subscriber for that symbol (PSUBSCRIBE ``<prefix>:md:*`` while anyone
wants ``"*"``) and UNSUBSCRIBEs when the last leaves, so several fan-out processes can run side by
side behind a load balancer, each reading only what its clients want. If Redis goes away it
reconnects with backoff and resubscribes; clients see the gap through ``sq``. The subscriber link
is PINGed every ``fanout_redis_ping_s``: silent for three of them (a hung Redis, a host gone or a
partition that never sends a reset) counts as gone too.

Delivery (the hot path: no task, no await and no JSON per connection or per message):

* Quotes are conflated per symbol: the Redis reader only keeps the newest payload per channel
  (``latest``) and marks the channel dirty. When a connection is sent a frame it takes, for each
  symbol it watches, the newest payload it has not been sent yet: a slow client gets fresh prices,
  never a backlog, and the work is per frame sent, not per (update x subscriber). Trades, bars and
  statuses are never dropped: they queue per connection, in order. The payload bytes from Redis
  are the message (encoded once by ingest, shared by every connection; msgpack encoded once per
  payload for msgpack clients).
* One flusher, every ``fanout_flush_interval_s``, writes each connection that has news ONE frame
  (a JSON array of everything pending, as Alpaca batches) straight to its transport; every
  ``WINDOW``-th frame is followed by a WebSocket ping carrying the frame number, and the client's
  pong acknowledges it. A connection with ``WINDOW`` frames unacknowledged gets nothing more (its
  news keep conflating) until the pong comes. So a client never has more than ``WINDOW`` frames
  in flight, whatever the kernel would buffer: its lag is bounded by how fast IT consumes, and its
  frames grow (up to one quote per symbol) instead of queueing when it falls behind. (Frames go
  straight to the transport: header written here, no compression, nothing fragmented; control
  messages still go through websockets.) A round writes its connections in slices, yielding in
  between, so the Redis reader never falls behind.
* A connection whose queued bytes plus socket write buffer exceed ``fanout_max_buffer_bytes``, or
  whose ping stays unanswered ``fanout_slow_timeout_s``, gets error 407 and is disconnected;
  nobody else waits for it. Pings every ``fanout_ping_interval_s`` (websockets keepalive) drop
  dead peers.

Processes run on uvloop when it is installed (:func:`sherwood.lifecycle.run_loop`): every frame
is a socket write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from marketdata.resp import RespConnection, RespError, encode, parse_reply

log = logging.getLogger(__name__)

PATHS = ("/v2/iex", "/v2/sip", "/v2/test")
KINDS = ("trades", "quotes", "bars", "statuses")
KIND_OF = {ord("t"): "trades", ord("q"): "quotes", ord("b"): "bars", ord("s"): "statuses"}
UNSUPPORTED = ("lulds", "orderbooks", "corrections", "cancelErrors", "updatedBars", "dailyBars",
               "imbalances")
MSGS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
        403: "already authenticated", 404: "auth timeout", 405: "symbol limit exceeded",
        406: "connection limit exceeded", 407: "slow client", 409: "insufficient subscription",
        410: "invalid subscribe action for this feed", 500: "internal error"}

Authenticator = Callable[[str, str], Awaitable[str | None]]


def _error(code: int) -> dict[str, Any]:
    return {"T": "error", "code": code, "msg": MSGS[code]}


def _ts(s: str) -> msgpack.Timestamp | str:
    try:
        base, _, frac = s.rstrip("Z").partition(".")
        sec = int(datetime.fromisoformat(base + "+00:00").timestamp())
        return msgpack.Timestamp(sec, int((frac + "000000000")[:9]))
    except ValueError:
        return s


WINDOW = 2  # frames a connection may have unacknowledged (every WINDOW-th one carries a ping)
LISTEN_BACKLOG = 4096  # capped by net.core.somaxconn
FLUSH_SLICE = 200  # connections written between two yields to the event loop
MAX_FRAME_BYTES = 64 * 1024  # a bigger batch is split (clients cap message sizes, often at 1 MiB)
ACK_TAG = b"fo"  # our pings carry ACK_TAG + the frame number (4 bytes)
_MSG = b"*3\r\n$7\r\nmessage\r\n$"
_Q = ord("q")


def _ws_header(opcode: int, n: int) -> bytes:
    """RFC 6455 frame header, FIN set, unmasked (server to client)."""
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


def _mp_array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class FanoutConnection(ServerConnection):
    """websockets' server connection; pongs answering the fan-out's frame pings acknowledge frames."""

    fo_conn: Conn | None = None

    def acknowledge_pings(self, data: bytes) -> None:
        c = self.fo_conn
        if c is not None and len(data) == 6 and data[:2] == ACK_TAG:
            c.server._acked(c, int.from_bytes(data[2:], "big"))
            return
        super().acknowledge_pings(data)


class Conn:
    __slots__ = (
        "acked",
        "binary",
        "blocked",
        "buffered",
        "closed",
        "fseq",
        "identity",
        "ping_at",
        "qchans",
        "queue",
        "sent",
        "server",
        "subs",
        "wild_q",
        "ws",
    )

    def __init__(self, server: FanoutServer, ws: ServerConnection, binary: bool) -> None:
        self.server = server
        self.ws = ws
        self.binary = binary
        self.identity: str | None = None
        self.subs: dict[str, set[str]] = {k: set() for k in KINDS}
        self.qchans: tuple[bytes, ...] = ()  # quote channels watched one by one (pull, conflated)
        self.sent: dict[bytes, bytes] = {}  # channel -> the quote payload last sent (or seen at subscribe)
        self.wild_q: dict[bytes, bytes] = {}  # quotes via the "*" subscription (conflated per channel)
        self.queue: list[bytes] = []  # trades, bars, statuses: in order, never dropped
        self.buffered = 0  # bytes in queue + wild_q
        self.closed = False
        self.fseq = 0  # frames written
        self.acked = 0  # the last frame the client acknowledged (its pong)
        self.blocked = False  # WINDOW frames unacknowledged: send nothing more
        self.ping_at = 0.0  # when the unanswered ping went out (0: none)

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for s in self.subs.values():
            out |= s
        return out


class FanoutServer:
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        authenticate: Authenticator,
        *,
        max_connections: int = 20_000,
        max_connections_per_key: int = 0,
        max_symbols: int = 2_000,
        max_buffer_bytes: int = 1 << 20,
        slow_timeout_s: float = 10.0,
        flush_interval_s: float = 0.01,
        auth_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        redis_backoff_max_s: float = 2.0,
        redis_ping_s: float = 2.0,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.chan_prefix = f"{prefix}:md:".encode()
        self.pattern = self.chan_prefix + b"*"
        self.authenticate = authenticate
        self.max_connections = max_connections
        self.max_per_key = max_connections_per_key
        self.max_symbols = max_symbols
        self.max_buffer = max_buffer_bytes
        self.slow_timeout = slow_timeout_s
        self.flush_interval = max(flush_interval_s, 0.001)
        self.auth_timeout = auth_timeout_s
        self.ping_interval = ping_interval_s
        self.backoff_max = redis_backoff_max_s
        self.redis_ping = redis_ping_s
        self._rx_at = 0.0  # when the Redis connection last delivered anything
        self.conns: set[Conn] = set()
        self.local: dict[str, set[Conn]] = {}  # symbol ("*" too) -> connections wanting it (any kind)
        self.qsubs: dict[bytes, set[Conn]] = {}  # quote channel -> connections pulling it
        self.latest: dict[bytes, bytes] = {}  # quote channel -> newest payload (channels in qsubs)
        self.dirty: set[bytes] = set()  # quote channels updated since the last flush
        self.open: set[Conn] = set()  # authenticated connections with no frame in flight
        self.ready: set[Conn] = set()  # open connections known to have something to send
        self.per_key: dict[str, int] = {}
        self._auth_cache: dict[tuple[str, bytes], tuple[str, float]] = {}
        self._mp_cache: dict[bytes, bytes] = {}
        self._redis: RespConnection | None = None
        self._redis_ready = asyncio.Event()
        self._acks: dict[bytes, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self.stats: dict[str, int] = {"connections": 0, "delivered": 0, "frames": 0,
                                      "slow_disconnects": 0, "redis_reconnects": 0, "redis_silent": 0,
                                      "received": 0, "max_buffered": 0}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> Server:
        self._tasks.append(asyncio.create_task(self._redis_loop(), name="fanout-redis"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="fanout-flusher"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="fanout-watchdog"))
        self._server = await serve(
            self._handler, host, port, process_request=self._process_request,
            create_connection=FanoutConnection,
            # thousands of clients (re)connect at once after a restart: asyncio's default accept
            # backlog (100) overflows and drops SYNs, which clients retry only after 1, 3, 7 s...
            backlog=LISTEN_BACKLOG,
            ping_interval=self.ping_interval, ping_timeout=self.ping_interval,
            close_timeout=5, max_size=1 << 16, max_queue=16, compression=None)
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._redis is not None:
            await self._redis.aclose()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] not in PATHS:
            return conn.respond(404, "unknown stream path\n")
        return None

    # -- Redis ------------------------------------------------------------------------------
    def _wanted_channels(self) -> list[bytes]:
        return [self.chan_prefix + s.encode() for s in self.local if s != "*"]

    async def _redis_loop(self) -> None:
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
                log.info("fan-out: Redis reconnected; resubscribing %d channels", len(self.local))
            first = False
            self._redis = conn
            chans = self._wanted_channels()
            for i in range(0, len(chans), 1000):
                conn.write(encode("SUBSCRIBE", *chans[i:i + 1000]))
            if "*" in self.local:
                conn.write(encode("PSUBSCRIBE", self.pattern))
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
        latest = self.latest
        dirty = self.dirty
        qsubs = self.qsubs
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
                got += 1
                if pe - ps > 7 and data[ps + 6] == _Q:
                    if chan in qsubs:
                        latest[chan] = payload
                        dirty.add(chan)
                else:
                    self._dispatch(chan, payload, False)
                continue
            r = parse_reply(data, pos)
            if r is None:
                break
            item, pos = r
            if not isinstance(item, list) or not item:
                continue
            kind = item[0]
            if kind == b"pmessage" or kind == b"message":
                pch, pay = item[-2], item[-1]
                assert isinstance(pch, bytes) and isinstance(pay, bytes)
                got += 1
                self._dispatch(pch, pay, kind == b"pmessage")
            elif kind in (b"subscribe", b"psubscribe"):
                ch = item[1]
                assert isinstance(ch, bytes)
                for f in self._acks.pop(ch, []):
                    if not f.done():
                        f.set_result(None)
        self.stats["received"] += got
        return pos

    async def _subscribe(self, channels: list[bytes], pattern: bool = False) -> None:
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

    def _unsubscribe(self, channels: list[bytes], pattern: bool = False) -> None:
        if self._redis is not None and channels:
            with contextlib.suppress(OSError, RuntimeError):
                self._redis.write(encode("PUNSUBSCRIBE" if pattern else "UNSUBSCRIBE", *channels))

    # -- dispatch (everything but quotes of explicitly watched symbols) ----------------------
    def _dispatch(self, chan: bytes, payload: bytes, wildcard: bool) -> None:
        sym = chan[len(self.chan_prefix):].decode()
        conns = self.local.get("*" if wildcard else sym)
        if not conns:
            return
        kind = KIND_OF.get(payload[6]) if len(payload) > 7 else None
        if kind is None:
            return
        want = "*" if wildcard else sym
        size = len(payload)
        max_buf = self.max_buffer
        slow = None
        for c in conns:
            subs = c.subs[kind]
            if want not in subs or (not wildcard and "*" in subs):
                continue
            if kind == "quotes":  # via "*": conflated per channel
                old = c.wild_q.get(chan)
                c.wild_q[chan] = payload
                c.buffered += size - (len(old) if old is not None else 0)
            else:
                c.queue.append(payload)
                c.buffered += size
            if c.buffered > max_buf:
                slow = [*(slow or []), c]
            elif not c.blocked:
                self.ready.add(c)
        for c in slow or ():
            self._slow(c)

    # -- delivery ---------------------------------------------------------------------------
    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                cands = self._candidates()
                # in slices, yielding in between: the Redis reader (the one input that must never
                # fall behind) and the acknowledgements keep flowing through a long round, and
                # connections later in the round get quotes read meanwhile
                now = time.monotonic()
                send = self._send
                n = 0
                for c in cands:
                    if not c.blocked and not c.closed:
                        send(c, now)
                        n += 1
                        if n % FLUSH_SLICE == 0:
                            await asyncio.sleep(0)
                            now = time.monotonic()
            except Exception:
                log.exception("fan-out flush failed")

    def _candidates(self) -> Any:
        """Connections to look at in this round: the open ones watching a channel updated since
        the last round, plus those known to have something (acknowledged, trades queued) -- or,
        when that is about everyone, simply every open connection."""
        dirty, self.dirty = self.dirty, set()
        ready, self.ready = self.ready, set()
        open_ = self.open
        if not dirty or not open_:
            return ready
        qsubs = self.qsubs
        fan = 0
        for ch in dirty:
            subs = qsubs.get(ch)
            if subs:
                fan += len(subs)
        if fan >= len(open_):
            return list(open_)
        for ch in dirty:
            subs = qsubs.get(ch)
            if subs:
                ready.update(subs)
        return ready

    def _send(self, c: Conn, now: float) -> None:
        items = c.queue
        c.queue = []
        if c.wild_q:
            items = [*items, *c.wild_q.values()]
            c.wild_q = {}
        if c.qchans:
            latest = self.latest
            sent = c.sent
            for ch in c.qchans:
                p = latest.get(ch)
                if p is not None and sent.get(ch) is not p:
                    sent[ch] = p
                    items.append(p)
        c.buffered = 0
        if not items:
            return
        ws = c.ws
        transport = ws.transport
        if ws.protocol.state is not State.OPEN or transport is None or transport.is_closing():
            return
        data = self._frame(c.binary, items)
        if len(data) > MAX_FRAME_BYTES and len(items) > 1:  # e.g. a "*" subscriber: several frames
            chunks: list[bytes] = []
            part: list[bytes] = []
            size = 0
            for m in items:
                if part and size + len(m) > MAX_FRAME_BYTES:
                    chunks.append(self._frame(c.binary, part))
                    part, size = [], 0
                part.append(m)
                size += len(m) + 1
            chunks.append(self._frame(c.binary, part))
            data = b"".join(chunks)
        c.fseq = seq = c.fseq + 1
        if seq % WINDOW:
            transport.write(data)
        else:  # every WINDOW-th write ends with a ping whose pong acknowledges it (one syscall)
            transport.write(data + b"\x89\x06" + ACK_TAG + seq.to_bytes(4, "big"))
            c.ping_at = now
        if seq - c.acked >= WINDOW:
            c.blocked = True
            self.open.discard(c)
        stats = self.stats
        stats["delivered"] += len(items)
        stats["frames"] += 1

    def _acked(self, c: Conn, seq: int) -> None:
        if seq <= c.acked or seq > c.fseq:
            return
        c.acked = seq
        c.ping_at = 0.0
        if c.blocked and not c.closed:
            c.blocked = False
            self.open.add(c)
            self.ready.add(c)  # whatever conflated meanwhile goes in the next flush

    def _frame(self, binary: bool, items: list[bytes]) -> bytes:
        """One WebSocket data frame: the messages as one JSON array (text) or msgpack array."""
        if binary:
            body = self._mp_frame(items)
            return _ws_header(0x2, len(body)) + body
        body = b"[" + b",".join(items) + b"]"
        return _ws_header(0x1, len(body)) + body

    def _mp_frame(self, items: list[bytes]) -> bytes:
        cache = self._mp_cache
        if len(cache) > 50_000:
            cache.clear()
        out = [_mp_array_header(len(items))]
        for m in items:
            packed = cache.get(m)
            if packed is None:
                packed = cache[m] = msgpack.packb(self._mp(json.loads(m)))
            out.append(packed)
        return b"".join(out)

    def _slow(self, c: Conn) -> None:
        if c.closed:
            return
        self.stats["slow_disconnects"] += 1
        self.stats["max_buffered"] = max(self.stats["max_buffered"], c.buffered)
        self._drop_subscriptions(c)
        c.closed = True
        self.open.discard(c)
        self.ready.discard(c)
        c.queue.clear()
        c.wild_q.clear()
        c.buffered = 0
        asyncio.get_running_loop().create_task(self._close_slow(c))

    async def _close_slow(self, c: Conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send_raw(c, [_error(407)]), 2.0)
        with contextlib.suppress(Exception):
            await c.ws.close(1008, "407 slow client")

    async def _watchdog(self) -> None:
        """Every 0.2 s: a connection whose ping has waited for its pong more than
        ``slow_timeout`` is slow; so is one whose queued bytes plus socket write buffer exceed
        ``max_buffer`` (only a connection with frames in flight can have a write buffer)."""
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            slow_before = now - self.slow_timeout
            look_before = now - 0.2
            stats = self.stats
            for c in list(self.conns):
                if c.closed or not c.ping_at or c.ping_at > look_before:
                    continue
                transport = c.ws.transport
                total = c.buffered + (transport.get_write_buffer_size() if transport is not None else 0)
                if total > stats["max_buffered"]:
                    stats["max_buffered"] = total
                if total > self.max_buffer or c.ping_at < slow_before:
                    self._slow(c)

    @staticmethod
    def _mp(d: dict[str, Any]) -> dict[str, Any]:
        t = d.get("t")
        if isinstance(t, str):
            d["t"] = _ts(t)
        return d

    async def _send_raw(self, c: Conn, msgs: list[dict[str, Any]]) -> None:
        if c.binary:
            await c.ws.send(msgpack.packb(msgs))
        else:
            await c.ws.send(json.dumps(msgs, separators=(",", ":")))

    # -- subscriptions ----------------------------------------------------------------------
    async def _add(self, c: Conn, adds: dict[str, list[str]]) -> None:
        new_syms = []
        for kind, syms in adds.items():
            for s in syms:
                c.subs[kind].add(s)
                conns = self.local.get(s)
                if conns is None:
                    conns = self.local[s] = set()
                    new_syms.append(s)
                conns.add(c)
        self._requote(c)
        chans = [self.chan_prefix + s.encode() for s in new_syms if s != "*"]
        await self._subscribe(chans)
        if "*" in new_syms:
            await self._subscribe([self.pattern], pattern=True)

    def _remove(self, c: Conn, removes: dict[str, list[str]]) -> None:
        for kind, syms in removes.items():
            c.subs[kind].difference_update(syms)
        self._requote(c)
        still = c.symbols()
        gone = []
        for s in {s for syms in removes.values() for s in syms} - still:
            conns = self.local.get(s)
            if conns is None:
                continue
            conns.discard(c)
            if not conns:
                del self.local[s]
                gone.append(s)
        self._unsubscribe([self.chan_prefix + s.encode() for s in gone if s != "*"])
        if "*" in gone:
            self._unsubscribe([self.pattern], pattern=True)

    def _requote(self, c: Conn) -> None:
        """Quote channels the connection pulls (all its quote symbols, unless it has "*")."""
        q = c.subs["quotes"]
        new = () if "*" in q else tuple(self.chan_prefix + s.encode() for s in sorted(q))
        if "*" not in q and c.wild_q:
            c.buffered -= sum(len(p) for p in c.wild_q.values())
            c.wild_q = {}
        old = c.qchans
        if new == old:
            return
        keep = set(new)
        for ch in old:
            if ch in keep:
                continue
            c.sent.pop(ch, None)
            subs = self.qsubs.get(ch)
            if subs is not None:
                subs.discard(c)
                if not subs:
                    del self.qsubs[ch]
                    self.latest.pop(ch, None)
                    self.dirty.discard(ch)
        had = set(old)
        for ch in new:
            if ch in had:
                continue
            self.qsubs.setdefault(ch, set()).add(c)
            p = self.latest.get(ch)
            if p is not None:
                c.sent[ch] = p  # only quotes newer than the subscription
        c.qchans = new

    def _drop_subscriptions(self, c: Conn) -> None:
        self._remove(c, {k: list(v) for k, v in c.subs.items()})

    def _subscription_msg(self, c: Conn) -> dict[str, Any]:
        return {"T": "subscription", **{k: sorted(c.subs[k]) for k in KINDS},
                "updatedBars": [], "dailyBars": []}

    # -- connection -------------------------------------------------------------------------
    async def _auth(self, key: str, secret: str) -> str | None:
        h = hashlib.sha256(secret.encode()).digest()
        hit = self._auth_cache.get((key, h))
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        ident = await self.authenticate(key, secret)
        if ident is not None:
            if len(self._auth_cache) > 100_000:
                self._auth_cache.clear()
            self._auth_cache[(key, h)] = (ident, now + 60.0)
        return ident

    async def _handler(self, ws: ServerConnection) -> None:
        ctype = (ws.request.headers.get("Content-Type", "") if ws.request else "").lower()
        c = Conn(self, ws, "msgpack" in ctype)
        if len(self.conns) >= self.max_connections:
            with contextlib.suppress(ConnectionClosed):
                await self._send_raw(c, [_error(406)])
                await ws.close(1008, "406 connection limit exceeded")
            return
        self.conns.add(c)
        self.stats["connections"] += 1
        try:
            await self._send_raw(c, [{"T": "success", "msg": "connected"}])
            await self._session(c)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("fan-out connection failed")
            with contextlib.suppress(Exception):
                await self._send_raw(c, [_error(500)])
        finally:
            self.conns.discard(c)
            self.open.discard(c)
            self.ready.discard(c)
            if not c.closed:
                c.closed = True
                self._drop_subscriptions(c)
            if c.identity is not None:
                self.per_key[c.identity] -= 1
                if not self.per_key[c.identity]:
                    del self.per_key[c.identity]

    def _decode(self, c: Conn, raw: str | bytes) -> Any:
        if isinstance(raw, bytes) and c.binary:
            return msgpack.unpackb(raw)
        return json.loads(raw)

    async def _session(self, c: Conn) -> None:
        ws = c.ws
        deadline = time.monotonic() + self.auth_timeout
        while c.identity is None:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await self._send_raw(c, [_error(404)])
                await ws.close(1008, "404 auth timeout")
                return
            msg = self._parse(c, raw)
            if msg is None:
                await self._send_raw(c, [_error(400)])
                continue
            if msg.get("action") != "auth":
                await self._send_raw(c, [_error(401)])
                continue
            key, secret = msg.get("key"), msg.get("secret")
            ident = await self._auth(key, secret) if isinstance(key, str) and isinstance(secret, str) \
                else None
            if ident is None:
                await self._send_raw(c, [_error(402)])
                await ws.close(1008, "402 auth failed")
                return
            if self.max_per_key and self.per_key.get(ident, 0) >= self.max_per_key:
                await self._send_raw(c, [_error(406)])
                await ws.close(1008, "406 connection limit exceeded")
                return
            c.identity = ident
            self.per_key[ident] = self.per_key.get(ident, 0) + 1
            await self._send_raw(c, [{"T": "success", "msg": "authenticated"}])
        if isinstance(ws, FanoutConnection):
            ws.fo_conn = c
        self.open.add(c)
        async for raw in ws:
            if c.closed:
                return
            msg = self._parse(c, raw)
            if msg is None:
                await self._send_raw(c, [_error(400)])
                continue
            action = msg.get("action")
            if action == "auth":
                await self._send_raw(c, [_error(403)])
            elif action in ("subscribe", "unsubscribe"):
                code, lists = self._lists(msg)
                if code:
                    await self._send_raw(c, [_error(code)])
                    continue
                if action == "subscribe":
                    total = c.symbols() | {s for syms in lists.values() for s in syms}
                    if len(total) > self.max_symbols:
                        await self._send_raw(c, [_error(405)])
                        continue
                    await self._add(c, lists)
                else:
                    self._remove(c, lists)
                if not c.closed:
                    await self._send_raw(c, [self._subscription_msg(c)])
            else:
                await self._send_raw(c, [_error(400)])

    def _parse(self, c: Conn, raw: str | bytes) -> dict[str, Any] | None:
        try:
            msg = self._decode(c, raw)
        except (ValueError, msgpack.UnpackException, TypeError):
            return None
        return msg if isinstance(msg, dict) else None

    @staticmethod
    def _lists(msg: dict[str, Any]) -> tuple[int, dict[str, list[str]]]:
        if any(k in msg for k in UNSUPPORTED):
            return 410, {}
        out: dict[str, list[str]] = {}
        for k in KINDS:
            v = msg.get(k)
            if v is None:
                continue
            if not isinstance(v, list) or not all(
                    isinstance(s, str) and 0 < len(s) <= 16 and (s == "*" or s.replace(".", "").isalnum())
                    for s in v):
                return 409, {}
            out[k] = [s.upper() for s in v]
        return 0, out


def fanout_from_settings(settings: Any, authenticate: Authenticator) -> FanoutServer:
    assert settings.redis_url, "the fan-out needs SHERWOOD_REDIS_URL"
    return FanoutServer(
        settings.redis_url, settings.redis_prefix, authenticate,
        max_connections=settings.fanout_max_connections,
        max_connections_per_key=settings.fanout_max_connections_per_key,
        max_symbols=settings.fanout_max_symbols, max_buffer_bytes=settings.fanout_max_buffer_bytes,
        slow_timeout_s=settings.fanout_slow_timeout_s, flush_interval_s=settings.fanout_flush_interval_s,
        auth_timeout_s=settings.fanout_auth_timeout_s, ping_interval_s=settings.fanout_ping_interval_s,
        redis_backoff_max_s=settings.fanout_redis_backoff_max_s,
        redis_ping_s=settings.fanout_redis_ping_s)


def directory_authenticator(router: Any) -> Authenticator:
    """API key id + secret of an account (``db.accounts.authenticate``) -> the key id."""
    from db.accounts import authenticate

    async def _auth(key: str, secret: str) -> str | None:
        k = await authenticate(router, key, secret)
        return k.key_id if k is not None else None

    return _auth


async def run_fanout(settings: Any, stop: asyncio.Event | None = None) -> None:
    """``sherwood serve fanout``: run the WebSocket server until stopped."""
    from sherwood.wiring import build_router

    router = build_router(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 2}))
    server = fanout_from_settings(settings, directory_authenticator(router))
    await server.start(settings.bind_host, settings.fanout_port)
    log.info("fan-out listening on ws://%s:%s/v2/iex", settings.bind_host, settings.fanout_port)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await server.close()
        await router.dispose()
