"""The Alpaca v2 stock stream protocol on one fan-out connection (auth, subscribe, errors).

Protocol (Alpaca's market-data stream v2):

* on connect ``[{"T":"success","msg":"connected"}]``; ``{"action":"auth","key","secret"}`` (an
  account API key id/secret, checked against the directory DB; a success is cached for 60 s) ->
  ``[{"T":"success","msg":"authenticated"}]``; ``{"action":"subscribe"|"unsubscribe","trades",
  "quotes","bars","updatedBars","dailyBars","statuses"}`` (``"*"`` = every symbol) -> the full
  subscription ``[{"T":"subscription",...}]`` (``lulds``, ``corrections``, ``cancelErrors``
  always empty). Channels this feed lacks (``lulds``, ``orderbooks``, ``corrections``,
  ``cancelErrors``, ``imbalances``) are ignored when named beside channels it has: alpaca-py
  sends every channel it has a handler for in one message.
* errors ``[{"T":"error","code","msg"}]``: 400 invalid syntax, 401 not authenticated, 402 auth
  failed (then closed), 403 already authenticated, 404 auth timeout (closed), 405 symbol limit
  exceeded (subscriptions unchanged), 406 connection limit exceeded (closed), 407 slow client
  (closed), 409 insufficient subscription (a symbol list that is not a list of symbols),
  410 invalid subscribe action for this feed (a command naming only channels it lacks, e.g.
  ``lulds``), 500 internal error.
* JSON text frames, or msgpack binary frames for clients that send ``Content-Type:
  application/msgpack``.

What it does: :func:`handle_connection` is the websockets handler of one client connection, from
accept to close: the connection limits (per process, per API key), the greeting, auth (with a
deadline; :class:`CachedAuthenticator` remembers successes), then each command, validated and
answered. :class:`Conn` is a connection's state: its protocol part (identity, subscriptions) is
kept here, its delivery part (queue, conflated quotes, frame window) by the server.
:class:`FanoutConnection` is websockets' connection with the pongs that acknowledge frames routed
to the server.

What it deliberately does not do: deliver market data (the server's flusher writes data frames
straight to the transport: :mod:`marketdata.fanout`), keep the symbol -> connections maps or
talk to Redis (the server does, through :mod:`marketdata.subscriber`, when a subscription
changes), or encode data frames (:mod:`marketdata.frames`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from marketdata.frames import ACK_TAG, encode_messages

if TYPE_CHECKING:
    from marketdata.fanout import FanoutServer

log = logging.getLogger("marketdata.fanout")  # the fan-out's logger, as before the split

KINDS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses")
# channels of Alpaca's stock stream this feed lacks: named among others they are ignored (alpaca-py
# sends every channel it has handlers for in one message); named alone they are refused (410)
UNSUPPORTED = ("lulds", "orderbooks", "corrections", "cancelErrors", "imbalances")
ECHOED_EMPTY = ("lulds", "corrections", "cancelErrors")  # in every subscription echo, as Alpaca's
MSGS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
        403: "already authenticated", 404: "auth timeout", 405: "symbol limit exceeded",
        406: "connection limit exceeded", 407: "slow client", 409: "insufficient subscription",
        410: "invalid subscribe action for this feed", 500: "internal error"}

Authenticator = Callable[[str, str], Awaitable[str | None]]


def error(code: int) -> dict[str, Any]:
    return {"T": "error", "code": code, "msg": MSGS[code]}


class FanoutConnection(ServerConnection):
    """websockets' server connection; pongs answering the fan-out's frame pings acknowledge frames."""

    fo_conn: Conn | None = None

    def acknowledge_pings(self, data: bytes) -> None:
        c = self.fo_conn
        if c is not None and len(data) == 6 and data[:2] == ACK_TAG:
            c.server.acked(c, int.from_bytes(data[2:], "big"))
            return
        super().acknowledge_pings(data)


class Conn:
    """One client connection's state: protocol part kept here, delivery part by the server."""

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
        # per channel of qchans, the quote payload last sent (or the newest at subscribe time)
        self.sent: list[bytes | None] = []
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

    async def send(self, msgs: list[dict[str, Any]]) -> None:
        """Control messages (success, error, subscription) through websockets."""
        await self.ws.send(encode_messages(self.binary, msgs))


class CachedAuthenticator:
    """An :data:`Authenticator` whose successes are remembered for 60 s (key id + secret hash)."""

    def __init__(self, authenticate: Authenticator) -> None:
        self.authenticate = authenticate
        self._auth_cache: dict[tuple[str, bytes], tuple[str, float]] = {}

    async def __call__(self, key: str, secret: str) -> str | None:
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


async def handle_connection(server: FanoutServer, ws: ServerConnection) -> None:
    """The websockets handler of one client connection, from accept to close."""
    ctype = (ws.request.headers.get("Content-Type", "") if ws.request else "").lower()
    c = Conn(server, ws, "msgpack" in ctype)
    if len(server.conns) >= server.max_connections:
        with contextlib.suppress(ConnectionClosed):
            await c.send([error(406)])
            await ws.close(1008, "406 connection limit exceeded")
        return
    server.conns.add(c)
    server.stats["connections"] += 1
    try:
        await c.send([{"T": "success", "msg": "connected"}])
        await _session(server, c)
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("fan-out connection failed")
        with contextlib.suppress(Exception):
            await c.send([error(500)])
    finally:
        server.conns.discard(c)
        server.open.discard(c)
        server.ready.discard(c)
        if not c.closed:
            c.closed = True
            server.drop_subscriptions(c)
        if c.identity is not None:
            server.per_key[c.identity] -= 1
            if not server.per_key[c.identity]:
                del server.per_key[c.identity]


def _decode(c: Conn, raw: str | bytes) -> Any:
    if isinstance(raw, bytes) and c.binary:
        return msgpack.unpackb(raw)
    return json.loads(raw)


async def _session(server: FanoutServer, c: Conn) -> None:
    ws = c.ws
    deadline = time.monotonic() + server.auth_timeout
    while c.identity is None:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await c.send([error(404)])
            await ws.close(1008, "404 auth timeout")
            return
        msg = _parse(c, raw)
        if msg is None:
            await c.send([error(400)])
            continue
        if msg.get("action") != "auth":
            await c.send([error(401)])
            continue
        key, secret = msg.get("key"), msg.get("secret")
        ident = await server.auth(key, secret) if isinstance(key, str) and isinstance(secret, str) \
            else None
        if ident is None:
            await c.send([error(402)])
            await ws.close(1008, "402 auth failed")
            return
        if server.max_per_key and server.per_key.get(ident, 0) >= server.max_per_key:
            await c.send([error(406)])
            await ws.close(1008, "406 connection limit exceeded")
            return
        c.identity = ident
        server.per_key[ident] = server.per_key.get(ident, 0) + 1
        await c.send([{"T": "success", "msg": "authenticated"}])
    if isinstance(ws, FanoutConnection):
        ws.fo_conn = c
    server.open.add(c)
    async for raw in ws:
        if c.closed:
            return
        msg = _parse(c, raw)
        if msg is None:
            await c.send([error(400)])
            continue
        action = msg.get("action")
        if action == "auth":
            await c.send([error(403)])
        elif action in ("subscribe", "unsubscribe"):
            code, lists = parse_lists(msg)
            if code:
                await c.send([error(code)])
                continue
            if action == "subscribe":
                total = c.symbols() | {s for syms in lists.values() for s in syms}
                if len(total) > server.max_symbols:
                    await c.send([error(405)])
                    continue
                await server.add_subscriptions(c, lists)
            else:
                server.remove_subscriptions(c, lists)
            if not c.closed:
                await c.send([subscription_msg(c)])
        else:
            await c.send([error(400)])


def _parse(c: Conn, raw: str | bytes) -> dict[str, Any] | None:
    try:
        msg = _decode(c, raw)
    except (ValueError, msgpack.UnpackException, TypeError):
        return None
    return msg if isinstance(msg, dict) else None


def parse_lists(msg: dict[str, Any]) -> tuple[int, dict[str, list[str]]]:
    """The symbol lists of a (un)subscribe command, upper-cased; or an error code (409, 410).

    Channels this feed lacks (``UNSUPPORTED``) are ignored when the command names any channel it
    has, and refused (410) when they are all it names."""
    if any(k in msg for k in UNSUPPORTED) and not any(k in msg for k in KINDS):
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


def subscription_msg(c: Conn) -> dict[str, Any]:
    return {"T": "subscription", **{k: sorted(c.subs[k]) for k in KINDS},
            **{k: [] for k in ECHOED_EMPTY}}
