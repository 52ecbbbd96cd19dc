"""The FIX 4.4 application vocabulary: tags and codes, builders of the messages Sherwood sends,
the parser of the reports it receives, and their translation into the order core's
:class:`domain.execution.VenueEvent`.

One home for every FIX code: the execution gateway (``activities/gateway.py``,
``workers/gateway.py``) and the simulated venues (``simulators/``) use these names; nothing else
sees a raw FIX code. The session layer (``fix/session.py``) knows only the session-level
messages and never looks inside application messages.

Deliberately not here: sending, sequence numbers, persistence (the session's), routing (the
gateway's), and business rules about what a report means for an order (``domain/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import simplefix

from domain.execution import (
    VenueCancel,
    VenueEvent,
    VenueEventKind,
    VenueOrder,
    VenueStatus,
    order_id_of,
    status_cl_ord_id,
)


class Tag(IntEnum):
    """Application-level tags Sherwood reads or writes."""

    AVG_PX = 6
    CL_ORD_ID = 11
    CUM_QTY = 14
    EXEC_ID = 17
    LAST_PX = 31
    LAST_QTY = 32
    MSG_TYPE = 35
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    POSS_DUP_FLAG = 43
    PRICE = 44
    SIDE = 54
    SYMBOL = 55
    TEXT = 58
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    POSS_RESEND = 97
    STOP_PX = 99
    CXL_REJ_REASON = 102
    ORD_REJ_REASON = 103
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    CXL_REJ_RESPONSE_TO = 434
    ORD_STATUS_REQ_ID = 790


class MsgType(StrEnum):
    EXECUTION_REPORT = "8"
    ORDER_CANCEL_REJECT = "9"
    NEW_ORDER_SINGLE = "D"
    ORDER_CANCEL_REQUEST = "F"
    ORDER_CANCEL_REPLACE_REQUEST = "G"
    ORDER_STATUS_REQUEST = "H"


class Side(StrEnum):
    BUY = "1"
    SELL = "2"


class OrdType(StrEnum):
    MARKET = "1"
    LIMIT = "2"
    STOP = "3"
    STOP_LIMIT = "4"


class TimeInForce(StrEnum):
    DAY = "0"
    GTC = "1"
    IOC = "3"
    FOK = "4"


class ExecType(StrEnum):
    NEW = "0"
    DONE_FOR_DAY = "3"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    STOPPED = "7"
    REJECTED = "8"
    SUSPENDED = "9"
    PENDING_NEW = "A"
    CALCULATED = "B"
    EXPIRED = "C"
    RESTATED = "D"
    PENDING_REPLACE = "E"
    TRADE = "F"
    TRADE_CORRECT = "G"
    TRADE_CANCEL = "H"
    ORDER_STATUS = "I"


class OrdStatus(StrEnum):
    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    DONE_FOR_DAY = "3"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    STOPPED = "7"
    REJECTED = "8"
    SUSPENDED = "9"
    PENDING_NEW = "A"
    CALCULATED = "B"
    EXPIRED = "C"
    ACCEPTED_FOR_BIDDING = "D"
    PENDING_REPLACE = "E"


class OrdRejReason(IntEnum):
    BROKER_OPTION = 0
    UNKNOWN_SYMBOL = 1
    EXCHANGE_CLOSED = 2
    UNSUPPORTED = 11
    INCORRECT_QUANTITY = 13


class CxlRejReason(IntEnum):
    TOO_LATE = 0
    UNKNOWN_ORDER = 1
    DUPLICATE_CLORDID = 6


# Sherwood's words <-> FIX codes
SIDES = {"buy": Side.BUY, "sell": Side.SELL}
ORD_TYPES = {"market": OrdType.MARKET, "limit": OrdType.LIMIT, "stop": OrdType.STOP,
             "stop_limit": OrdType.STOP_LIMIT}
TIMES_IN_FORCE = {"day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC,
                  "fok": TimeInForce.FOK}
LIMIT_TYPES = frozenset({OrdType.LIMIT, OrdType.STOP_LIMIT})
STOP_TYPES = frozenset({OrdType.STOP, OrdType.STOP_LIMIT})
FINAL_ORD_STATUSES = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED,
                                OrdStatus.EXPIRED})

_EVENT_KINDS: dict[str, VenueEventKind] = {
    ExecType.NEW: VenueEventKind.ACK,
    ExecType.TRADE: VenueEventKind.FILL,
    ExecType.CANCELED: VenueEventKind.CANCELED,
    ExecType.EXPIRED: VenueEventKind.EXPIRED,
    ExecType.REJECTED: VenueEventKind.REJECTED,
    ExecType.REPLACED: VenueEventKind.REPLACED,
    ExecType.ORDER_STATUS: VenueEventKind.STATUS,
    ExecType.PENDING_NEW: VenueEventKind.PENDING,
    ExecType.PENDING_CANCEL: VenueEventKind.PENDING,
    ExecType.PENDING_REPLACE: VenueEventKind.PENDING,
    ExecType.TRADE_CANCEL: VenueEventKind.BUSTED,
    ExecType.TRADE_CORRECT: VenueEventKind.CORRECTED,
}
_STATUSES: dict[str, VenueStatus] = {
    OrdStatus.NEW: VenueStatus.NEW,
    OrdStatus.PARTIALLY_FILLED: VenueStatus.PARTIALLY_FILLED,
    OrdStatus.FILLED: VenueStatus.FILLED,
    OrdStatus.CANCELED: VenueStatus.CANCELED,
    OrdStatus.EXPIRED: VenueStatus.EXPIRED,
    OrdStatus.REJECTED: VenueStatus.REJECTED,
    OrdStatus.PENDING_NEW: VenueStatus.PENDING_NEW,
    OrdStatus.PENDING_CANCEL: VenueStatus.PENDING_CANCEL,
    OrdStatus.PENDING_REPLACE: VenueStatus.PENDING_REPLACE,
    OrdStatus.REPLACED: VenueStatus.REPLACED,
    OrdStatus.DONE_FOR_DAY: VenueStatus.DONE_FOR_DAY,
    OrdStatus.STOPPED: VenueStatus.STOPPED,
    OrdStatus.SUSPENDED: VenueStatus.SUSPENDED,
}


class InvalidOrderMessage(ValueError):
    """An order that cannot be expressed in FIX (unsupported side/type/TIF, missing price)."""


def text(msg: simplefix.FixMessage, tag: int) -> str | None:
    """A field's value as text (None when absent)."""
    value = msg.get(tag)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _code(table: Mapping[str, str], value: str, what: str) -> str:
    code = table.get(value.lower()) if value else None
    if code is None:
        raise InvalidOrderMessage(f"unsupported {what} {value!r}")
    return code


def _start(msg_type: MsgType, poss_resend: bool) -> simplefix.FixMessage:
    msg = simplefix.FixMessage()
    msg.append_pair(Tag.MSG_TYPE, msg_type.value)
    if poss_resend:
        msg.append_pair(Tag.POSS_RESEND, "Y", header=True)
    return msg


# ============================================================================ outbound


def new_order_single(order: VenueOrder, *, poss_resend: bool = False) -> simplefix.FixMessage:
    """NewOrderSingle(D): ClOrdID, Symbol, Side, TransactTime, OrderQty, OrdType, Price (limit
    types), StopPx (stop types), TimeInForce. Raises :class:`InvalidOrderMessage`."""
    side = _code(SIDES, order.side, "side")
    ord_type = _code(ORD_TYPES, order.order_type, "order type")
    tif = _code(TIMES_IN_FORCE, order.time_in_force, "time in force")
    if not order.symbol or not order.qty:
        raise InvalidOrderMessage("symbol and qty are required")
    if ord_type in LIMIT_TYPES and not order.limit_price:
        raise InvalidOrderMessage(f"{order.order_type} order without limit_price")
    if ord_type in STOP_TYPES and not order.stop_price:
        raise InvalidOrderMessage(f"{order.order_type} order without stop_price")
    msg = _start(MsgType.NEW_ORDER_SINGLE, poss_resend)
    msg.append_pair(Tag.CL_ORD_ID, order.cl_ord_id)
    msg.append_pair(Tag.SYMBOL, order.symbol)
    msg.append_pair(Tag.SIDE, side)
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    msg.append_pair(Tag.ORDER_QTY, order.qty)
    msg.append_pair(Tag.ORD_TYPE, ord_type)
    if ord_type in LIMIT_TYPES:
        msg.append_pair(Tag.PRICE, order.limit_price)
    if ord_type in STOP_TYPES:
        msg.append_pair(Tag.STOP_PX, order.stop_price)
    msg.append_pair(Tag.TIME_IN_FORCE, tif)
    return msg


def order_cancel_request(req: VenueCancel, *, poss_resend: bool = False) -> simplefix.FixMessage:
    """OrderCancelRequest(F): OrigClOrdID (the order's ClOrdID), ClOrdID (``<order>:C<n>``),
    Side, TransactTime, Symbol, OrderQty."""
    msg = _start(MsgType.ORDER_CANCEL_REQUEST, poss_resend)
    msg.append_pair(Tag.ORIG_CL_ORD_ID, req.order_id)
    msg.append_pair(Tag.CL_ORD_ID, req.cl_ord_id)
    msg.append_pair(Tag.SIDE, _code(SIDES, req.side, "side"))
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    msg.append_pair(Tag.SYMBOL, req.symbol)
    msg.append_pair(Tag.ORDER_QTY, req.qty)
    return msg


def order_status_request(req: VenueCancel, *, poss_resend: bool = False) -> simplefix.FixMessage:
    """OrderStatusRequest(H): ClOrdID = the ORIGINAL order's (so the venue finds the order),
    Side, Symbol, and OrdStatusReqID = ``<order>:S<n>`` (the request's own identity)."""
    msg = _start(MsgType.ORDER_STATUS_REQUEST, poss_resend)
    msg.append_pair(Tag.CL_ORD_ID, req.order_id)
    msg.append_pair(Tag.SIDE, _code(SIDES, req.side, "side"))
    msg.append_pair(Tag.SYMBOL, req.symbol)
    msg.append_pair(Tag.ORD_STATUS_REQ_ID, status_cl_ord_id(req.order_id, req.attempt))
    return msg


# ============================================================================ inbound


@dataclass
class ExecReport:
    """An inbound ExecutionReport(8) or OrderCancelReject(9) as the venue sent it (codes as on
    the wire, decimals as text): what the gateway records in ``gateway_reports``. The order core
    gets its :func:`venue_event`.

    The JSON of this dataclass is also the shape of the ``execution_report`` signals written
    before venue events existed (``legacy_venue_event`` reads them)."""

    venue: str
    exec_id: str
    msg_type: str
    cl_ord_id: str
    order_id: str
    exec_type: str  # ExecType(150) ("" for an OrderCancelReject)
    ord_status: str  # OrdStatus(39)
    orig_cl_ord_id: str | None = None
    venue_order_id: str | None = None
    last_qty: str = "0"
    last_px: str | None = None
    cum_qty: str = "0"
    leaves_qty: str = "0"
    avg_px: str = "0"
    text: str | None = None
    ord_rej_reason: str | None = None
    cxl_rej_reason: str | None = None
    transact_time: str | None = None
    poss_dup: bool = False
    poss_resend: bool = False


def cancel_reject_exec_id(cl_ord_id: str, orig_cl_ord_id: str) -> str:
    """Synthesized ExecID of an OrderCancelReject: the same for every retransmission of it
    (PossDup under the old MsgSeqNum or PossResend under a new one)."""
    return f"CXLREJ-{cl_ord_id}-{orig_cl_ord_id}"


def parse_inbound(venue: str, msg: simplefix.FixMessage) -> ExecReport | None:
    """ExecutionReport(8) / OrderCancelReject(9) -> :class:`ExecReport`; None for other MsgTypes.

    Raises ``ValueError`` for a report that cannot be identified (no ExecID on an
    ExecutionReport)."""
    msg_type = text(msg, Tag.MSG_TYPE)
    poss_dup = text(msg, Tag.POSS_DUP_FLAG) == "Y"
    poss_resend = text(msg, Tag.POSS_RESEND) == "Y"
    cl_ord_id = text(msg, Tag.CL_ORD_ID) or ""
    orig = text(msg, Tag.ORIG_CL_ORD_ID)
    venue_order_id = text(msg, Tag.ORDER_ID)
    if msg_type == MsgType.EXECUTION_REPORT:
        exec_id = text(msg, Tag.EXEC_ID)
        if not exec_id:
            raise ValueError("ExecutionReport without ExecID(17)")
        return ExecReport(
            venue=venue, exec_id=exec_id, msg_type=msg_type, cl_ord_id=cl_ord_id,
            order_id=order_id_of(cl_ord_id), exec_type=text(msg, Tag.EXEC_TYPE) or "",
            ord_status=text(msg, Tag.ORD_STATUS) or "", orig_cl_ord_id=orig,
            venue_order_id=venue_order_id, last_qty=text(msg, Tag.LAST_QTY) or "0",
            last_px=text(msg, Tag.LAST_PX), cum_qty=text(msg, Tag.CUM_QTY) or "0",
            leaves_qty=text(msg, Tag.LEAVES_QTY) or "0", avg_px=text(msg, Tag.AVG_PX) or "0",
            text=text(msg, Tag.TEXT), ord_rej_reason=text(msg, Tag.ORD_REJ_REASON),
            transact_time=text(msg, Tag.TRANSACT_TIME), poss_dup=poss_dup, poss_resend=poss_resend,
        )
    if msg_type == MsgType.ORDER_CANCEL_REJECT:
        # The reject is about the order named in OrigClOrdID; ClOrdID is the cancel request's.
        owner = orig if orig and orig != "NONE" else cl_ord_id
        return ExecReport(
            venue=venue, exec_id=cancel_reject_exec_id(cl_ord_id, orig or ""), msg_type=msg_type,
            cl_ord_id=cl_ord_id, order_id=order_id_of(owner), exec_type="",
            ord_status=text(msg, Tag.ORD_STATUS) or "", orig_cl_ord_id=orig,
            venue_order_id=venue_order_id, text=text(msg, Tag.TEXT),
            cxl_rej_reason=text(msg, Tag.CXL_REJ_REASON), transact_time=text(msg, Tag.TRANSACT_TIME),
            poss_dup=poss_dup, poss_resend=poss_resend,
        )
    return None


def parse_utc_timestamp(t: str | None) -> datetime | None:
    """A FIX UTCTimestamp (``YYYYMMDD-HH:MM:SS[.sss]``, e.g. TransactTime) as an aware UTC
    datetime; None when absent or unreadable."""
    if not t:
        return None
    for fmt in ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S"):
        try:
            return datetime.strptime(t, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def venue_event(r: ExecReport) -> VenueEvent:
    """What the report means, in the order core's words (see :class:`VenueEventKind`)."""
    if r.msg_type == MsgType.ORDER_CANCEL_REJECT:
        kind = VenueEventKind.CANCEL_REJECTED
        reason = r.cxl_rej_reason
    elif r.msg_type == MsgType.EXECUTION_REPORT:
        kind = _EVENT_KINDS.get(r.exec_type, VenueEventKind.OTHER)
        reason = r.ord_rej_reason
    else:
        kind, reason = VenueEventKind.OTHER, None
    when = parse_utc_timestamp(r.transact_time)
    return VenueEvent(
        venue=r.venue, exec_id=r.exec_id, order_id=r.order_id, kind=kind,
        status=_STATUSES.get(r.ord_status, VenueStatus.UNKNOWN), cl_ord_id=r.cl_ord_id,
        orig_cl_ord_id=r.orig_cl_ord_id, venue_order_id=r.venue_order_id, last_qty=r.last_qty,
        last_px=r.last_px, cum_qty=r.cum_qty, leaves_qty=r.leaves_qty, avg_px=r.avg_px,
        text=r.text, reject_reason=reason, transact_time=when.isoformat() if when else None,
        redelivered=r.poss_dup or r.poss_resend)


_REPORT_FIELDS = frozenset(f.name for f in fields(ExecReport))


def report_from_payload(data: Mapping[str, Any]) -> ExecReport:
    """An :class:`ExecReport` from its JSON (unknown keys ignored)."""
    return ExecReport(**{k: v for k, v in data.items() if k in _REPORT_FIELDS})


def legacy_venue_event(data: Mapping[str, Any]) -> VenueEvent:
    """The venue event of a payload written before venue events existed: an
    ``ExecutionReportSignal`` (FIX-coded, the shape of :class:`ExecReport`) in a recorded
    workflow history or signal."""
    return venue_event(report_from_payload(data))


def is_legacy_payload(data: Mapping[str, Any]) -> bool:
    return "kind" not in data and "msg_type" in data
