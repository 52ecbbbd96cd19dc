"""Asyncio FIX 4.4 session layer (QuickFIX-compatible session rules).

Public API (kept stable for the execution gateway and the market maker simulators)::

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
    FixInitiator(config, store, host, port, on_message)
        session; async start(); async stop()
        start() spawns the connect/reconnect loop and returns at once; use
        session.wait_logged_on() to wait for the first logon.
    FixAcceptor(host, port, sessions, on_message, on_logon=None)
        port; async start(); async stop(); session(peer_comp_id) -> FixSession
        session() raises fix.errors.UnknownSessionError (a KeyError) for unknown CompIDs.
    utc_timestamp() / parse_utc_timestamp()   # additions: FIX UTCTimestamp helpers

Delivery contract: each inbound application message is handed to ``on_message`` in sequence
order; the next expected inbound sequence number is persisted only AFTER the handler returned.
If the handler raises, the error is logged, the number is not advanced, and the connection is
dropped so that the peer resends the message after the next logon (then with PossDupFlag=Y; the
handler deduplicates by its own business key, e.g. ExecID). Admin messages never reach the
handler.

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
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simplefix

from fix.errors import (
    FixError,
    GarbledMessageError,
    SessionDisconnect,
    SessionRejectError,
    UnknownSessionError,
)
from fix.framing import BEGIN_STRING, FrameBuffer, encode, parse_frame
from fix.store import SessionStore

__all__ = [
    "FixAcceptor",
    "FixInitiator",
    "FixSession",
    "MessageHandler",
    "SessionConfig",
]

log = logging.getLogger("fix.session")

ADMIN_MSG_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})
# Header fields the session owns; caller-supplied values for these are replaced.
_SESSION_TAGS = frozenset({b"8", b"9", b"10", b"34", b"35", b"43", b"49", b"52", b"56", b"122"})
_MAX_QUEUED = 10_000
_READ_SIZE = 1 << 16

# SessionRejectReason(373) values we use
REJECT_REQUIRED_TAG_MISSING = 1
REJECT_VALUE_INCORRECT = 5
REJECT_INCORRECT_DATA_FORMAT = 6
REJECT_COMPID_PROBLEM = 9
REJECT_SENDING_TIME_ACCURACY = 10


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


class FixSession:
    """One logical FIX session: sequence numbers, resend store, and the current connection.

    It survives many TCP connections; :class:`FixInitiator` / :class:`FixAcceptor` attach a
    connection with :meth:`serve_connection`. It does not open sockets itself.
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
        self._conn: _Connection | None = None
        # per-connection state, reset by _reset_connection_state()
        self._hb = config.heartbeat_interval
        self._queue: dict[int, simplefix.FixMessage] = {}
        self._resend_upto: int | None = None
        self._last_sent = 0.0
        self._last_recv = 0.0
        self._test_req_counter = 0
        self._logout_sent_at: float | None = None
        self._sent_reset = False

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
        consumed and the peer gets it through its ResendRequest after the next logon.
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
        seq = self._send_fields(msg_type, fields, write=writable)
        if writable and conn is not None:
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
        conn = _Connection(reader, writer, framer or FrameBuffer(), asyncio.current_task())
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
                data = await reader.read(_READ_SIZE)
                if not data:
                    log.info("%s: connection closed by peer", self._name)
                    break
                conn.framer.feed(data)
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

    async def _process_buffered(self, conn: _Connection) -> None:
        while not conn.closing:
            try:
                frame = conn.framer.next_frame()
            except GarbledMessageError as exc:
                log.warning("%s: dropped garbled data (%s): %r", self._name, exc.reason,
                            exc.data[:200])
                continue
            if frame is None:
                return
            try:
                msg = parse_frame(frame, self._parser)
            except GarbledMessageError as exc:
                log.warning("%s: dropped garbled message (%s)", self._name, exc.reason)
                continue
            await self._handle_message(msg)

    async def _timer(self, conn: _Connection) -> None:
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
        # sequence numbers hit the wire in order and the store is always ahead of the socket.
        seq = self.store.next_sender_seq()
        raw = encode(self._header(msg_type, seq) + fields)
        self.store.store_sent(seq, raw)
        conn = self._conn
        if write and conn is not None and not conn.closing:
            conn.write(raw)
            self._last_sent = time.monotonic()
        return seq

    def _send_admin(self, msg_type: bytes, fields: list[tuple[bytes, bytes]]) -> int:
        return self._send_fields(msg_type, fields, write=True)

    def _send_logon(self) -> None:
        fields = [(b"98", b"0"), (b"108", str(math.ceil(self._hb)).encode())]
        if self.config.reset_seq_on_logon:
            self.store.reset()
            self._sent_reset = True
            fields.append((b"141", b"Y"))
        self._send_admin(b"A", fields)

    def _send_logout(self, text: str = "") -> None:
        fields = [(b"58", text.encode())] if text else []
        self._send_admin(b"5", fields)
        self._logout_sent_at = time.monotonic()

    async def _logout_and_disconnect(self, text: str) -> None:
        log.warning("%s: logout: %s", self._name, text)
        if self._logout_sent_at is None:
            self._send_logout(text)
        if self._conn is not None:
            await self._conn.drain()
        raise SessionDisconnect(text)

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
        self._send_admin(b"2", [(b"7", str(begin).encode()), (b"16", b"0")])

    def _resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest: app messages again with PossDupFlag=Y, admin runs gap-filled."""
        last = self.store.next_sender_seq() - 1
        if end == 0 or end > last:
            end = last
        begin = max(begin, 1)
        if begin > end:
            log.info("%s: ResendRequest for nothing (begin=%d, last sent=%d)", self._name,
                     begin, last)
            return
        log.info("%s: resending %d..%d", self._name, begin, end)
        gap_start = begin  # first number not yet covered by a resend or a gap fill
        for seq, raw in self.store.get_sent(begin, end):
            try:
                msg = parse_frame(raw)
            except GarbledMessageError:
                log.error("%s: stored message %d unreadable, gap-filling it", self._name, seq)
                continue
            if msg.message_type in ADMIN_MSG_TYPES:
                continue
            if gap_start < seq:
                self._write_gap_fill(gap_start, seq)
            self._write_resent(seq, msg)
            gap_start = seq + 1
        if gap_start <= end:
            self._write_gap_fill(gap_start, end + 1)

    def _write_gap_fill(self, seq: int, new_seq: int) -> None:
        now = utc_timestamp()
        pairs = self._header(b"4", seq)
        pairs[4] = (b"52", now)
        pairs += [(b"43", b"Y"), (b"122", now), (b"123", b"Y"), (b"36", str(new_seq).encode())]
        self._write_raw(encode(pairs))

    def _write_resent(self, seq: int, msg: simplefix.FixMessage) -> None:
        orig = msg.get(52) or utc_timestamp()
        pairs: list[tuple[bytes, bytes]] = []
        for tag, value in msg.pairs:
            if tag in (b"8", b"9", b"10", b"43", b"122"):
                continue
            if tag == b"52":
                pairs += [(b"52", utc_timestamp()), (b"43", b"Y"), (b"122", orig)]
            else:
                pairs.append((tag, value))
        self._write_raw(encode(pairs))

    def _write_raw(self, raw: bytes) -> None:
        conn = self._conn
        if conn is not None and not conn.closing:
            conn.write(raw)
            self._last_sent = time.monotonic()

    # ------------------------------------------------------------------ inbound

    async def _handle_message(self, msg: simplefix.FixMessage) -> None:
        self._last_recv = time.monotonic()
        self._test_req_counter = 0
        msg_type: bytes = msg.message_type or b""
        if msg.begin_string != BEGIN_STRING:
            if not self.logged_on.is_set():
                log.warning("%s: wrong BeginString %r before logon", self._name,
                            msg.begin_string)
                raise SessionDisconnect("wrong BeginString")
            await self._logout_and_disconnect("Incorrect BeginString")
        seq = _int_field(msg, 34)
        if seq is None or seq < 1:
            await self._logout_and_disconnect("Received message without valid MsgSeqNum")
            return
        if not self.logged_on.is_set():
            if msg_type == b"5":
                log.warning("%s: Logout before logon completed: %s", self._name,
                            (msg.get(58) or b"").decode(errors="replace"))
                raise SessionDisconnect("logout during logon")
            if msg_type != b"A":
                log.warning("%s: first message is not a Logon (35=%r), disconnecting",
                            self._name, msg_type)
                raise SessionDisconnect("first message not Logon")
            await self._handle_logon(msg, seq)
            return
        if msg_type == b"5":
            await self._handle_logout(msg, seq)
            return
        try:
            self._check_header(msg)
        except SessionRejectError as exc:
            await self._reject(msg, seq, exc)
            return
        if msg_type == b"2":
            await self._handle_resend_request(msg, seq)
            return
        if msg_type == b"4" and msg.get(123) != b"Y":
            await self._handle_sequence_reset(msg, seq)
            return
        expected = self.store.next_target_seq()
        if seq > expected:
            self._queue_and_request(seq, msg)
        elif seq < expected:
            await self._too_low(msg, seq, expected)
        else:
            await self._dispatch_checked(msg, seq)
            await self._drain_queue()

    async def _handle_logon(self, msg: simplefix.FixMessage, seq: int) -> None:
        try:
            self._check_header(msg)
        except SessionRejectError as exc:
            exc.logout = True  # a Logon we cannot accept always ends the connection
            await self._reject(msg, seq, exc)
            return
        hb = _int_field(msg, 108)
        if hb is None or hb < 0:
            await self._logout_and_disconnect("HeartBtInt(108) missing or invalid")
            return
        reset = msg.get(141) == b"Y"
        if self._initiator:
            if reset and not self._sent_reset:
                # peer reset on its own: its numbering restarts at 1
                self.store.set_next_target_seq(1)
        else:
            if reset:
                if seq != 1:
                    await self._logout_and_disconnect("ResetSeqNumFlag=Y with MsgSeqNum != 1")
                    return
                self.store.reset()
            elif self.config.reset_seq_on_logon:
                self.store.reset()
                self.store.set_next_target_seq(seq)
            if hb > 0:
                own = self.config.heartbeat_interval
                self._hb = own if math.ceil(own) == hb else float(hb)
        expected = self.store.next_target_seq()
        if seq < expected:
            await self._logout_and_disconnect(
                f"MsgSeqNum too low, expecting {expected} but received {seq}"
            )
            return
        if not self._initiator:
            fields = [(b"98", b"0"), (b"108", str(hb).encode())]
            if reset or self.config.reset_seq_on_logon:
                fields.append((b"141", b"Y"))
            self._send_admin(b"A", fields)
        self.logged_on.set()
        log.info("%s: logged on (in %d, out %d)", self._name, seq,
                 self.store.next_sender_seq() - 1)
        if seq > expected:
            self._queue_and_request(seq, msg)
        else:
            self.store.set_next_target_seq(seq + 1)
        if self._on_logon is not None:
            try:
                await self._on_logon(self)
            except Exception:
                log.exception("%s: on_logon callback failed", self._name)
        await self._drain_queue()

    async def _handle_logout(self, msg: simplefix.FixMessage, seq: int) -> None:
        if seq == self.store.next_target_seq():
            self.store.set_next_target_seq(seq + 1)
        text = (msg.get(58) or b"").decode(errors="replace")
        if self._logout_sent_at is not None:
            log.info("%s: Logout confirmed by peer %s", self._name, text)
        else:
            log.info("%s: peer logged out: %s", self._name, text)
            self._send_logout()
            if self._conn is not None:
                await self._conn.drain()
        raise SessionDisconnect("logout")

    async def _handle_resend_request(self, msg: simplefix.FixMessage, seq: int) -> None:
        expected = self.store.next_target_seq()
        if seq < expected:
            await self._too_low(msg, seq, expected)
            return
        begin = _int_field(msg, 7)
        end = _int_field(msg, 16)
        if begin is None or end is None:
            await self._reject(
                msg, seq, SessionRejectError(REJECT_REQUIRED_TAG_MISSING, "Required tag missing",
                                             ref_tag=7 if begin is None else 16)
            )
            return
        # Answered at once even if its own number is too high, so that two sides with gaps
        # (simultaneous resend requests) do not wait on each other.
        self._resend(begin, end)
        if seq == expected:
            self.store.set_next_target_seq(seq + 1)
            await self._drain_queue()
        else:
            self._queue_and_request(seq, msg)

    async def _handle_sequence_reset(self, msg: simplefix.FixMessage, seq: int) -> None:
        """SequenceReset in reset mode: no sequence checks; NewSeqNo may only move forward."""
        new_seq = _int_field(msg, 36)
        if new_seq is None:
            await self._reject(msg, seq, SessionRejectError(
                REJECT_REQUIRED_TAG_MISSING, "Required tag missing", ref_tag=36))
            return
        expected = self.store.next_target_seq()
        if new_seq > expected:
            log.info("%s: SequenceReset %d -> %d", self._name, expected, new_seq)
            self.store.set_next_target_seq(new_seq)
            await self._drain_queue()
        elif new_seq == expected:
            log.warning("%s: SequenceReset to the expected number %d, ignored", self._name,
                        new_seq)
        else:
            await self._reject(msg, seq, SessionRejectError(
                REJECT_VALUE_INCORRECT,
                f"Value is incorrect (out of range) for this tag: NewSeqNo {new_seq} < "
                f"expected {expected}", ref_tag=36))

    def _queue_and_request(self, seq: int, msg: simplefix.FixMessage) -> None:
        expected = self.store.next_target_seq()
        if len(self._queue) < _MAX_QUEUED:
            self._queue[seq] = msg
        else:
            log.error("%s: inbound queue full, dropping %d", self._name, seq)
        if self._resend_upto is None:
            log.info("%s: MsgSeqNum too high, expecting %d but received %d", self._name,
                     expected, seq)
            self._send_resend_request(expected)
            self._resend_upto = seq
        else:
            # One outstanding ResendRequest (EndSeqNo=0 = infinity) covers later gaps too.
            self._resend_upto = max(self._resend_upto, seq)

    async def _too_low(self, msg: simplefix.FixMessage, seq: int, expected: int) -> None:
        if msg.get(43) != b"Y":
            await self._logout_and_disconnect(
                f"MsgSeqNum too low, expecting {expected} but received {seq}"
            )
            return
        try:
            self._check_poss_dup(msg)
        except SessionRejectError as exc:
            await self._reject(msg, seq, exc)
            return
        log.debug("%s: ignoring duplicate %d (expecting %d)", self._name, seq, expected)

    async def _drain_queue(self) -> None:
        while self._queue:
            expected = self.store.next_target_seq()
            for s in [s for s in self._queue if s < expected]:
                del self._queue[s]
            queued = self._queue.pop(expected, None)
            if queued is None:
                break
            await self._dispatch_checked(queued, expected)
            if self.store.next_target_seq() <= expected:
                break
        if self._resend_upto is not None and self.store.next_target_seq() > self._resend_upto:
            log.info("%s: resend complete", self._name)
            self._resend_upto = None

    async def _dispatch_checked(self, msg: simplefix.FixMessage, seq: int) -> None:
        try:
            await self._dispatch(msg, seq)
        except SessionRejectError as exc:
            await self._reject(msg, seq, exc)

    async def _dispatch(self, msg: simplefix.FixMessage, seq: int) -> None:
        """Process a message whose MsgSeqNum is the expected one, then advance the number."""
        msg_type: bytes = msg.message_type or b""
        if msg.get(43) == b"Y":
            self._check_poss_dup(msg)
        if msg_type in ADMIN_MSG_TYPES:
            if msg_type == b"1":
                test_req_id = msg.get(112)
                self._send_admin(b"0", [(b"112", test_req_id)] if test_req_id else [])
            elif msg_type == b"3":
                log.warning("%s: peer rejected our %s: %s", self._name,
                            (msg.get(45) or b"?").decode(errors="replace"),
                            (msg.get(58) or b"").decode(errors="replace"))
            elif msg_type == b"4":  # gap fill (reset mode never gets here)
                new_seq = _int_field(msg, 36)
                if new_seq is None:
                    raise SessionRejectError(REJECT_REQUIRED_TAG_MISSING,
                                             "Required tag missing", ref_tag=36)
                if new_seq <= seq:
                    raise SessionRejectError(
                        REJECT_VALUE_INCORRECT,
                        f"Value is incorrect (out of range) for this tag: NewSeqNo {new_seq} "
                        f"<= MsgSeqNum {seq}", ref_tag=36)
                self.store.set_next_target_seq(new_seq)
                return
            # Heartbeat, Reject, a queued Logon or ResendRequest: just consume the number.
            self.store.set_next_target_seq(seq + 1)
            return
        try:
            await self._on_message(self, msg)
        except Exception:
            log.exception("%s: handler failed on message %d; not advancing, disconnecting",
                          self._name, seq)
            raise SessionDisconnect("handler failed") from None
        self.store.set_next_target_seq(seq + 1)

    def _check_header(self, msg: simplefix.FixMessage) -> None:
        sending_time = msg.get(52)
        if sending_time is None:
            raise SessionRejectError(REJECT_REQUIRED_TAG_MISSING, "Required tag missing",
                                     ref_tag=52)
        try:
            sent = parse_utc_timestamp(sending_time)
        except ValueError:
            raise SessionRejectError(REJECT_INCORRECT_DATA_FORMAT,
                                     "Incorrect data format for value", ref_tag=52) from None
        if abs(time.time() - sent) > self.config.max_clock_skew:
            raise SessionRejectError(REJECT_SENDING_TIME_ACCURACY, "SendingTime accuracy problem",
                                     ref_tag=52, logout=True)
        if msg.get(49) != self._target:
            raise SessionRejectError(REJECT_COMPID_PROBLEM, "CompID problem", ref_tag=49,
                                     logout=True)
        if msg.get(56) != self._sender:
            raise SessionRejectError(REJECT_COMPID_PROBLEM, "CompID problem", ref_tag=56,
                                     logout=True)

    def _check_poss_dup(self, msg: simplefix.FixMessage) -> None:
        if msg.message_type == b"4":
            return  # QuickFIX tolerates gap fills without OrigSendingTime
        orig = msg.get(122)
        if orig is None:
            raise SessionRejectError(REJECT_REQUIRED_TAG_MISSING, "Required tag missing",
                                     ref_tag=122)
        try:
            orig_t = parse_utc_timestamp(orig)
            sent_t = parse_utc_timestamp(msg.get(52) or b"")
        except ValueError:
            raise SessionRejectError(REJECT_INCORRECT_DATA_FORMAT,
                                     "Incorrect data format for value", ref_tag=122) from None
        if orig_t > sent_t:
            raise SessionRejectError(REJECT_SENDING_TIME_ACCURACY, "SendingTime accuracy problem",
                                     ref_tag=122, logout=True)

    async def _reject(self, msg: simplefix.FixMessage, seq: int, exc: SessionRejectError) -> None:
        msg_type: bytes = msg.message_type or b""
        log.warning("%s: rejecting %d (35=%r): reason %d %s", self._name, seq, msg_type,
                    exc.reason, exc.text)
        self._send_reject(seq, msg_type, exc.reason, exc.text, exc.ref_tag)
        # Like QuickFIX: a rejected message still consumes its number (except Logon and
        # SequenceReset, whose numbering is handled by their own rules).
        if seq == self.store.next_target_seq() and msg_type not in (b"A", b"4"):
            self.store.set_next_target_seq(seq + 1)
        if exc.logout:
            await self._logout_and_disconnect(exc.text)
        elif self.logged_on.is_set():
            await self._drain_queue()


MessageHandler = Callable[[FixSession, simplefix.FixMessage], Awaitable[None]]


@dataclass(eq=False)
class _Connection:
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
        data = await reader.read(_READ_SIZE)
        if not data:
            return None
        framer.feed(data)


# ---------------------------------------------------------------------- helpers


def utc_timestamp(now: float | None = None) -> bytes:
    """UTCTimestamp with milliseconds, e.g. b"20240102-13:45:06.789"."""
    dt = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return dt.strftime("%Y%m%d-%H:%M:%S.%f")[:-3].encode()


def parse_utc_timestamp(value: bytes) -> float:
    """Parse a FIX UTCTimestamp (seconds, milli-, micro- or nanoseconds) to epoch seconds."""
    s = value.decode("ascii")
    if len(s) < 17 or s[8] != "-" or s[11] != ":" or s[14] != ":":
        raise ValueError(f"bad UTCTimestamp {value!r}")
    frac = 0.0
    if len(s) > 17:
        digits = s[18:]
        if s[17] != "." or not digits.isdigit() or len(digits) > 9:
            raise ValueError(f"bad UTCTimestamp {value!r}")
        frac = int(digits) / 10 ** len(digits)
    if not (s[:8].isdigit() and s[9:11].isdigit() and s[12:14].isdigit() and s[15:17].isdigit()):
        raise ValueError(f"bad UTCTimestamp {value!r}")
    dt = datetime(int(s[:4]), int(s[4:6]), int(s[6:8]), int(s[9:11]), int(s[12:14]),
                  min(int(s[15:17]), 59), tzinfo=UTC)
    return dt.timestamp() + frac


def _int_field(msg: simplefix.FixMessage, tag: int) -> int | None:
    value = msg.get(tag)
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)
