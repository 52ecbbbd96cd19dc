"""Session-level checks of inbound FIX headers, and the field helpers they need.

What it does: the checks a session runs on every inbound message after Logon
(:func:`check_header`: SendingTime present, well formed and within the allowed clock skew,
SenderCompID/TargetCompID naming this session) and on possible duplicates
(:func:`check_poss_dup`: OrigSendingTime present and not after SendingTime), each failure raised
as :class:`fix.errors.SessionRejectError` carrying the SessionRejectReason(373) and whether the
session must log out; the SessionRejectReason codes used; the admin MsgTypes; FIX UTCTimestamp
formatting and parsing; integer field reading.

What it deliberately does not do: decide what happens next (reject, logout, sequence numbers:
that is :class:`fix.session.FixSession`), hold any state, or validate application messages
(their fields are the handler's business).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import simplefix

from fix.errors import SessionRejectError

ADMIN_MSG_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})

# SessionRejectReason(373) values we use
REJECT_REQUIRED_TAG_MISSING = 1
REJECT_VALUE_INCORRECT = 5
REJECT_INCORRECT_DATA_FORMAT = 6
REJECT_COMPID_PROBLEM = 9
REJECT_SENDING_TIME_ACCURACY = 10


def check_header(
    msg: simplefix.FixMessage, *, sender: bytes, target: bytes, max_clock_skew: float
) -> None:
    """SendingTime(52) and CompIDs of a message received by the session ``sender`` -> ``target``
    (so SenderCompID(49) must be ``target`` and TargetCompID(56) ``sender``)."""
    sending_time = msg.get(52)
    if sending_time is None:
        raise SessionRejectError(REJECT_REQUIRED_TAG_MISSING, "Required tag missing",
                                 ref_tag=52)
    try:
        sent = parse_utc_timestamp(sending_time)
    except ValueError:
        raise SessionRejectError(REJECT_INCORRECT_DATA_FORMAT,
                                 "Incorrect data format for value", ref_tag=52) from None
    if abs(time.time() - sent) > max_clock_skew:
        raise SessionRejectError(REJECT_SENDING_TIME_ACCURACY, "SendingTime accuracy problem",
                                 ref_tag=52, logout=True)
    if msg.get(49) != target:
        raise SessionRejectError(REJECT_COMPID_PROBLEM, "CompID problem", ref_tag=49,
                                 logout=True)
    if msg.get(56) != sender:
        raise SessionRejectError(REJECT_COMPID_PROBLEM, "CompID problem", ref_tag=56,
                                 logout=True)


def check_poss_dup(msg: simplefix.FixMessage) -> None:
    """OrigSendingTime(122) of a PossDupFlag=Y message: present, parseable, not after 52."""
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


def int_field(msg: simplefix.FixMessage, tag: int) -> int | None:
    """The value of ``tag`` as a non-negative int; None when absent or not all digits."""
    value = msg.get(tag)
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)
