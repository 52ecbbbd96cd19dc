"""Asyncio FIX 4.4 session layer (QuickFIX-compatible session rules): the session state machine.

Public API (kept stable for the execution gateway and the market maker simulators; all of it is
imported from here)::

    SessionConfig(sender_comp_id, target_comp_id, heartbeat_interval=30.0, logon_timeout=10.0,
                  max_clock_skew=120.0, reset_seq_on_logon=False,
                  reconnect_min_delay=0.2, reconnect_max_delay=5.0,
                  logout_timeout=2.0)                      # addition: wait for the Logout reply
    MessageHandler = Callable[[FixSession, simplefix.FixMessage], Awaitable[None]]
    FixSession
        config, store, logged_on: asyncio.Event
        async send(msg) -> int        # application message; returns its MsgSeqNum
        async logout(text="") -> None
        async wait_logged_on(timeout=None) -> None
        connected: bool               # addition: a TCP connection is attached
        async serve_connection(reader, writer, framer=None, first_message=None) -> bool
                                      # addition: run the session over one accepted/dialled
                                      # stream (used by FixInitiator/FixAcceptor)
    FixInitiator, FixAcceptor         # defined in fix/transport.py (API there), re-exported
    utc_timestamp() / parse_utc_timestamp()   # additions: FIX UTCTimestamp helpers
                                              # (fix/validation.py, re-exported)

Delivery contract: each inbound application message is handed to ``on_message`` in sequence
order; the next expected inbound sequence number is persisted only AFTER the handler returned.
If the handler raises, the error is logged, the number is not advanced, and the connection is
dropped so that the peer resends the message after the next logon (then with PossDupFlag=Y; the
handler deduplicates by its own business key, e.g. ExecID). Admin messages never reach the
handler.

Layout: the session state machine is :class:`FixSession`, in two files. This one holds its
state (sequence numbers persisted in the session store, the attached connection, per-connection
counters), the public API, the connection lifecycle, the timer (logon timeout, Heartbeat,
TestRequest on silence, silence and Logout-reply timeouts) and everything it sends (Logon,
Logout, Reject, ResendRequest, Heartbeat, application messages, resends). fix/inbound.py holds
its inbound half (:class:`fix.inbound.InboundRules`: Logon and Logout exchanges, sequence checks,
gap queueing, ResendRequest and SequenceReset handling, Rejects, delivery to the handler).
Neither opens a socket nor reads bytes: fix/transport.py owns the TCP side (the attached
:class:`fix.transport.Connection` with its reading and framing glue, dialing, accepting).
fix/resend.py builds the frames answering a ResendRequest; fix/validation.py holds the header
checks and the field helpers.

Deliberately not implemented: session schedules (start/end times), FIXT/other versions,
data-dictionary validation of application messages (bad fields, unknown MsgTypes and enums are
the handler's business), encryption, and Logon authentication beyond CompIDs.

HeartBtInt: the initiator sends ``ceil(heartbeat_interval)``. The acceptor echoes the value it
received; it uses its own (possibly fractional) ``heartbeat_interval`` when that rounds up to the
received value, otherwise the received value, so tests can run sub-second heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import simplefix

from fix.errors import FixError, SessionDisconnect
from fix.framing import FrameBuffer, encode
from fix.inbound import InboundRules
from fix.outbound import GroupCommit
from fix.resend import resend_frames
from fix.store import SessionStore, StagingStore
from fix.transport import Connection, FixAcceptor, FixInitiator
from fix.validation import ADMIN_MSG_TYPES, parse_utc_timestamp, utc_timestamp

__all__ = [
    "FixAcceptor",
    "FixInitiator",
    "FixSession",
    "MessageHandler",
    "SessionConfig",
    "parse_utc_timestamp",
    "utc_timestamp",
]

log = logging.getLogger("fix.session")

# Header fields the session owns; caller-supplied values for these are replaced.
_SESSION_TAGS = frozenset({b"8", b"9", b"10", b"34", b"35", b"43", b"49", b"52", b"56", b"122"})


@dataclass(frozen=True)
class SessionConfig:
    """Static configuration of one FIX session (one CompID pair)."""

    sender_comp_id: str
    target_comp_id: str
    heartbeat_interval: float = 30.0
    logon_timeout: float = 10.0
    max_clock_skew: float = 120.0
    reset_seq_on_logon: bool = False
    reconnect_min_delay: float = 0.2
    reconnect_max_delay: float = 5.0
    logout_timeout: float = 2.0


class FixSession(InboundRules):
    """One logical FIX session: sequence numbers, resend store, and the current connection.

    It survives many TCP connections; :class:`FixInitiator` / :class:`FixAcceptor` attach a
    connection with :meth:`serve_connection`. It does not open sockets itself. What it does with
    inbound messages is :class:`fix.inbound.InboundRules` (its mixin, in fix/inbound.py).
    """

    def __init__(
        self,
        config: SessionConfig,
        store: SessionStore,
        on_message: MessageHandler,
        *,
        initiator: bool,
        on_logon: Callable[[FixSession], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.logged_on = asyncio.Event()
        self._on_message = on_message
        self._on_logon = on_logon
        self._initiator = initiator
        self._sender = config.sender_comp_id.encode()
        self._target = config.target_comp_id.encode()
        self._name = f"{config.sender_comp_id}->{config.target_comp_id}"
        self._parser = simplefix.FixParser()
        self._conn: Connection | None = None
        # per-connection state, reset by _reset_connection_state()
        self._hb = config.heartbeat_interval
        self._queue: dict[int, simplefix.FixMessage] = {}
        self._resend_upto: int | None = None
        self._last_sent = 0.0
        self._last_recv = 0.0
        self._test_req_counter = 0
        self._logout_sent_at: float | None = None
        self._sent_reset = False
        # called on each inbound sequence gap (a ResendRequest goes out): the gateway counts them
        self.on_sequence_gap: Callable[[], None] | None = None
        # a store that commits in groups: application messages are committed off the loop
        # (fix/outbound.py); any other store keeps one synchronous write per message
        self._group = (GroupCommit(store, self._write_to, lambda: self._conn)
                       if isinstance(store, StagingStore) else None)

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True while a TCP connection is attached (logged on or not)."""
        return self._conn is not None

    async def send(self, msg: simplefix.FixMessage) -> int:
        """Send an application message; return its MsgSeqNum.

        The caller sets MsgType(35) and the body; the session fills BeginString, BodyLength,
        MsgSeqNum, Sender/TargetCompID, SendingTime and CheckSum, and persists the message before
        writing it. When not logged on, the message is only stored: the sequence number is
        consumed and the peer gets it through its ResendRequest after the next logon. Returns
        once the message is durable (and written); with a staging store, messages sent together
        share one commit, run off the event loop (fix/outbound.py).
        """
        msg_type = msg.message_type
        if not msg_type:
            raise FixError("MsgType(35) not set")
        if msg_type in ADMIN_MSG_TYPES:
            raise FixError(f"send() is for application messages, not MsgType {msg_type!r}")
        fields = [(t, v) for t, v in msg.pairs if t not in _SESSION_TAGS]
        conn = self._conn
        writable = (
            conn is not None and self.logged_on.is_set() and self._logout_sent_at is None
        )
        if self._group is not None:
            seq = self.store.next_sender_seq()
            raw = encode(self._header(msg_type, seq) + fields)
            await self._group.send(self._group.stage(seq, raw, conn if writable else None, wait=True))
        else:
            seq = self._send_fields(msg_type, fields, write=writable)
        if writable and conn is not None and not conn.closing:
            await conn.drain()
        return seq

    async def logout(self, text: str = "") -> None:
        """Send Logout, wait (bounded by ``logout_timeout``) for the reply, close the connection.

        Sequence numbers and stored messages are kept: the session continues on the next
        connection. A no-op when not connected.
        """
        conn = self._conn
        if conn is None:
            return
        if not self.logged_on.is_set():
            conn.close()
        elif self._logout_sent_at is None:
            self._send_logout(text)
            await conn.drain()
        if asyncio.current_task() is conn.task:
            # Called from inside our own handler: the read loop will see the reply; waiting here
            # would deadlock it.
            return
        try:
            await asyncio.wait_for(conn.done.wait(), self.config.logout_timeout)
        except TimeoutError:
            log.warning("%s: no Logout reply within %.1fs", self._name, self.config.logout_timeout)
            conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.done.wait(), 1.0)

    async def wait_logged_on(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until logged on (raises TimeoutError after ``timeout`` seconds)."""
        await asyncio.wait_for(self.logged_on.wait(), timeout)

    def __repr__(self) -> str:
        return f"<FixSession {self._name} logged_on={self.logged_on.is_set()}>"

    # ------------------------------------------------------------------ connection lifecycle

    async def serve_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: FrameBuffer | None = None,
        first_message: simplefix.FixMessage | None = None,
    ) -> bool:
        """Run the session over one TCP connection until it ends; return whether we logged on.

        The initiator sends its Logon first; the acceptor passes the peer's already-read Logon as
        ``first_message`` (and the framer holding any bytes read after it). Never raises for
        anything the peer does; only cancellation propagates.
        """
        if self._conn is not None:
            raise FixError(f"{self._name}: already connected")
        conn = Connection(reader, writer, framer or FrameBuffer(), asyncio.current_task())
        self._conn = conn
        self._reset_connection_state()
        timer = asyncio.create_task(self._timer(conn), name=f"fix-timer {self._name}")
        ever_logged_on = False
        try:
            if self._initiator:
                self._send_logon()
                await conn.drain()
            if first_message is not None:
                await self._handle_message(first_message)
            while not conn.closing:
                ever_logged_on |= self.logged_on.is_set()
                await self._process_buffered(conn)
                ever_logged_on |= self.logged_on.is_set()
                if conn.closing:
                    break
                if not await conn.receive():
                    log.info("%s: connection closed by peer", self._name)
                    break
        except SessionDisconnect:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection error: %r", self._name, exc)
        except Exception:
            # A bug or an unforeseen input must cost us a connection, never the process.
            log.exception("%s: unexpected error, dropping connection", self._name)
        finally:
            timer.cancel()
            ever_logged_on |= self.logged_on.is_set()
            self.logged_on.clear()
            self._conn = None
            self._queue.clear()
            self._resend_upto = None
            conn.close()
            conn.done.set()
            log.info("%s: disconnected", self._name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        return ever_logged_on

    def _reset_connection_state(self) -> None:
        self._hb = self.config.heartbeat_interval
        self._queue.clear()
        self._resend_upto = None
        now = time.monotonic()
        self._last_sent = now
        self._last_recv = now
        self._test_req_counter = 0
        self._logout_sent_at = None
        self._sent_reset = False

    async def _process_buffered(self, conn: Connection) -> None:
        while not conn.closing:
            msg = conn.next_message(self._parser, self._name)
            if msg is None:
                return
            await self._handle_message(msg)

    async def _timer(self, conn: Connection) -> None:
        """Logon timeout, Heartbeat, TestRequest, silence and logout-reply timeouts."""
        try:
            while not conn.closing:
                hb = self._hb
                tick = hb / 10.0 if hb > 0 else 1.0
                if not self.logged_on.is_set():
                    tick = min(tick, self.config.logon_timeout / 10.0)
                elif self._logout_sent_at is not None:
                    tick = min(tick, self.config.logout_timeout / 10.0)
                await asyncio.sleep(min(max(tick, 0.01), 1.0))
                if conn.closing:
                    return
                now = time.monotonic()
                if not self.logged_on.is_set():
                    if now - conn.started > self.config.logon_timeout:
                        log.warning("%s: no Logon within %.1fs", self._name,
                                    self.config.logon_timeout)
                        conn.close()
                    continue
                if (
                    self._logout_sent_at is not None
                    and now - self._logout_sent_at > self.config.logout_timeout
                ):
                    log.warning("%s: no Logout reply, disconnecting", self._name)
                    conn.close()
                    return
                if hb <= 0:
                    continue  # HeartBtInt=0: no heartbeats, no silence detection
                silence = now - self._last_recv
                if silence >= 2.4 * hb:
                    log.warning("%s: peer silent for %.2fs, disconnecting", self._name, silence)
                    conn.close()
                    return
                if silence >= 1.2 * hb * (self._test_req_counter + 1):
                    self._test_req_counter += 1
                    self._send_admin(b"1", [(b"112", f"TEST{int(time.time() * 1000)}".encode())])
                elif now - self._last_sent >= hb:
                    self._send_admin(b"0", [])
        except (ConnectionError, OSError) as exc:
            log.info("%s: timer: connection error %r", self._name, exc)
            conn.close()

    # ------------------------------------------------------------------ outbound

    def _header(self, msg_type: bytes, seq: int) -> list[tuple[bytes, bytes]]:
        return [
            (b"35", msg_type),
            (b"49", self._sender),
            (b"56", self._target),
            (b"34", str(seq).encode()),
            (b"52", utc_timestamp()),
        ]

    def _send_fields(
        self, msg_type: bytes, fields: list[tuple[bytes, bytes]], *, write: bool = True
    ) -> int:
        # No await between allocating, persisting and writing: this is atomic on the loop, so
        # sequence numbers hit the wire in order and the store is always ahead of the socket
        # (with a staging store: this commit takes every message staged before it, and they are
        # all written in order).
        seq = self.store.next_sender_seq()
        raw = encode(self._header(msg_type, seq) + fields)
        conn = self._conn
        if self._group is not None:
            self._group.stage(seq, raw, conn if write else None, wait=False)
            self._group.commit_now()
            return seq
        self.store.store_sent(seq, raw)
        if write and conn is not None and not conn.closing:
            self._write_to(conn, raw)
        return seq

    def _write_to(self, conn: Connection, raw: bytes) -> None:
        conn.write(raw)
        self._last_sent = time.monotonic()

    def _reset_store(self) -> None:
        """Both sequence numbers back to 1 (a ResetSeqNumFlag logon): what is staged is
        committed and released first."""
        if self._group is not None:
            self._group.reset()
        self.store.reset()

    def _send_admin(self, msg_type: bytes, fields: list[tuple[bytes, bytes]]) -> int:
        return self._send_fields(msg_type, fields, write=True)

    def _send_logon(self) -> None:
        fields = [(b"98", b"0"), (b"108", str(math.ceil(self._hb)).encode())]
        if self.config.reset_seq_on_logon:
            self._reset_store()
            self._sent_reset = True
            fields.append((b"141", b"Y"))
        self._send_admin(b"A", fields)

    def _send_logout(self, text: str = "") -> None:
        fields = [(b"58", text.encode())] if text else []
        self._send_admin(b"5", fields)
        self._logout_sent_at = time.monotonic()

    def _send_reject(
        self, ref_seq: int, ref_msg_type: bytes, reason: int, text: str, ref_tag: int | None
    ) -> None:
        fields = [(b"45", str(ref_seq).encode())]
        if ref_tag is not None:
            fields.append((b"371", str(ref_tag).encode()))
        if ref_msg_type:
            fields.append((b"372", ref_msg_type))
        fields += [(b"373", str(reason).encode()), (b"58", text.encode())]
        self._send_admin(b"3", fields)

    def _send_resend_request(self, begin: int) -> None:
        if self.on_sequence_gap is not None:
            self.on_sequence_gap()
        self._send_admin(b"2", [(b"7", str(begin).encode()), (b"16", b"0")])

    def _resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest: each frame fix/resend.py builds is written as it comes.
        With a staging store, only what was released is resent: a message staged but not
        released yet was never written, and goes out as an original once released (after the
        resent frames, which is its place in the numbering)."""
        if self._group is not None:
            last = self._group.released
            if last < max(begin, 1):
                log.info("%s: ResendRequest for nothing released yet (begin=%d)", self._name, begin)
                return
            end = last if end == 0 or end > last else end
        for raw in resend_frames(self.store, begin, end, self._header, self._name):
            self._write_raw(raw)

    def _write_raw(self, raw: bytes) -> None:
        conn = self._conn
        if conn is not None and not conn.closing:
            conn.write(raw)
            self._last_sent = time.monotonic()


MessageHandler = Callable[[FixSession, simplefix.FixMessage], Awaitable[None]]
