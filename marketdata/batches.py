"""Ingest's batch channels: several stream messages per Redis PUBLISH, for the fan-out.

What it is: ingest publishes every message it makes (``q``, ``t``, ``s``, ``b``, ``u``, ``d``)
twice: alone on the symbol's channel ``<prefix>:md:<SYMBOL>`` (the contract other readers keep:
the broker-held triggers, tests, anything subscribed to one symbol) and, for the fan-out, in a
batch on ``<prefix>:mdb:<k>``, ``k`` = CRC-32 of the symbol modulo :data:`BATCH_SHARDS`: the
messages of one ingest batch whose symbols fall in shard ``k``, in ingest order, joined by
newlines (a stream message is compact JSON and never holds one), at most
:data:`MAX_BATCH_BYTES` per publish (more go out as several, in order). A symbol always lands on
the same shard channel and its messages go out on one connection in order, so per-symbol order
holds. Nothing waits to fill a batch: a batch is what one feed read brought, written in the same
pipelined write as before (halts included: they are as immediate as before).

Why: the fan-out reads every message of every watched symbol, and per message the work of a
PUBLISH (Redis) and of a RESP push (Redis's write, the fan-out's parse) is fixed; a batch of 30
pays it once. The per-symbol copies cost Redis a lookup each and no delivery where nobody
subscribes to that symbol alone (the fan-out does not).

What it deliberately does not do: conflate (every message of the batch is in it), carry the
operations statuses ``db/controls.py`` publishes on a symbol's channel (the fan-out takes those
from there), or hold anything but what one ingest batch produced.
"""

from __future__ import annotations

import zlib

BATCH_SHARDS = 32
MAX_BATCH_BYTES = 64 * 1024  # one publish's payload (a single message over it goes out alone)
SYM_AT = len(b'{"T":"q","S":"')  # ingest's messages start '{"T":"<k>","S":"<symbol>"'


def shard_of(symbol: bytes) -> int:
    """The batch channel (0..BATCH_SHARDS-1) of a symbol: stable across processes."""
    return zlib.crc32(symbol) % BATCH_SHARDS


def channel_prefix(prefix: str) -> bytes:
    return f"{prefix}:mdb:".encode()


def channel(prefix: str, shard: int) -> bytes:
    return channel_prefix(prefix) + b"%d" % shard


def payloads(messages: list[bytes]) -> list[bytes]:
    """The messages (in order) as newline-joined payloads of at most MAX_BATCH_BYTES each."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for m in messages:
        if part and size + len(m) > MAX_BATCH_BYTES:
            out.append(b"\n".join(part))
            part, size = [], 0
        part.append(m)
        size += len(m) + 1
    if part:
        out.append(b"\n".join(part))
    return out


def symbol_of(message: bytes) -> bytes:
    """The symbol of one of ingest's messages (``S``, the second field): b"" if not there."""
    end = message.find(b'"', SYM_AT)
    return message[SYM_AT:end] if end > 0 and message.startswith(b'","S":"', SYM_AT - 7) else b""
