"""The client side of :mod:`bench.marketdata`: many Alpaca-stream clients on one event loop, light.

Each client is a minimal RFC 6455 client on an ``asyncio.Protocol``: the HTTP upgrade, masked
client frames (auth, subscribe, and a pong for every ping: the fan-out's flow control waits for
them), the server's unmasked frames parsed by hand. Every data frame is read whole; the quotes in
it are counted and the first three of each frame timed (receive time - ingest time ``it``), per
second of the wall clock.

Why not websockets' client (what the bench used before): with 10,000 connections on the bench's
2-core machine, websockets' client spent more CPU per frame than the fan-out spent writing it
(its frame parser, its message assembler, a task per connection), so the bench measured its own
clients. Real clients run elsewhere; this one keeps the protocol and costs a few microseconds per
frame. What the stream's wire shape is, with the real clients (alpaca-py, websockets), is what
tests/marketdata checks, not this.

What it deliberately does not do: TLS, compression, fragmented messages (the fan-out sends
none), the close handshake (a connection that closes just ends), reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import sys
from typing import Any, cast

IT_RE = re.compile(rb'"it":(\d+)')
MAX_LAGS_PER_S = 20_000  # timed quotes kept per second per process


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One masked client-to-server frame (RFC 6455 5.3), FIN set."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


class Buckets:
    """Per second of the wall clock: quotes received, a sample of their lags (seconds), frames."""

    def __init__(self) -> None:
        self.by_s: dict[int, list[Any]] = {}

    def add(self, data: bytes, now_ns: int) -> None:
        its = IT_RE.findall(data)
        if not its:
            return
        b = self.by_s.get(now_ns // 10**9)
        if b is None:
            b = self.by_s[now_ns // 10**9] = [0, [], 0]
        b[0] += len(its)
        b[2] += 1
        lags = b[1]
        if len(lags) < MAX_LAGS_PER_S:
            lags.extend((now_ns - int(x)) / 1e9 for x in its[:3])


class StreamClient(asyncio.Protocol):
    """One client: upgrade, auth, subscribe to ``symbols``' quotes, then count what arrives."""

    def __init__(self, host: str, port: int, key: str, symbols: list[str], buckets: Buckets,
                 clock: Any) -> None:
        self.host, self.port = host, port
        self.key = key
        self.symbols = symbols
        self.buckets = buckets
        self.clock = clock
        self.mask = os.urandom(4)
        self.buf = bytearray()
        self.upgraded = False
        self.step = 0  # 0: await "connected", 1: "authenticated", 2: "subscription", 3: streaming
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET /v2/iex HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.host.encode(), self.port, key))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)

    def _send_json(self, msg: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(0x1, json.dumps(msg).encode(), self.mask))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.upgraded = True
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            h = pos + 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[h:h + 2], "big")
                h += 2
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[h:h + 8], "big")
                h += 8
            if n < h + ln:
                break
            payload = bytes(buf[h:h + ln])
            pos = h + ln
            op = b0 & 0x0F
            if op == 0x9:  # ping: pong with the same payload (the fan-out's frame acknowledgement)
                assert self.transport is not None
                self.transport.write(client_frame(0xA, payload, self.mask))
            elif op in (0x0, 0x1, 0x2):
                self._message(payload)
            elif op == 0x8:
                assert self.transport is not None
                self.transport.close()
                break
        del buf[:pos]

    def _message(self, data: bytes) -> None:
        if self.step == 3:
            self.buckets.add(data, self.clock())
            return
        if self.step == 0 and b'"connected"' in data:
            self.step = 1
            self._send_json({"action": "auth", "key": self.key, "secret": "bench"})
        elif self.step == 1 and b'"authenticated"' in data:
            self.step = 2
            self._send_json({"action": "subscribe", "quotes": self.symbols})
        elif self.step == 2:
            if b'"T":"subscription"' in data:
                self.step = 3
                if not self.ready.done():
                    self.ready.set_result(True)
            else:  # quotes may come before the echo
                self.buckets.add(data, self.clock())


async def run_clients(port: int, n: int, seed: int, symbols: list[str], per_client: int) -> None:
    """The ``clients`` role: connect ``n`` clients, say ``READY <connected>``, count until a line
    on stdin, then print the buckets as one JSON line."""
    import time

    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    buckets = Buckets()
    clients: list[StreamClient] = []
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> bool:
        async with gate:
            try:
                _tr, c = await asyncio.wait_for(loop.create_connection(
                    lambda: StreamClient("127.0.0.1", port, f"k{seed}-{i}", rng.sample(symbols, per_client),
                                         buckets, time.time_ns), "127.0.0.1", port), 60)
            except (OSError, TimeoutError):
                return False
            clients.append(c)
        try:
            return await asyncio.wait_for(c.ready, 120)
        except TimeoutError:
            return False

    results = await asyncio.gather(*(one(i) for i in range(n)))
    print(f"READY {sum(results)}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    print(json.dumps({str(k): v for k, v in buckets.by_s.items()}), flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.abort()
