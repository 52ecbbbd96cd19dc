"""The feed's TCP listener: the exchange feed's line protocol, complete lines to a ``process``.

What it does: :class:`FeedListener` (one home for :class:`marketdata.ingest.Ingest` and
:class:`marketdata.ingest_workers.IngestRouter`) listens on a TCP port and hands each
connection's complete lines, a read's worth at a time, to its ``process``; a connection that
sends 1 MiB without a newline is not the feed and is closed (bounded input).

What it deliberately does not do: parse or check lines (``process`` does), or close anything
but the listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("marketdata.ingest")


class FeedListener:
    """The feed's TCP listener (one home for :class:`Ingest` and
    :class:`marketdata.ingest_workers.IngestRouter`): each connection's lines go to ``process``.
    It does not process lines itself nor close anything but the listener."""

    _server: asyncio.Server | None = None

    async def process(self, lines: list[bytes]) -> int:
        raise NotImplementedError

    async def serve_tcp(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(lambda r, w: read_feed(r, w, self.process), host, port,
                                                  limit=1 << 20)
        return self._server

    async def stop_listening(self) -> None:
        """Stop accepting the feed (connections already open end with the process's loop)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def read_feed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    process: Callable[[list[bytes]], Awaitable[int]]) -> None:
    """One feed connection: its complete lines, a read's worth at a time, to ``process``."""
    rest = b""
    try:
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > 1 << 20:  # no line is that long: not the feed protocol
                    log.warning("feed connection sent 1 MiB without a newline: closed")
                    break
                rest = data
                continue
            rest = data[cut + 1:]
            await process(data[:cut].split(b"\n"))
    except (ConnectionError, OSError) as exc:
        log.info("feed connection lost: %s", exc)
    finally:
        writer.close()
