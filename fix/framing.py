"""Byte-level framing of FIX 4.4 messages, and encoding of outbound ones.

simplefix's parser frames on ``10=`` only, validates neither BodyLength(9) nor CheckSum(10) and
gets stuck after a parse error, so we frame ourselves: find ``8=FIX``, read ``9=``, take exactly
that many bytes, expect ``10=NNN<SOH>``, verify the checksum, and only then hand the frame to
simplefix. Anything else is discarded with :class:`GarbledMessageError` and scanning resumes at
the next ``8=FIX``.

Deliberately not done here: BeginString version checks, CompID/sequence checks (the session
does those), and any field-level validation of message bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import simplefix

from fix.errors import GarbledMessageError

SOH = b"\x01"
BEGIN_STRING = b"FIX.4.4"
_BEGIN_MARK = b"8=FIX"
# "8=FIXT.1.1" is the longest sane BeginString field; more than this without SOH is garbage.
_MAX_BEGIN_FIELD = 16
_MAX_LENGTH_DIGITS = 7
_BEGIN_STRING_RE = re.compile(rb"FIXT?\.\d+\.\d+")
DEFAULT_MAX_BODY_LENGTH = 1 << 20
# Length tags of raw-data fields: their data values may contain SOH, so only simplefix's parser
# (which knows these pairs) may split such frames.
_RAW_LEN_TAGS = frozenset(str(t).encode() for t in simplefix.parser.RAW_LEN_TAGS)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """FIX CheckSum: sum of all bytes modulo 256."""
    return sum(data) & 0xFF


def encode(pairs: Iterable[tuple[bytes, bytes]], begin_string: bytes = BEGIN_STRING) -> bytes:
    """Encode ``pairs`` (every field after BodyLength, in order, MsgType first) into a frame.

    BeginString, BodyLength and CheckSum are computed here; ``pairs`` must not contain them.
    Values are written as given: a value containing SOH would corrupt the frame.
    """
    body = b"".join(t + b"=" + v + SOH for t, v in pairs)
    head = b"8=" + begin_string + b"\x019=" + str(len(body)).encode() + SOH
    msg = head + body
    return msg + b"10=%03d\x01" % checksum(msg)


def parse_frame(frame: bytes, parser: simplefix.FixParser | None = None) -> simplefix.FixMessage:
    """Parse one verified frame into a simplefix message; GarbledMessageError if it will not.

    Fast path: a frame without raw-data fields, non-numeric tags, empty values or an early
    CheckSum is split on SOH directly (simplefix's byte-by-byte parser is the hot spot of the
    whole session layer). Everything else goes through simplefix's own parser, so the result is
    the same message simplefix would build.
    """
    msg = _fast_parse(frame)
    if msg is not None:
        return msg
    return _simplefix_parse(frame, parser)


def _fast_parse(frame: bytes) -> simplefix.FixMessage | None:
    parts = frame.split(SOH)
    if parts[-1]:
        return None
    pairs = []
    for part in parts[:-1]:
        tag, sep, value = part.partition(b"=")
        if not sep or not value or not tag.isdigit() or tag[0] == 48 or tag in _RAW_LEN_TAGS:
            return None  # leave the odd cases (and their exact errors) to simplefix
        pairs.append((tag, value))
    if len(pairs) < 4 or pairs[0][0] != b"8" or pairs[2][0] != b"35" or pairs[-1][0] != b"10":
        return None
    if any(t == b"10" for t, _ in pairs[:-1]):
        return None
    msg = simplefix.FixMessage()
    msg.pairs = pairs
    # like simplefix.FixMessage.append_pair: the last occurrence wins
    msg.begin_string = next(v for t, v in reversed(pairs) if t == b"8")
    msg.message_type = next(v for t, v in reversed(pairs) if t == b"35")
    return msg


def _simplefix_parse(
    frame: bytes, parser: simplefix.FixParser | None = None
) -> simplefix.FixMessage:
    p = parser if parser is not None else simplefix.FixParser()
    p.reset()
    try:
        p.append_buffer(frame)
        msg = p.get_message()
    except Exception as exc:  # simplefix raises assorted errors on malformed fields
        p.reset()
        raise GarbledMessageError(f"unparseable frame: {exc!r}", frame) from exc
    leftover = p.get_buffer()
    p.reset()
    if msg is None or leftover:
        # a stray "10=" inside the body would make simplefix stop early
        raise GarbledMessageError("frame does not parse as exactly one message", frame)
    return msg


class FrameBuffer:
    """Accumulates bytes from the socket and yields whole, checksum-verified frames.

    Usage::

        buf.feed(data)
        while True:
            try:
                frame = buf.next_frame()
            except GarbledMessageError as exc:
                log(exc); continue        # bytes already discarded
            if frame is None:
                break                     # need more data
            handle(frame)

    It never blocks and never raises anything but GarbledMessageError. A frame whose BodyLength
    points past the buffered data normally means "wait for more"; but if a complete, valid frame
    already starts later in the buffer, the BodyLength must be corrupt and the partial frame is
    dropped, so one bad length field cannot stall the session.
    """

    def __init__(self, max_body_length: int = DEFAULT_MAX_BODY_LENGTH) -> None:
        self._buf = bytearray()
        self._max_body = max_body_length

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def next_frame(self) -> bytes | None:
        buf = self._buf
        if not buf:
            return None
        start = buf.find(_BEGIN_MARK)
        if start == -1:
            keep = _partial_mark_suffix(buf)
            dropped = len(buf) - keep
            if dropped:
                junk = bytes(buf[:dropped])
                del buf[:dropped]
                raise GarbledMessageError("no BeginString in data", junk)
            return None
        if start > 0:
            junk = bytes(buf[:start])
            del buf[:start]
            raise GarbledMessageError("bytes before BeginString", junk)

        result = self._frame_at(0)
        if isinstance(result, int):
            end = result
            frame = bytes(buf[:end])
            del buf[:end]
            return frame
        if result is None:
            # Incomplete. Is a complete valid frame waiting behind it? Then this one is corrupt.
            # (Checksum-verified, so a false positive needs a whole valid frame inside a value.)
            pos = buf.find(_BEGIN_MARK, 1)
            while pos != -1:
                if isinstance(self._frame_at(pos), int):
                    junk = bytes(buf[:pos])
                    del buf[:pos]
                    raise GarbledMessageError("BodyLength runs into the next message", junk)
                pos = buf.find(_BEGIN_MARK, pos + 1)
            return None
        reason, drop_whole = result
        if drop_whole is not None:
            # Framing looked sound but the content is bad. Unless a valid frame hides inside
            # (junk glued in front of a good message), drop the whole frame.
            cut = drop_whole
            pos = buf.find(_BEGIN_MARK, 1, drop_whole)
            while pos != -1:
                if isinstance(self._frame_at(pos), int):
                    cut = pos
                    break
                pos = buf.find(_BEGIN_MARK, pos + 1, drop_whole)
            junk = bytes(buf[:cut])
            del buf[:cut]
        else:
            # resync: skip this "8=FIX" and everything up to the next one
            nxt = buf.find(_BEGIN_MARK, 1)
            cut = nxt if nxt != -1 else len(buf) - _partial_mark_suffix(buf)
            cut = max(cut, 1)
            junk = bytes(buf[:cut])
            del buf[:cut]
        raise GarbledMessageError(reason, junk)

    def _frame_at(self, pos: int) -> int | tuple[str, int | None] | None:
        """Examine the frame starting at ``pos`` (which holds "8=FIX").

        Returns the end offset of a complete valid frame, None if more data is needed, or
        (reason, drop_to) for a bad one: drop_to is the frame end when the framing was sound
        (bad checksum, bad field order), None when we must resync by scanning.
        """
        buf = self._buf
        n = len(buf)
        soh1 = buf.find(SOH, pos, pos + _MAX_BEGIN_FIELD)
        if soh1 == -1:
            return None if n - pos < _MAX_BEGIN_FIELD else ("BeginString too long", None)
        if _BEGIN_STRING_RE.fullmatch(buf, pos + 2, soh1) is None:
            return ("malformed BeginString", None)
        if n < soh1 + 3:
            return None
        if buf[soh1 + 1 : soh1 + 3] != b"9=":
            return ("BodyLength is not the second field", None)
        len_start = soh1 + 3
        soh2 = buf.find(SOH, len_start, len_start + _MAX_LENGTH_DIGITS + 1)
        if soh2 == -1:
            if n - len_start <= _MAX_LENGTH_DIGITS:
                return None
            return ("BodyLength too long", None)
        digits = bytes(buf[len_start:soh2])
        if not digits.isdigit():
            return ("BodyLength not a number", None)
        length = int(digits)
        if length > self._max_body or length < 4:
            return (f"BodyLength {length} out of range", None)
        body_start = soh2 + 1
        body_end = body_start + length
        frame_end = body_end + 7
        if n < frame_end:
            return None
        trailer = buf[body_end:frame_end]
        if trailer[:3] != b"10=" or trailer[6] != 1 or not bytes(trailer[3:6]).isdigit():
            return ("BodyLength does not end at CheckSum", None)
        if checksum(buf[pos:body_end]) != int(trailer[3:6]):
            return ("CheckSum mismatch", frame_end)
        if buf[body_start : body_start + 3] != b"35=":
            return ("MsgType is not the third field", frame_end)
        return frame_end


def _partial_mark_suffix(buf: bytearray) -> int:
    """Length of the longest suffix of buf that is a proper prefix of "8=FIX"."""
    for k in range(min(len(_BEGIN_MARK) - 1, len(buf)), 0, -1):
        if buf.endswith(_BEGIN_MARK[:k]):
            return k
    return 0
