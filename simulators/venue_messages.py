"""The FIX body of what the matching engine answers (:mod:`simulators.venue_orders`): an
ExecutionReport(8) or an OrderCancelReject(9), built by :mod:`fix.messages`; and the Heartbeat
a venue stores but never sends, to burn an outbound sequence number (fault injection).

It does not send, sequence or add the header (the FIX session does). Importable from
:mod:`simulators.market_maker` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import simplefix

from fix.messages import MsgType, Tag, execution_report, order_cancel_reject
from simulators.venue_orders import Report, VenueCancelReject, fmt_decimal


def build_message(report: Report, *, poss_resend: bool = False,
                  garble: Mapping[str, str] | None = None) -> simplefix.FixMessage:
    """The FIX body of ``report`` (MsgType and application fields; the session adds the header).

    With ``poss_resend`` the header carries PossResend(97)=Y. ``garble``: field texts sent
    instead of the report's (``last_px``, ``last_qty``, ``cum_qty``, ``leaves_qty``): the fault
    injection of a buggy venue.
    """
    garble = garble or {}
    if isinstance(report, VenueCancelReject):
        return order_cancel_reject(
            order_id=report.order_id, cl_ord_id=report.cl_ord_id,
            orig_cl_ord_id=report.orig_cl_ord_id, ord_status=report.ord_status,
            cxl_rej_reason=report.cxl_rej_reason, text=report.text, response_to=report.response_to,
            poss_resend=poss_resend)
    return execution_report(
        order_id=report.order_id, cl_ord_id=report.cl_ord_id, exec_id=report.exec_id,
        exec_type=report.exec_type, ord_status=report.ord_status, symbol=report.symbol,
        side=report.side, order_qty=fmt_decimal(report.order_qty),
        leaves_qty=garble.get("leaves_qty", fmt_decimal(report.leaves_qty)),
        cum_qty=garble.get("cum_qty", fmt_decimal(report.cum_qty)),
        avg_px=fmt_decimal(report.avg_px), orig_cl_ord_id=report.orig_cl_ord_id,
        ord_type=report.ord_type, price=_fmt(report.price), stop_px=_fmt(report.stop_px),
        time_in_force=report.time_in_force,
        last_qty=garble.get("last_qty", fmt_decimal(report.last_qty)),
        last_px=garble.get("last_px", fmt_decimal(report.last_px)), ord_rej_reason=report.ord_rej_reason,
        text=report.text, poss_resend=poss_resend)


def _fmt(value: Decimal | None) -> str | None:
    return None if value is None else fmt_decimal(value)


def unsent_heartbeat(sender_comp_id: str, target_comp_id: str, seq: int) -> simplefix.FixMessage:
    """A whole Heartbeat(0) under MsgSeqNum ``seq`` (header included) for the session store only:
    the peer sees a gap, and a Heartbeat is an admin message the session never re-sends."""
    heartbeat = simplefix.FixMessage()
    heartbeat.append_pair(Tag.MSG_TYPE, MsgType.HEARTBEAT.value)
    heartbeat.append_pair(Tag.SENDER_COMP_ID, sender_comp_id)
    heartbeat.append_pair(Tag.TARGET_COMP_ID, target_comp_id)
    heartbeat.append_pair(Tag.MSG_SEQ_NUM, seq)
    heartbeat.append_utc_timestamp(Tag.SENDING_TIME, precision=3)
    return heartbeat
