"""A minimal Redis (RESP2) client for the market-data hot path: pipelined writes and a pub/sub
reader, both on plain asyncio streams.

redis-py spends several microseconds per command packing and parsing; ingest publishes 100,000
messages a second and a fan-out process reads as many, so both speak the protocol directly here.
Everything else (REST, tests, the write path) uses redis-py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import unquote, urlparse


class RespError(Exception):
    """An error reply from Redis or a broken connection."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None


def parse_redis_url(url: str) -> RedisAddress:
    u = urlparse(url)
    if u.scheme not in ("redis", ""):
        raise ValueError(f"unsupported Redis URL scheme: {url}")
    db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() else 0
    return RedisAddress(u.hostname or "127.0.0.1", u.port or 6379, db,
                        unquote(u.username) if u.username else None,
                        unquote(u.password) if u.password else None)


def _b(x: bytes | str | int | float) -> bytes:
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def encode(*args: bytes | str | int | float) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _b(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def encode_publish(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(payload), payload)


Reply = bytes | int | list["Reply"] | RespError | None


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Reply, int] | None:
    """Parse one reply at ``pos``; None if ``buf`` does not hold all of it yet."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos]
    line = bytes(buf[pos + 1:end])
    nxt = end + 2
    if kind == 43:  # '+'
        return line, nxt
    if kind == 45:  # '-'
        return RespError(line.decode(errors="replace")), nxt
    if kind == 58:  # ':'
        return int(line), nxt
    if kind == 36:  # '$'
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            return None
        return bytes(buf[nxt:nxt + n]), nxt + n + 2
    if kind == 42:  # '*'
        n = int(line)
        if n < 0:
            return None, nxt
        items: list[Reply] = []
        for _ in range(n):
            r = parse_reply(buf, nxt)
            if r is None:
                return None
            item, nxt = r
            items.append(item)
        return items, nxt
    raise RespError(f"protocol error: unexpected byte {kind!r}")


class RespConnection:
    """One connection; :meth:`pipeline` writes many commands and reads all their replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = bytearray()

    @classmethod
    async def connect(cls, url: str, *, connect_timeout: float = 2.0,
                      select_db: bool = True) -> RespConnection:
        addr = parse_redis_url(url)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr.host, addr.port, limit=1 << 22), connect_timeout)
        conn = cls(reader, writer)
        setup: list[bytes] = []
        if addr.password is not None:
            setup.append(encode("AUTH", *([addr.username] if addr.username else []), addr.password))
        if select_db and addr.db:
            setup.append(encode("SELECT", addr.db))
        if setup:
            for r in await asyncio.wait_for(conn.pipeline(setup), connect_timeout):
                if isinstance(r, RespError):
                    conn.close()
                    raise r
        return conn

    async def pipeline(self, commands: list[bytes]) -> list[Reply]:
        """Send encoded commands in one write; return their replies (errors as RespError values)."""
        if not commands:
            return []
        self.writer.write(b"".join(commands))
        return await self.read_replies(len(commands))

    async def read_replies(self, n: int) -> list[Reply]:
        out: list[Reply] = []
        buf = self._buf
        pos = 0
        while len(out) < n:
            r = parse_reply(buf, pos) if pos < len(buf) else None
            if r is None:
                del buf[:pos]
                pos = 0
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    raise RespError("connection closed by Redis")
                buf += chunk
                continue
            item, pos = r
            out.append(item)
        del buf[:pos]
        return out

    async def read_push(self) -> list[Reply]:
        """Read every complete push message available (waits for at least one)."""
        buf = self._buf
        while True:
            out: list[Reply] = []
            pos = 0
            while pos < len(buf):
                r = parse_reply(buf, pos)
                if r is None:
                    break
                item, pos = r
                out.append(item)
            del buf[:pos]
            if out:
                return out
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                raise RespError("connection closed by Redis")
            buf += chunk

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ConnectionError):
            pass
