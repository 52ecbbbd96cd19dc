"""Test helpers for the FIX session layer: a hand-rolled frame builder and a raw scripted peer.

Deliberately independent of ``fix.framing``: frames are built and checked here with their own
BodyLength/CheckSum code, so the tests do not share bugs with the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simplefix

from fix.session import FixSession

SOH = b"\x01"
OURS = "SHERWOOD"  # our session's SenderCompID, in both roles
PEER = "PEER"  # the scripted counterparty's SenderCompID
DEFAULT_TIMEOUT = 2.0

_HEADER_RE = re.compile(rb"8=(FIX[^\x01]*)\x019=(\d+)\x01")


def ts(offset: float = 0.0) -> str:
    """A UTCTimestamp ``offset`` seconds from now."""
    dt = datetime.fromtimestamp(time.time() + offset, UTC)
    return dt.strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def wrap(
    body: bytes,
    begin: bytes = b"FIX.4.4",
    *,
    body_length: int | None = None,
    checksum: int | None = None,
) -> bytes:
    """Frame ``body`` (fields from MsgType to before CheckSum) with 8, 9 and 10.

    ``body_length`` / ``checksum`` override the correct values, to build broken frames.
    """
    length = len(body) if body_length is None else body_length
    head = b"8=" + begin + b"\x019=" + str(length).encode() + SOH
    cs = sum(head + body) % 256 if checksum is None else checksum
    return head + body + b"10=%03d\x01" % cs


def fields_bytes(fields: Iterable[tuple[int | str, object]]) -> bytes:
    return b"".join(f"{t}={v}".encode() + SOH for t, v in fields)


def build(
    msg_type: str,
    seq: int,
    fields: Iterable[tuple[int | str, object]] = (),
    *,
    sender: str = PEER,
    target: str = OURS,
    sending_time: str | None = None,
    poss_dup: bool = False,
    orig_sending_time: str | None = None,
    begin: bytes = b"FIX.4.4",
    **overrides: object,
) -> bytes:
    """A correctly framed message (unless ``begin`` or the fields say otherwise)."""
    header: list[tuple[int | str, object]] = [
        (35, msg_type),
        (49, sender),
        (56, target),
        (34, seq),
        (52, sending_time if sending_time is not None else ts()),
    ]
    if poss_dup:
        header.append((43, "Y"))
    if orig_sending_time is not None:
        header.append((122, orig_sending_time))
    return wrap(fields_bytes([*header, *fields]), begin, **overrides)  # type: ignore[arg-type]


@dataclass
class Msg:
    """A received message as (tag, value) pairs, values decoded."""

    raw: bytes
    pairs: list[tuple[int, str]]

    @classmethod
    def parse(cls, raw: bytes) -> Msg:
        pairs = []
        for part in raw.split(SOH)[:-1]:
            tag, _, value = part.partition(b"=")
            pairs.append((int(tag), value.decode()))
        return cls(raw, pairs)

    def get(self, tag: int) -> str | None:
        for t, v in self.pairs:
            if t == tag:
                return v
        return None

    def __getitem__(self, tag: int) -> str:
        v = self.get(tag)
        if v is None:
            raise KeyError(tag)
        return v

    @property
    def type(self) -> str:
        return self[35]

    @property
    def seq(self) -> int:
        return int(self[34])

    def __repr__(self) -> str:
        return "Msg(" + "|".join(f"{t}={v}" for t, v in self.pairs) + ")"


class RawPeer:
    """A scripted counterparty on a raw socket: writes hand-built frames, reads and checks ours.

    Every frame it receives is checked for BodyLength, CheckSum, field order and CompIDs.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.next_seq = 1
        self.received: list[Msg] = []

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def send_msg(
        self, msg_type: str, fields: Iterable[tuple[int | str, object]] = (), **kw: object
    ) -> int:
        """Send with the next sequence number (or ``seq=`` without touching the counter)."""
        seq = kw.pop("seq", None)
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        await self.send(build(msg_type, seq, fields, **kw))  # type: ignore[arg-type]
        return seq  # type: ignore[return-value]

    async def send_app(self, text: str = "hello", **kw: object) -> int:
        return await self.send_msg("8", [(17, text), (58, text)], **kw)

    def _take_frame(self) -> bytes | None:
        if not self.buf:
            return None
        m = _HEADER_RE.match(self.buf)
        if m is None:
            if len(self.buf) > 30:
                raise AssertionError(f"garbage from the session: {self.buf[:80]!r}")
            return None
        assert m.group(1) == b"FIX.4.4", m.group(1)
        end = m.end() + int(m.group(2))
        if len(self.buf) < end + 7:
            return None
        frame, self.buf = self.buf[: end + 7], self.buf[end + 7 :]
        trailer = frame[end:]
        assert trailer[:3] == b"10=" and trailer[-1:] == SOH, f"bad BodyLength: {frame!r}"
        assert int(trailer[3:6]) == sum(frame[:end]) % 256, f"bad CheckSum: {frame!r}"
        assert frame[m.end() : m.end() + 3] == b"35=", f"MsgType not third: {frame!r}"
        return frame

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> Msg:
        """Next message; raises TimeoutError, or EOFError when the session closed the socket."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = self._take_frame()
            if frame is not None:
                msg = Msg.parse(frame)
                assert msg[49] == OURS and msg[56] == PEER, msg
                self.received.append(msg)
                return msg
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no message")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("session closed the connection")
            self.buf += data

    async def expect(
        self, msg_type: str, timeout: float = DEFAULT_TIMEOUT, *, skip_heartbeats: bool = True
    ) -> Msg:
        """Next message other than a Heartbeat (unless asked for); assert its MsgType."""
        while True:
            msg = await self.recv(timeout)
            if skip_heartbeats and msg.type == "0" and msg_type != "0":
                continue
            assert msg.type == msg_type, f"expected 35={msg_type}, got {msg}"
            return msg

    async def expect_eof(self, timeout: float = DEFAULT_TIMEOUT) -> list[Msg]:
        """Read until the session closes the connection; return what came before."""
        got: list[Msg] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                got.append(await self.recv(max(remaining, 0.001)))
            except EOFError:
                return got
            except TimeoutError:
                raise AssertionError(f"connection not closed; got {got}") from None

    async def expect_nothing(self, duration: float = 0.2) -> None:
        """Assert that no message (Heartbeats aside) arrives for ``duration`` seconds."""
        deadline = asyncio.get_running_loop().time() + duration
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                msg = await self.recv(remaining)
            except TimeoutError:
                return
            assert msg.type == "0", f"unexpected {msg}"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class ScriptedServer:
    """A raw TCP server playing the acceptor against our initiator; hands out RawPeers."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._peers: list[RawPeer] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        self._peers.append(peer)
        await self.connections.put(peer)

    async def accept(self, timeout: float = DEFAULT_TIMEOUT) -> RawPeer:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def stop(self) -> None:
        for p in self._peers:
            await p.close()
        if self._server is not None:
            self._server.close()


@dataclass
class Recorder:
    """on_message handler that records app messages; can be told to fail."""

    queue: asyncio.Queue[simplefix.FixMessage] = field(default_factory=asyncio.Queue)
    seen: list[simplefix.FixMessage] = field(default_factory=list)
    fail_next: int = 0

    async def __call__(self, session: FixSession, msg: simplefix.FixMessage) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("handler failure injected by the test")
        self.seen.append(msg)
        await self.queue.put(msg)

    async def get(self, timeout: float = DEFAULT_TIMEOUT) -> simplefix.FixMessage:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def assert_empty(self, wait: float = 0.1) -> None:
        await asyncio.sleep(wait)
        assert self.queue.empty(), f"unexpected delivery {self.queue.get_nowait()}"


def app_msg(text: str = "hi", msg_type: str = "D") -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(35, msg_type)
    m.append_pair(11, text)
    m.append_pair(58, text)
    return m
