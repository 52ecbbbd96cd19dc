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
reconnects with backoff and resubscribes; clients see the gap through ``sq``.

Per connection: quotes are conflated per symbol (the newest quote replaces an unsent one: a slow
client gets fresh prices, never a backlog); trades, bars and statuses queue in order. A writer task
sends everything pending as one frame every ``fanout_flush_interval_s`` at most. A connection whose
pending bytes plus socket write buffer exceed ``fanout_max_buffer_bytes``, or whose send has been
blocked ``fanout_slow_timeout_s``, gets error 407 and is disconnected; nobody else waits for it.
Pings every ``fanout_ping_interval_s`` (websockets keepalive) drop dead peers.
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

from marketdata.resp import RespConnection, RespError, encode

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


class Conn:
    __slots__ = (
        "binary",
        "buffered",
        "closed",
        "event",
        "identity",
        "pending_q",
        "queue",
        "send_started",
        "subs",
        "writer",
        "ws",
    )

    def __init__(self, ws: ServerConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.identity: str | None = None
        self.subs: dict[str, set[str]] = {k: set() for k in KINDS}
        self.pending_q: dict[str, bytes] = {}
        self.queue: list[bytes] = []
        self.buffered = 0
        self.event = asyncio.Event()
        self.closed = False
        self.send_started: float | None = None
        self.writer: asyncio.Task[None] | None = None

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
        self.flush_interval = flush_interval_s
        self.auth_timeout = auth_timeout_s
        self.ping_interval = ping_interval_s
        self.backoff_max = redis_backoff_max_s
        self.conns: set[Conn] = set()
        self.local: dict[str, set[Conn]] = {}  # symbol ("*" too) -> connections wanting it
        self.per_key: dict[str, int] = {}
        self._auth_cache: dict[tuple[str, bytes], tuple[str, float]] = {}
        self._redis: RespConnection | None = None
        self._redis_ready = asyncio.Event()
        self._acks: dict[bytes, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self.stats: dict[str, int] = {"connections": 0, "delivered": 0, "frames": 0,
                                      "slow_disconnects": 0, "redis_reconnects": 0,
                                      "received": 0, "max_buffered": 0}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> Server:
        self._tasks.append(asyncio.create_task(self._redis_loop(), name="fanout-redis"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="fanout-watchdog"))
        self._server = await serve(
            self._handler, host, port, process_request=self._process_request,
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
            try:
                await self._read(conn)
            except (OSError, RespError, ConnectionError) as exc:
                log.warning("fan-out: lost Redis (%s); reconnecting", exc)
            finally:
                self._redis_ready.clear()
                self._redis = None
                conn.close()
                for futs in self._acks.values():
                    for f in futs:
                        if not f.done():
                            f.set_result(None)
                self._acks.clear()

    async def _read(self, conn: RespConnection) -> None:
        plen = len(self.chan_prefix)
        while True:
            for item in await conn.read_push():
                if not isinstance(item, list) or not item:
                    continue
                kind = item[0]
                if kind == b"message":
                    chan, payload = item[1], item[2]
                    assert isinstance(chan, bytes) and isinstance(payload, bytes)
                    self._dispatch(chan[plen:].decode(), payload, False)
                elif kind == b"pmessage":
                    chan, payload = item[2], item[3]
                    assert isinstance(chan, bytes) and isinstance(payload, bytes)
                    self._dispatch(chan[plen:].decode(), payload, True)
                elif kind in (b"subscribe", b"psubscribe"):
                    ch = item[1]
                    assert isinstance(ch, bytes)
                    for f in self._acks.pop(ch, []):
                        if not f.done():
                            f.set_result(None)

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

    # -- dispatch ---------------------------------------------------------------------------
    def _dispatch(self, sym: str, payload: bytes, wildcard: bool) -> None:
        self.stats["received"] += 1
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
            if kind == "quotes":
                old = c.pending_q.get(sym)
                c.pending_q[sym] = payload
                c.buffered += size - (len(old) if old is not None else 0)
            else:
                c.queue.append(payload)
                c.buffered += size
            if c.buffered > max_buf:
                slow = [*(slow or []), c]
                continue
            c.event.set()
        for c in slow or ():
            self._slow(c)

    def _slow(self, c: Conn) -> None:
        if c.closed:
            return
        self.stats["slow_disconnects"] += 1
        self.stats["max_buffered"] = max(self.stats["max_buffered"], c.buffered)
        self._drop_subscriptions(c)
        c.closed = True
        c.pending_q.clear()
        c.queue.clear()
        c.buffered = 0
        if c.writer is not None:
            c.writer.cancel()
        asyncio.get_running_loop().create_task(self._close_slow(c))

    async def _close_slow(self, c: Conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send_raw(c, [_error(407)]), 2.0)
        with contextlib.suppress(Exception):
            await c.ws.close(1008, "407 slow client")

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for c in list(self.conns):
                if c.closed:
                    continue
                transport = c.ws.transport
                wbuf = transport.get_write_buffer_size() if transport is not None else 0
                total = c.buffered + wbuf
                if total > self.stats["max_buffered"]:
                    self.stats["max_buffered"] = total
                if total > self.max_buffer or (
                        c.send_started is not None and now - c.send_started > self.slow_timeout):
                    self._slow(c)

    async def _writer(self, c: Conn) -> None:
        while not c.closed:
            await c.event.wait()
            if self.flush_interval:
                await asyncio.sleep(self.flush_interval)
            c.event.clear()
            items = c.queue
            if c.pending_q:
                items = items + list(c.pending_q.values())
                c.pending_q = {}
            c.queue = []
            c.buffered = 0
            if not items:
                continue
            if c.binary:
                frame: bytes = msgpack.packb([self._mp(json.loads(m)) for m in items])
            else:
                frame = b"[" + b",".join(items) + b"]"
            c.send_started = time.monotonic()
            try:
                await c.ws.send(frame, text=not c.binary)
            except ConnectionClosed:
                return
            finally:
                c.send_started = None
            self.stats["delivered"] += len(items)
            self.stats["frames"] += 1

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
        chans = [self.chan_prefix + s.encode() for s in new_syms if s != "*"]
        await self._subscribe(chans)
        if "*" in new_syms:
            await self._subscribe([self.pattern], pattern=True)

    def _remove(self, c: Conn, removes: dict[str, list[str]]) -> None:
        for kind, syms in removes.items():
            c.subs[kind].difference_update(syms)
        still = c.symbols()
        gone = []
        for s in {s for syms in removes.values() for s in syms} - still:
            conns = self.local.get(s)
            if conns is None:
                continue
            conns.discard(c)
            c.pending_q.pop(s, None)
            if not conns:
                del self.local[s]
                gone.append(s)
        self._unsubscribe([self.chan_prefix + s.encode() for s in gone if s != "*"])
        if "*" in gone:
            self._unsubscribe([self.pattern], pattern=True)

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
        c = Conn(ws, "msgpack" in ctype)
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
            if not c.closed:
                c.closed = True
                self._drop_subscriptions(c)
            if c.writer is not None:
                c.writer.cancel()
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
        c.writer = asyncio.get_running_loop().create_task(self._writer(c))
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
        redis_backoff_max_s=settings.fanout_redis_backoff_max_s)


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
