"""Encoding of the fan-out's Alpaca v2 stream frames: JSON text or msgpack binary.

What it does: :class:`FrameEncoder` turns a batch of ingest payloads (each already one JSON
message, encoded once by ingest and shared by every connection) into WebSocket data frames
written straight to a transport: one JSON array per text frame, or one msgpack array per binary
frame (each payload converted once and cached, ``t`` as a msgpack Timestamp as alpaca-py
expects), a batch over ``MAX_FRAME_BYTES`` split into several frames. Also the ping frame whose
pong acknowledges a frame number (:func:`ack_ping`, tagged ``ACK_TAG``), the RFC 6455 frame
header, and :func:`encode_messages` for control messages (success, error, subscription) that go
through websockets.

What it deliberately does not do: decide what a connection is sent or when (batching,
conflation, flow control: :class:`marketdata.fanout.FanoutServer`), write to sockets, or mask,
compress or fragment frames (server to client frames are unmasked; nothing else is needed).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgpack

MAX_FRAME_BYTES = 64 * 1024  # a bigger batch is split (clients cap message sizes, often at 1 MiB)
ACK_TAG = b"fo"  # our pings carry ACK_TAG + the frame number (4 bytes)
_MP_CACHE_MAX = 50_000


def _ts(s: str) -> msgpack.Timestamp | str:
    try:
        base, _, frac = s.rstrip("Z").partition(".")
        sec = int(datetime.fromisoformat(base + "+00:00").timestamp())
        return msgpack.Timestamp(sec, int((frac + "000000000")[:9]))
    except ValueError:
        return s


def _mp(d: dict[str, Any]) -> dict[str, Any]:
    t = d.get("t")
    if isinstance(t, str):
        d["t"] = _ts(t)
    return d


def ws_header(opcode: int, n: int) -> bytes:
    """RFC 6455 frame header, FIN set, unmasked (server to client)."""
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


def _mp_array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def ack_ping(seq: int) -> bytes:
    """A ping frame carrying frame number ``seq``: the client's pong acknowledges that frame."""
    return b"\x89\x06" + ACK_TAG + seq.to_bytes(4, "big")


def encode_messages(binary: bool, msgs: list[dict[str, Any]]) -> bytes | str:
    """Control messages as one array: msgpack bytes for binary clients, else compact JSON."""
    if binary:
        return msgpack.packb(msgs)
    return json.dumps(msgs, separators=(",", ":"))


class FrameEncoder:
    """Data frames from ingest payloads; caches each payload's msgpack form (one per process)."""

    def __init__(self) -> None:
        self._mp_cache: dict[bytes, bytes] = {}

    def frames(self, binary: bool, items: list[bytes]) -> bytes:
        """The payloads as one frame, or as several when one would exceed MAX_FRAME_BYTES."""
        data = self.frame(binary, items)
        if len(data) > MAX_FRAME_BYTES and len(items) > 1:  # e.g. a "*" subscriber: several frames
            chunks: list[bytes] = []
            part: list[bytes] = []
            size = 0
            for m in items:
                if part and size + len(m) > MAX_FRAME_BYTES:
                    chunks.append(self.frame(binary, part))
                    part, size = [], 0
                part.append(m)
                size += len(m) + 1
            chunks.append(self.frame(binary, part))
            data = b"".join(chunks)
        return data

    def frame(self, binary: bool, items: list[bytes]) -> bytes:
        """One WebSocket data frame: the messages as one JSON array (text) or msgpack array."""
        if binary:
            body = self._mp_frame(items)
            return ws_header(0x2, len(body)) + body
        body = b"[" + b",".join(items) + b"]"
        return ws_header(0x1, len(body)) + body

    def _mp_frame(self, items: list[bytes]) -> bytes:
        cache = self._mp_cache
        if len(cache) > _MP_CACHE_MAX:
            cache.clear()
        out = [_mp_array_header(len(items))]
        for m in items:
            packed = cache.get(m)
            if packed is None:
                packed = cache[m] = msgpack.packb(_mp(json.loads(m)))
            out.append(packed)
        return b"".join(out)
