"""Market-data fan-out: a WebSocket server speaking Alpaca's v2 stock stream protocol.

``ws://<bind_host>:<fanout_port>/v2/iex`` (``/v2/sip`` serves the same feed). Clients auth and
subscribe as Alpaca's clients do (the protocol: :mod:`marketdata.stream_session`); data comes as
``T:"q"`` quotes, ``T:"t"`` trades, ``T:"b"`` minute bars, ``T:"u"`` updated minute bars,
``T:"d"`` daily bars, ``T:"s"`` trading status (halts/resumptions, from the feed or from
operations), batched several to an array, each from ingest carrying ``sq`` (per-symbol sequence
number over q/t/b/u/d/s: a jump means the client missed updates; an operations status has none)
and ``it`` (ingest time, ns); JSON text frames, or msgpack binary frames for msgpack clients
(:mod:`marketdata.frames`).

Layout: this module is the server and its wiring: :class:`FanoutServer` (lifecycle, the maps
symbol -> connections, dispatch of what Redis delivers, delivery to each connection) and
:func:`run_fanout` / :func:`fanout_from_settings` / :func:`directory_authenticator`.
:mod:`marketdata.subscriber` reads Redis, :mod:`marketdata.stream_session` runs the protocol on
each connection, :mod:`marketdata.frames` encodes frames. What the server deliberately does not
do: parse client commands, talk RESP, or encode frames itself.

Inside: a local map symbol -> connections. The process SUBSCRIBEs ingest's batch channels
``<prefix>:mdb:<k>`` (:mod:`marketdata.batches`: several messages a publish, per-symbol order
kept) of the symbols it has at least one local subscriber for (all of them while anyone wants
``"*"``), and ``<prefix>:md:<SYMBOL>`` only for symbols someone wants ``statuses`` of, for the
operations statuses published there (PSUBSCRIBE ``<prefix>:md:*`` for ``"*"``); it UNSUBSCRIBEs
when the last leaves, so several fan-out processes can run side by side (on one port:
:mod:`marketdata.fanout_processes`), each reading only what its clients want. If Redis goes away it
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
  straight to the transport: header written by :mod:`marketdata.frames`, no compression, nothing
  fragmented; control messages still go through websockets.) A round writes its connections in
  slices, yielding in between, so the Redis reader never falls behind.
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
import logging
import time
from functools import partial
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

from marketdata import batches
from marketdata.batches import BATCH_SHARDS
from marketdata.frames import FrameEncoder, ack_ping
from marketdata.stream_session import (
    Authenticator,
    CachedAuthenticator,
    Conn,
    FanoutConnection,
    error,
    handle_connection,
)
from marketdata.subscriber import RedisSubscriber
from sherwood import metrics
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

PATHS = ("/v2/iex", "/v2/sip", "/v2/test")
KIND_OF = {ord("t"): "trades", ord("q"): "quotes", ord("b"): "bars", ord("s"): "statuses",
           ord("u"): "updatedBars", ord("d"): "dailyBars"}

# frames a connection may have unacknowledged (every WINDOW-th one carries a ping). A wider window
# would save pongs (each costs the client a write, the server a read and a websockets parse) but
# lets a slow reader fall further behind: at 4, one reading 5 frames a second lags 1.6 s, not 0.8.
WINDOW = 2
LISTEN_BACKLOG = 4096  # capped by net.core.somaxconn
FLUSH_SLICE = 200  # connections written between two yields to the event loop


class FanoutServer:
    """The fan-out of one process: its clients, their subscriptions and the delivery to them."""

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
        self.chan_prefix = RedisKeys(prefix).md_channel_prefix.encode()
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
        self.conns: set[Conn] = set()
        self.local: dict[str, set[Conn]] = {}  # symbol ("*" too) -> connections wanting it (any kind)
        self.qsubs: dict[bytes, set[Conn]] = {}  # quote channel -> connections pulling it
        self.latest: dict[bytes, bytes] = {}  # quote channel -> newest payload (channels in qsubs)
        self.dirty: set[bytes] = set()  # quote channels updated since the last flush
        self.open: set[Conn] = set()  # authenticated connections with no frame in flight
        self.ready: set[Conn] = set()  # open connections known to have something to send
        self.per_key: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self.stats: dict[str, int] = {"connections": 0, "delivered": 0, "frames": 0,
                                      "slow_disconnects": 0, "redis_reconnects": 0, "redis_silent": 0,
                                      "received": 0, "max_buffered": 0}
        self.auth = CachedAuthenticator(authenticate)
        self.frames = FrameEncoder()
        self.status_local: dict[str, set[Conn]] = {}  # symbol ("*" too) -> connections wanting statuses
        self.batch_chans = [batches.channel(prefix, k) for k in range(BATCH_SHARDS)]
        self.shard_refs = [0] * BATCH_SHARDS  # batch channel -> local symbols in it ("*" counts in all)
        self.subscriber = RedisSubscriber(redis_url, self.chan_prefix, batches.channel_prefix(prefix), self,
                                          self.stats,
                                          backoff_max_s=redis_backoff_max_s, ping_s=redis_ping_s)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> Server:
        """Listen (``reuse_port``: SO_REUSEPORT, several fan-out processes on one port) and run
        the Redis reader, the flusher and the watchdog."""
        self._tasks.append(asyncio.create_task(self.subscriber.run(), name="fanout-redis"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="fanout-flusher"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="fanout-watchdog"))
        self._server = await serve(
            partial(handle_connection, self), host, port, process_request=self._process_request,
            create_connection=FanoutConnection,
            # thousands of clients (re)connect at once after a restart: asyncio's default accept
            # backlog (100) overflows and drops SYNs, which clients retry only after 1, 3, 7 s...
            backlog=LISTEN_BACKLOG, reuse_port=reuse_port or None,
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
        await self.subscriber.aclose()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] not in PATHS:
            return conn.respond(404, "unknown stream path\n")
        return None

    # -- dispatch (everything but quotes of explicitly watched symbols) ----------------------
    def dispatch(self, chan: bytes, payload: bytes, wildcard: bool) -> None:
        sym = chan[len(self.chan_prefix):].decode(errors="replace")
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
                now = began = time.monotonic()
                send = self._send
                n = 0
                for c in cands:
                    if not c.blocked and not c.closed:
                        send(c, now)
                        n += 1
                        if n % FLUSH_SLICE == 0:
                            await asyncio.sleep(0)
                            now = time.monotonic()
                if n:  # how far the round's last connection was behind its first, plus the window
                    metrics.FANOUT_LAG.observe(time.monotonic() - began + self.flush_interval)
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
        qchans = c.qchans
        if qchans:  # the newest payload of each watched channel, unless it went out already
            now_ = [*map(self.latest.get, qchans)]
            last = c.sent
            if now_ != last:  # (identity first: unchanged channels compare cheaply)
                items += [p for p, o in zip(now_, last, strict=True) if p is not o and p is not None]
                c.sent = now_
        c.buffered = 0
        if not items:
            return
        ws = c.ws
        transport = ws.transport
        if ws.protocol.state is not State.OPEN or transport is None or transport.is_closing():
            return
        data = self.frames.frames(c.binary, items)
        c.fseq = seq = c.fseq + 1
        if seq % WINDOW:
            transport.write(data)
        else:  # every WINDOW-th write ends with a ping whose pong acknowledges it (one syscall)
            transport.write(data + ack_ping(seq))
            c.ping_at = now
        if seq - c.acked >= WINDOW:
            c.blocked = True
            self.open.discard(c)
        stats = self.stats
        stats["delivered"] += len(items)
        stats["frames"] += 1

    def acked(self, c: Conn, seq: int) -> None:
        if seq <= c.acked or seq > c.fseq:
            return
        c.acked = seq
        c.ping_at = 0.0
        if c.blocked and not c.closed:
            c.blocked = False
            self.open.add(c)
            self.ready.add(c)  # whatever conflated meanwhile goes in the next flush

    def _slow(self, c: Conn) -> None:
        if c.closed:
            return
        self.stats["slow_disconnects"] += 1
        self.stats["max_buffered"] = max(self.stats["max_buffered"], c.buffered)
        self.drop_subscriptions(c)
        c.closed = True
        self.open.discard(c)
        self.ready.discard(c)
        c.queue.clear()
        c.wild_q.clear()
        c.buffered = 0
        asyncio.get_running_loop().create_task(self._close_slow(c))

    async def _close_slow(self, c: Conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.send([error(407)]), 2.0)
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

    # -- subscriptions ----------------------------------------------------------------------
    async def add_subscriptions(self, c: Conn, adds: dict[str, list[str]]) -> None:
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
        new_status = []
        for s in adds.get("statuses", ()):
            conns = self.status_local.get(s)
            if conns is None:
                conns = self.status_local[s] = set()
                new_status.append(s)
            conns.add(c)
        chans = self._shards_take(new_syms, +1)
        chans += [self.chan_prefix + s.encode() for s in new_status if s != "*"]
        await self.subscriber.subscribe(chans)
        if "*" in new_status:
            await self.subscriber.subscribe([self.pattern], pattern=True)

    def _shards_take(self, syms: list[str], delta: int) -> list[bytes]:
        """Count symbols coming (+1) or going (-1) per batch channel ("*": every one); the batch
        channels that became wanted (+1) or unwanted (-1)."""
        refs = self.shard_refs
        changed = []
        for s in syms:
            for k in range(BATCH_SHARDS) if s == "*" else (batches.shard_of(s.encode()),):
                n = refs[k] = refs[k] + delta
                if n == (1 if delta > 0 else 0):
                    changed.append(self.batch_chans[k])
        return changed

    def wanted(self) -> tuple[list[bytes], list[bytes]]:
        """What to (re)subscribe in Redis: batch channels and symbol channels, patterns."""
        chans = [ch for ch, n in zip(self.batch_chans, self.shard_refs, strict=True) if n > 0]
        chans += [self.chan_prefix + s.encode() for s in self.status_local if s != "*"]
        return chans, [self.pattern] if "*" in self.status_local else []

    def remove_subscriptions(self, c: Conn, removes: dict[str, list[str]]) -> None:
        for kind, syms in removes.items():
            c.subs[kind].difference_update(syms)
        self._requote(c)
        gone_status = []
        for s in removes.get("statuses", ()):
            conns = self.status_local.get(s)
            if conns is not None and c in conns:
                conns.discard(c)
                if not conns:
                    del self.status_local[s]
                    gone_status.append(s)
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
        self.subscriber.unsubscribe([*self._shards_take(gone, -1),
                                     *(self.chan_prefix + s.encode() for s in gone_status if s != "*")])
        if "*" in gone_status:
            self.subscriber.unsubscribe([self.pattern], pattern=True)

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
        was = dict(zip(old, c.sent, strict=True))  # channel -> the payload last sent (or seen)
        for ch in old:
            if ch in keep:
                continue
            subs = self.qsubs.get(ch)
            if subs is not None:
                subs.discard(c)
                if not subs:
                    del self.qsubs[ch]
                    self.latest.pop(ch, None)
                    self.dirty.discard(ch)
        for ch in new:
            if ch not in was:
                self.qsubs.setdefault(ch, set()).add(c)
                was[ch] = self.latest.get(ch)  # only quotes newer than the subscription
        c.qchans = new
        c.sent = [was[ch] for ch in new]

    def drop_subscriptions(self, c: Conn) -> None:
        self.remove_subscriptions(c, {k: list(v) for k, v in c.subs.items()})


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
    """``sherwood serve fanout``: run the WebSocket server until stopped (``fanout_processes`` > 1:
    that many processes on the port, :mod:`marketdata.fanout_processes`)."""
    from marketdata.fanout_processes import run_processes, serve_one

    stop = stop if stop is not None else asyncio.Event()
    if settings.fanout_processes > 1:
        await run_processes(settings, stop)
        return
    await serve_one(settings, stop, reuse_port=False)
