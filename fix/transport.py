"""TCP transport of the FIX session layer: connections, framing glue, initiator and acceptor.

Public API (re-exported by :mod:`fix.session`, where callers import it from)::

    FixInitiator(config, store, host, port, on_message)
        session; async start(); async stop()
        start() spawns the connect/reconnect loop and returns at once; use
        session.wait_logged_on() to wait for the first logon.
    FixAcceptor(host, port, sessions, on_message, on_logon=None)
        port; async start(); async stop(); session(peer_comp_id) -> FixSession
        session() raises fix.errors.UnknownSessionError (a KeyError) for unknown CompIDs.

What it does: :class:`Connection` is one TCP stream attached to a session (buffered writes, a
drain that turns a write failure into a close, a close that flushes then aborts after a grace
period, reading into a :class:`fix.framing.FrameBuffer` and handing out the next parseable
message, garbage logged and skipped). :class:`FixInitiator` dials, and redials with jittered
exponential backoff until stopped. :class:`FixAcceptor` listens, reads each connection's first
message and attaches the connection to the session its Logon names.

What it deliberately does not do: any session rule. Sequence numbers, Logon/Logout, heartbeats,
resends and rejects are :class:`fix.session.FixSession`'s; the initiator and the acceptor only
hand streams to :meth:`fix.session.FixSession.serve_connection` (the acceptor screens the first
message just enough to pick the session: BeginString, MsgType Logon, a known and unconnected
SenderCompID). No TLS, no session schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simplefix

from fix.errors import GarbledMessageError, UnknownSessionError
from fix.framing import BEGIN_STRING, FrameBuffer, parse_frame
from fix.store import SessionStore

if TYPE_CHECKING:
    from fix.session import FixSession, MessageHandler, SessionConfig

log = logging.getLogger("fix.session")  # the session's logger, as before the split

READ_SIZE = 1 << 16


@dataclass(eq=False)
class Connection:
    """One TCP stream attached to a session (``FixSession._conn`` while it lasts)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framer: FrameBuffer
    task: asyncio.Task[object] | None
    started: float = field(default_factory=time.monotonic)
    closing: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            # The message is already stored; it reaches the peer via resend after reconnect.
            log.info("write failed: %r", exc)
            self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            # close() flushes what is buffered (e.g. a final Logout) before closing the socket;
            # it also wakes the read loop with EOF. A peer that never reads would keep the
            # flush pending forever, hence the abort after a grace period.
            self.writer.close()
            transport = self.writer.transport
            asyncio.get_running_loop().call_later(1.0, transport.abort)

    async def receive(self) -> bool:
        """Read what the peer sent next into the framer; False at the end of the stream."""
        data = await self.reader.read(READ_SIZE)
        if not data:
            return False
        self.framer.feed(data)
        return True

    def next_message(
        self, parser: simplefix.FixParser, name: str
    ) -> simplefix.FixMessage | None:
        """The next complete, parseable message buffered (garbage is logged and skipped)."""
        while True:
            try:
                frame = self.framer.next_frame()
            except GarbledMessageError as exc:
                log.warning("%s: dropped garbled data (%s): %r", name, exc.reason,
                            exc.data[:200])
                continue
            if frame is None:
                return None
            try:
                return parse_frame(frame, parser)
            except GarbledMessageError as exc:
                log.warning("%s: dropped garbled message (%s)", name, exc.reason)


class FixInitiator:
    """Client side: connects, logs on, and reconnects with exponential backoff until stopped."""

    def __init__(
        self,
        config: SessionConfig,
        store: SessionStore,
        host: str,
        port: int,
        on_message: MessageHandler,
    ) -> None:
        from fix.session import FixSession  # fix.session imports this module

        self.host = host
        self.port = port
        self.session = FixSession(config, store, on_message, initiator=True)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Spawn the connect/logon/reconnect loop and return immediately."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"fix-initiator {self.session!r}")

    async def stop(self) -> None:
        """Logout (if logged on), close the connection, and end the reconnect loop."""
        self._stopping = True
        await self.session.logout("shutting down")
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            try:
                # connected: let the loop notice _stopping; otherwise it is sleeping or dialing
                timeout = 1.0 if self.session.connected else 0.0
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        elif not task.cancelled() and task.exception() is not None:
            log.error("initiator loop had failed: %r", task.exception())

    async def _run(self) -> None:
        cfg = self.session.config
        delay = cfg.reconnect_min_delay
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.info("%r: connect to %s:%d failed: %r", self.session, self.host, self.port,
                         exc)
            else:
                if await self.session.serve_connection(reader, writer):
                    delay = cfg.reconnect_min_delay
            if self._stopping:
                break
            # jitter so a fleet of gateways does not reconnect in lockstep
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))
            delay = min(delay * 2, cfg.reconnect_max_delay)


class FixAcceptor:
    """Server side: accepts TCP connections and attaches each to the session its Logon names.

    ``sessions`` is keyed by the peer's SenderCompID. A connection whose first valid message is
    not a Logon, names an unknown CompID, or arrives while that session is already connected is
    closed without a reply.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sessions: dict[str, tuple[SessionConfig, SessionStore]],
        on_message: MessageHandler,
        on_logon: Callable[[FixSession], Awaitable[None]] | None = None,
    ) -> None:
        from fix.session import FixSession  # fix.session imports this module

        self.host = host
        self.port = port
        self._sessions = {
            peer: FixSession(cfg, store, on_message, initiator=False, on_logon=on_logon)
            for peer, (cfg, store) in sessions.items()
        }
        timeouts = [cfg.logon_timeout for cfg, _ in sessions.values()]
        self._logon_timeout = min(timeouts) if timeouts else 10.0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    def session(self, peer_comp_id: str) -> FixSession:
        try:
            return self._sessions[peer_comp_id]
        except KeyError:
            raise UnknownSessionError(peer_comp_id) from None

    async def start(self) -> None:
        """Bind ``host:port`` and start accepting; ``self.port`` becomes the bound port."""
        self._server = await asyncio.start_server(self._on_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FIX acceptor listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, log out every connected session, close everything."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(
            *(s.logout("shutting down") for s in self._sessions.values()),
            return_exceptions=True,
        )
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)  # type: ignore[arg-type]
        try:
            await self._handle_client(reader, writer)
        except Exception:
            log.exception("acceptor: unexpected error on a connection")
        finally:
            self._clients.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        framer = FrameBuffer()
        try:
            first = await asyncio.wait_for(_read_first_message(reader, framer),
                                           self._logon_timeout)
        except TimeoutError:
            log.warning("acceptor: %s sent no Logon within %.1fs", peername, self._logon_timeout)
            return
        except (ConnectionError, OSError):
            return
        if first is None:
            return
        if first.begin_string != BEGIN_STRING:
            log.warning("acceptor: %s: wrong BeginString %r", peername, first.begin_string)
            return
        if first.message_type != b"A":
            log.warning("acceptor: %s: first message is not a Logon (35=%r)", peername,
                        first.message_type)
            return
        peer = (first.get(49) or b"").decode(errors="replace")
        session = self._sessions.get(peer)
        if session is None:
            log.warning("acceptor: %s: unknown SenderCompID %r", peername, peer)
            return
        if session.connected:
            log.warning("acceptor: %s: session %r already connected, refusing duplicate",
                        peername, peer)
            return
        await session.serve_connection(reader, writer, framer, first)


async def _read_first_message(
    reader: asyncio.StreamReader, framer: FrameBuffer
) -> simplefix.FixMessage | None:
    """Read until the first valid message (garbage is skipped); None on EOF."""
    while True:
        while True:
            try:
                frame = framer.next_frame()
            except GarbledMessageError as exc:
                log.warning("acceptor: dropped garbled data before Logon (%s)", exc.reason)
                continue
            if frame is None:
                break
            try:
                return parse_frame(frame)
            except GarbledMessageError as exc:
                log.warning("acceptor: dropped garbled message before Logon (%s)", exc.reason)
        data = await reader.read(READ_SIZE)
        if not data:
            return None
        framer.feed(data)
