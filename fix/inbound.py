"""The inbound rules of a FIX session: what :class:`fix.session.FixSession` does with each
message it receives.

What it does: :class:`InboundRules`, a mixin that only FixSession uses (it holds no state of its
own; the attributes below are FixSession's, set in its ``__init__``), takes every parsed inbound
message and applies the session rules: BeginString and MsgSeqNum presence; the Logon exchange
(CompIDs, HeartBtInt, ResetSeqNumFlag, the acceptor's reply, ``on_logon``); Logout (reply or
confirmation, then disconnect); header checks and session-level Rejects (a rejected message
still consumes its number, as in QuickFIX); MsgSeqNum too high (queued, one outstanding
ResendRequest covers every later gap) or too low (PossDup checked and ignored, otherwise
logout); ResendRequest (answered at once) and SequenceReset (reset and gap-fill mode); the
TestRequest answer; delivery of application messages to ``on_message`` in order, the number
advanced only after the handler returned.

What it deliberately does not do: build or write frames (FixSession's outbound methods, fix/
resend.py for resends), read from the socket (fix/transport.py), or keep timers (FixSession's
heartbeat/timeout loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import simplefix

from fix.errors import SessionDisconnect, SessionRejectError
from fix.framing import BEGIN_STRING
from fix.store import SessionStore
from fix.transport import Connection
from fix.validation import (
    ADMIN_MSG_TYPES,
    REJECT_REQUIRED_TAG_MISSING,
    REJECT_VALUE_INCORRECT,
    check_header,
    check_poss_dup,
    int_field,
)

if TYPE_CHECKING:
    from fix.session import SessionConfig

log = logging.getLogger("fix.session")  # the session's logger, as before the split

_MAX_QUEUED = 10_000


class InboundRules:
    """FixSession's inbound half (see the module docstring)."""

    # FixSession's state these rules read and write (set in FixSession.__init__)
    config: SessionConfig
    store: SessionStore
    logged_on: asyncio.Event
    _on_message: Callable[[Any, simplefix.FixMessage], Awaitable[None]]  # called with the session
    _on_logon: Callable[[Any], Awaitable[None]] | None
    _initiator: bool
    _sender: bytes
    _target: bytes
    _name: str
    _conn: Connection | None
    _hb: float
    _queue: dict[int, simplefix.FixMessage]
    _resend_upto: int | None
    _last_recv: float
    _test_req_counter: int
    _logout_sent_at: float | None
    _sent_reset: bool

    if TYPE_CHECKING:  # FixSession's outbound methods these rules call
        def _send_admin(self, msg_type: bytes, fields: list[tuple[bytes, bytes]]) -> int: ...
        def _send_logout(self, text: str = "") -> None: ...
        def _send_reject(self, ref_seq: int, ref_msg_type: bytes, reason: int, text: str,
                         ref_tag: int | None) -> None: ...
        def _send_resend_request(self, begin: int) -> None: ...
        def _resend(self, begin: int, end: int) -> None: ...
        def _reset_store(self) -> None: ...

    async def _logout_and_disconnect(self, text: str) -> None:
        log.warning("%s: logout: %s", self._name, text)
        if self._logout_sent_at is None:
            self._send_logout(text)
        if self._conn is not None:
            await self._conn.drain()
        raise SessionDisconnect(text)

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
        seq = int_field(msg, 34)
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
        hb = int_field(msg, 108)
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
                self._reset_store()
            elif self.config.reset_seq_on_logon:
                self._reset_store()
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
        begin = int_field(msg, 7)
        end = int_field(msg, 16)
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
        new_seq = int_field(msg, 36)
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
            check_poss_dup(msg)
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
            check_poss_dup(msg)
        if msg_type in ADMIN_MSG_TYPES:
            if msg_type == b"1":
                test_req_id = msg.get(112)
                self._send_admin(b"0", [(b"112", test_req_id)] if test_req_id else [])
            elif msg_type == b"3":
                log.warning("%s: peer rejected our %s: %s", self._name,
                            (msg.get(45) or b"?").decode(errors="replace"),
                            (msg.get(58) or b"").decode(errors="replace"))
            elif msg_type == b"4":  # gap fill (reset mode never gets here)
                new_seq = int_field(msg, 36)
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
        check_header(msg, sender=self._sender, target=self._target,
                     max_clock_skew=self.config.max_clock_skew)

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
