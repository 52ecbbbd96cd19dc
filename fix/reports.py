"""What Sherwood receives from a venue: the parser of ExecutionReport(8) / OrderCancelReject(9)
into :class:`ExecReport` (what the gateway records), and that report's meaning for the order
core, :class:`domain.execution.VenueEvent` (also for payloads written before venue events
existed).

Part of the FIX vocabulary: :mod:`fix.messages` re-exports everything here; import from there.

Deliberately not here: building messages (:mod:`fix.messages`), recording or delivering reports
(the gateway's), and what a report does to an order (``domain/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import simplefix

from domain.execution import VenueEvent, VenueEventKind, VenueStatus, order_id_of
from fix.codes import CxlRejResponseTo, ExecType, MsgType, OrdStatus, Tag, text


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
    cxl_rej_response_to: str | None = None  # CxlRejResponseTo(434) of an OrderCancelReject
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
        exec_type = text(msg, Tag.EXEC_TYPE) or ""
        # Replaced is booked by the order it replaced (OrigClOrdID): after the fills of it that
        # came first, in one transaction that hands the order over to its replacement
        owner = orig if exec_type == ExecType.REPLACED and orig else cl_ord_id
        return ExecReport(
            venue=venue, exec_id=exec_id, msg_type=msg_type, cl_ord_id=cl_ord_id,
            order_id=order_id_of(owner), exec_type=exec_type,
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
            cxl_rej_reason=text(msg, Tag.CXL_REJ_REASON),
            cxl_rej_response_to=text(msg, Tag.CXL_REJ_RESPONSE_TO),
            transact_time=text(msg, Tag.TRANSACT_TIME),
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


def venue_event(r: ExecReport) -> VenueEvent:
    """What the report means, in the order core's words (see :class:`VenueEventKind`)."""
    if r.msg_type == MsgType.ORDER_CANCEL_REJECT:
        kind = (VenueEventKind.REPLACE_REJECTED
                if r.cxl_rej_response_to == CxlRejResponseTo.ORDER_CANCEL_REPLACE_REQUEST
                else VenueEventKind.CANCEL_REJECTED)
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
