"""Answering a FIX ResendRequest: the frames that replay a range of our sent messages.

What it does: :func:`resend_frames` reads the range from the session store and yields, in
sequence order, each stored application message again (PossDupFlag=Y, OrigSendingTime = its
first SendingTime, a fresh SendingTime) and a SequenceReset-GapFill over every run of admin
messages, unreadable stored messages and numbers past the last one stored.

What it deliberately does not do: write anything (the session writes each frame as it is
yielded, so the wire order is the generator's order), consume sequence numbers (resent messages
and gap fills keep the numbers they replace), or handle the inbound side of gaps (queueing
messages whose number is too high and requesting a resend: :class:`fix.session.FixSession`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import simplefix

from fix.errors import GarbledMessageError
from fix.framing import encode, parse_frame
from fix.store import SessionStore
from fix.validation import ADMIN_MSG_TYPES, utc_timestamp

log = logging.getLogger("fix.session")  # the session's logger, as before the split

Header = Callable[[bytes, int], list[tuple[bytes, bytes]]]
"""The session's standard header for (MsgType, MsgSeqNum): 35, 49, 56, 34, 52 in that order."""


def resend_frames(
    store: SessionStore, begin: int, end: int, header: Header, name: str
) -> Iterator[bytes]:
    """Answer a ResendRequest: app messages again with PossDupFlag=Y, admin runs gap-filled."""
    last = store.next_sender_seq() - 1
    if end == 0 or end > last:
        end = last
    begin = max(begin, 1)
    if begin > end:
        log.info("%s: ResendRequest for nothing (begin=%d, last sent=%d)", name, begin, last)
        return
    log.info("%s: resending %d..%d", name, begin, end)
    gap_start = begin  # first number not yet covered by a resend or a gap fill
    for seq, raw in store.get_sent(begin, end):
        try:
            msg = parse_frame(raw)
        except GarbledMessageError:
            log.error("%s: stored message %d unreadable, gap-filling it", name, seq)
            continue
        if msg.message_type in ADMIN_MSG_TYPES:
            continue
        if gap_start < seq:
            yield gap_fill(header, gap_start, seq)
        yield resent(msg)
        gap_start = seq + 1
    if gap_start <= end:
        yield gap_fill(header, gap_start, end + 1)


def gap_fill(header: Header, seq: int, new_seq: int) -> bytes:
    """SequenceReset-GapFill numbered ``seq`` moving the peer on to ``new_seq``."""
    now = utc_timestamp()
    pairs = header(b"4", seq)
    pairs[4] = (b"52", now)
    pairs += [(b"43", b"Y"), (b"122", now), (b"123", b"Y"), (b"36", str(new_seq).encode())]
    return encode(pairs)


def resent(msg: simplefix.FixMessage) -> bytes:
    """A stored message sent again: PossDupFlag=Y, OrigSendingTime, new SendingTime."""
    orig = msg.get(52) or utc_timestamp()
    pairs: list[tuple[bytes, bytes]] = []
    for tag, value in msg.pairs:
        if tag in (b"8", b"9", b"10", b"43", b"122"):
            continue
        if tag == b"52":
            pairs += [(b"52", utc_timestamp()), (b"43", b"Y"), (b"122", orig)]
        else:
            pairs.append((tag, value))
    return encode(pairs)
