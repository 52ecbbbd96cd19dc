"""The FIX 4.4 application vocabulary. Here: the builders and parsers of the order messages
Sherwood sends and its simulated venues receive (NewOrderSingle D, OrderCancelRequest F,
OrderCancelReplaceRequest G, OrderStatusRequest H), and the builders of what the venues answer
(ExecutionReport 8, OrderCancelReject 9, BusinessMessageReject j).

One home for every FIX code: the codes live in :mod:`fix.codes`, the parser of the reports
Sherwood receives and their translation into the order core's
:class:`domain.execution.VenueEvent` in :mod:`fix.reports`; both are re-exported here, so
``from fix.messages import ...`` is the whole vocabulary. The execution gateway
(``activities/gateway.py``, ``workers/gateway.py``) and the simulated venues (``simulators/``)
use these names; nothing else sees a raw FIX code. The session layer (``fix/session.py``) knows
only the session-level messages and never looks inside application messages.

Builders return a simplefix message body (MsgType first; the session adds the header) and take
decimals as already formatted text. Parsers of the venue's inbound messages return each field's
text as received (None when absent) and validate nothing: what is acceptable is the venue's call.

Deliberately not here: sending, sequence numbers, persistence (the session's), routing (the
gateway's), matching and order state (the simulators'), and business rules about what a report
means for an order (``domain/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import simplefix

from domain.execution import VenueCancel, VenueOrder, status_cl_ord_id
from fix.codes import (
    FIELD_NAMES,
    FINAL_ORD_STATUSES,
    LIMIT_TYPES,
    ORD_TYPES,
    SIDES,
    STOP_TYPES,
    TIMES_IN_FORCE,
    WORKING_ORD_STATUSES,
    BusinessRejectReason,
    CxlRejReason,
    CxlRejResponseTo,
    ExecType,
    MsgType,
    OrdRejReason,
    OrdStatus,
    OrdType,
    Side,
    Tag,
    TimeInForce,
    field_label,
    text,
)
from fix.reports import (
    ExecReport,
    cancel_reject_exec_id,
    is_legacy_payload,
    legacy_venue_event,
    parse_inbound,
    parse_utc_timestamp,
    report_from_payload,
    venue_event,
)

__all__ = [
    "FIELD_NAMES", "FINAL_ORD_STATUSES", "LIMIT_TYPES", "ORD_TYPES", "SIDES", "STOP_TYPES",
    "TIMES_IN_FORCE", "WORKING_ORD_STATUSES", "BusinessRejectReason", "CxlRejReason",
    "CxlRejResponseTo", "ExecReport", "ExecType", "InvalidOrderMessage", "MsgType",
    "NewOrderSingle", "OrdRejReason", "OrdStatus", "OrdType", "OrderCancelReplaceRequest",
    "OrderCancelRequest", "OrderStatusRequest", "Side", "Tag", "TimeInForce",
    "business_message_reject", "cancel_reject_exec_id", "execution_report", "field_label",
    "is_legacy_payload", "legacy_venue_event", "new_order_single",
    "order_cancel_reject", "order_cancel_replace_request", "order_cancel_request",
    "order_status_request", "parse_inbound", "parse_new_order_single",
    "parse_order_cancel_replace_request", "parse_order_cancel_request",
    "parse_order_status_request", "parse_utc_timestamp", "report_from_payload", "text",
    "venue_event",
]


class InvalidOrderMessage(ValueError):
    """An order that cannot be expressed in FIX (unsupported side/type/TIF, missing price)."""


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


# ============================================================================ Sherwood -> venue


def _order_terms(order: VenueOrder) -> tuple[str, str, str]:
    """The order's Side, OrdType and TimeInForce codes, after checking FIX can express it."""
    side = _code(SIDES, order.side, "side")
    ord_type = _code(ORD_TYPES, order.order_type, "order type")
    tif = _code(TIMES_IN_FORCE, order.time_in_force, "time in force")
    if not order.symbol or not order.qty:
        raise InvalidOrderMessage("symbol and qty are required")
    if not order.qty.isdigit() or not int(order.qty):
        # venues trade whole shares: a fraction is the firm's to fill (domain.fractional)
        raise InvalidOrderMessage(f"OrderQty {order.qty!r} is not a whole number of shares")
    if ord_type in LIMIT_TYPES and not order.limit_price:
        raise InvalidOrderMessage(f"{order.order_type} order without limit_price")
    if ord_type in STOP_TYPES and not order.stop_price:
        raise InvalidOrderMessage(f"{order.order_type} order without stop_price")
    return side, ord_type, tif


def _append_prices(msg: simplefix.FixMessage, order: VenueOrder, ord_type: str) -> None:
    if ord_type in LIMIT_TYPES:
        msg.append_pair(Tag.PRICE, order.limit_price)
    if ord_type in STOP_TYPES:
        msg.append_pair(Tag.STOP_PX, order.stop_price)


def new_order_single(order: VenueOrder, *, poss_resend: bool = False) -> simplefix.FixMessage:
    """NewOrderSingle(D): ClOrdID, Symbol, Side, TransactTime, OrderQty, OrdType, Price (limit
    types), StopPx (stop types), TimeInForce. Raises :class:`InvalidOrderMessage`."""
    side, ord_type, tif = _order_terms(order)
    msg = _start(MsgType.NEW_ORDER_SINGLE, poss_resend)
    msg.append_pair(Tag.CL_ORD_ID, order.cl_ord_id)
    msg.append_pair(Tag.SYMBOL, order.symbol)
    msg.append_pair(Tag.SIDE, side)
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    msg.append_pair(Tag.ORDER_QTY, order.qty)
    msg.append_pair(Tag.ORD_TYPE, ord_type)
    _append_prices(msg, order, ord_type)
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


def order_cancel_replace_request(
    order: VenueOrder, *, orig_cl_ord_id: str, cl_ord_id: str, poss_resend: bool = False
) -> simplefix.FixMessage:
    """OrderCancelReplaceRequest(G): OrigClOrdID (the ClOrdID of the order as it stands),
    ClOrdID (the replacement's own), Side, TransactTime, Symbol, OrderQty, OrdType, Price (limit
    types), StopPx (stop types), TimeInForce; ``order`` carries the new terms. Raises
    :class:`InvalidOrderMessage`."""
    side, ord_type, tif = _order_terms(order)
    msg = _start(MsgType.ORDER_CANCEL_REPLACE_REQUEST, poss_resend)
    msg.append_pair(Tag.ORIG_CL_ORD_ID, orig_cl_ord_id)
    msg.append_pair(Tag.CL_ORD_ID, cl_ord_id)
    msg.append_pair(Tag.SIDE, side)
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    msg.append_pair(Tag.SYMBOL, order.symbol)
    msg.append_pair(Tag.ORDER_QTY, order.qty)
    msg.append_pair(Tag.ORD_TYPE, ord_type)
    _append_prices(msg, order, ord_type)
    msg.append_pair(Tag.TIME_IN_FORCE, tif)
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


# ============================================================================ at the venue: inbound


@dataclass(frozen=True)
class NewOrderSingle:
    """A NewOrderSingle(D) as received: each field's text, None when the tag is absent."""

    cl_ord_id: str | None
    symbol: str | None
    side: str | None
    order_qty: str | None
    ord_type: str | None
    price: str | None = None
    stop_px: str | None = None
    time_in_force: str | None = None
    transact_time: str | None = None


@dataclass(frozen=True)
class OrderCancelRequest:
    """An OrderCancelRequest(F) as received (field texts, None when absent)."""

    orig_cl_ord_id: str | None
    cl_ord_id: str | None
    symbol: str | None = None
    side: str | None = None
    order_qty: str | None = None
    transact_time: str | None = None


@dataclass(frozen=True)
class OrderCancelReplaceRequest:
    """An OrderCancelReplaceRequest(G) as received (field texts, None when absent)."""

    orig_cl_ord_id: str | None
    cl_ord_id: str | None
    symbol: str | None
    side: str | None
    order_qty: str | None
    ord_type: str | None
    price: str | None = None
    stop_px: str | None = None
    time_in_force: str | None = None
    transact_time: str | None = None


@dataclass(frozen=True)
class OrderStatusRequest:
    """An OrderStatusRequest(H) as received (field texts, None when absent)."""

    cl_ord_id: str | None
    symbol: str | None = None
    side: str | None = None
    ord_status_req_id: str | None = None


def parse_new_order_single(msg: simplefix.FixMessage) -> NewOrderSingle:
    return NewOrderSingle(
        cl_ord_id=text(msg, Tag.CL_ORD_ID), symbol=text(msg, Tag.SYMBOL),
        side=text(msg, Tag.SIDE), order_qty=text(msg, Tag.ORDER_QTY),
        ord_type=text(msg, Tag.ORD_TYPE), price=text(msg, Tag.PRICE),
        stop_px=text(msg, Tag.STOP_PX), time_in_force=text(msg, Tag.TIME_IN_FORCE),
        transact_time=text(msg, Tag.TRANSACT_TIME),
    )


def parse_order_cancel_request(msg: simplefix.FixMessage) -> OrderCancelRequest:
    return OrderCancelRequest(
        orig_cl_ord_id=text(msg, Tag.ORIG_CL_ORD_ID), cl_ord_id=text(msg, Tag.CL_ORD_ID),
        symbol=text(msg, Tag.SYMBOL), side=text(msg, Tag.SIDE),
        order_qty=text(msg, Tag.ORDER_QTY), transact_time=text(msg, Tag.TRANSACT_TIME),
    )


def parse_order_cancel_replace_request(msg: simplefix.FixMessage) -> OrderCancelReplaceRequest:
    return OrderCancelReplaceRequest(
        orig_cl_ord_id=text(msg, Tag.ORIG_CL_ORD_ID), cl_ord_id=text(msg, Tag.CL_ORD_ID),
        symbol=text(msg, Tag.SYMBOL), side=text(msg, Tag.SIDE),
        order_qty=text(msg, Tag.ORDER_QTY), ord_type=text(msg, Tag.ORD_TYPE),
        price=text(msg, Tag.PRICE), stop_px=text(msg, Tag.STOP_PX),
        time_in_force=text(msg, Tag.TIME_IN_FORCE), transact_time=text(msg, Tag.TRANSACT_TIME),
    )


def parse_order_status_request(msg: simplefix.FixMessage) -> OrderStatusRequest:
    return OrderStatusRequest(
        cl_ord_id=text(msg, Tag.CL_ORD_ID), symbol=text(msg, Tag.SYMBOL),
        side=text(msg, Tag.SIDE), ord_status_req_id=text(msg, Tag.ORD_STATUS_REQ_ID),
    )


# ============================================================================ venue -> Sherwood


def execution_report(
    *, order_id: str, cl_ord_id: str, exec_id: str, exec_type: str, ord_status: str,
    symbol: str, side: str, order_qty: str, leaves_qty: str, cum_qty: str, avg_px: str,
    orig_cl_ord_id: str | None = None, ord_type: str | None = None, price: str | None = None,
    stop_px: str | None = None, time_in_force: str | None = None, last_qty: str | None = None,
    last_px: str | None = None, ord_rej_reason: int | None = None, text: str | None = None,
    poss_resend: bool = False,
) -> simplefix.FixMessage:
    """ExecutionReport(8): OrderID, ClOrdID, OrigClOrdID (when given), ExecID, ExecType,
    OrdStatus, Symbol, Side, OrderQty, then OrdType, Price, StopPx, TimeInForce (each when
    given), LastQty and LastPx (on a trade only), LeavesQty, CumQty, AvgPx, OrdRejReason (on a
    rejection only), Text (when given), TransactTime (now)."""
    msg = _start(MsgType.EXECUTION_REPORT, poss_resend)
    msg.append_pair(Tag.ORDER_ID, order_id)
    msg.append_pair(Tag.CL_ORD_ID, cl_ord_id)
    if orig_cl_ord_id:
        msg.append_pair(Tag.ORIG_CL_ORD_ID, orig_cl_ord_id)
    msg.append_pair(Tag.EXEC_ID, exec_id)
    msg.append_pair(Tag.EXEC_TYPE, exec_type)
    msg.append_pair(Tag.ORD_STATUS, ord_status)
    msg.append_pair(Tag.SYMBOL, symbol)
    msg.append_pair(Tag.SIDE, side)
    msg.append_pair(Tag.ORDER_QTY, order_qty)
    if ord_type:
        msg.append_pair(Tag.ORD_TYPE, ord_type)
    if price is not None:
        msg.append_pair(Tag.PRICE, price)
    if stop_px is not None:
        msg.append_pair(Tag.STOP_PX, stop_px)
    if time_in_force:
        msg.append_pair(Tag.TIME_IN_FORCE, time_in_force)
    if exec_type == ExecType.TRADE:
        msg.append_pair(Tag.LAST_QTY, last_qty)
        msg.append_pair(Tag.LAST_PX, last_px)
    msg.append_pair(Tag.LEAVES_QTY, leaves_qty)
    msg.append_pair(Tag.CUM_QTY, cum_qty)
    msg.append_pair(Tag.AVG_PX, avg_px)
    if ord_rej_reason is not None and exec_type == ExecType.REJECTED:
        msg.append_pair(Tag.ORD_REJ_REASON, ord_rej_reason)
    if text:
        msg.append_pair(Tag.TEXT, text)
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    return msg


def order_cancel_reject(
    *, order_id: str, cl_ord_id: str, orig_cl_ord_id: str, ord_status: str, cxl_rej_reason: int,
    text: str, response_to: str = CxlRejResponseTo.ORDER_CANCEL_REQUEST,
    poss_resend: bool = False,
) -> simplefix.FixMessage:
    """OrderCancelReject(9): OrderID, ClOrdID (the request's), OrigClOrdID, OrdStatus (of the
    order), CxlRejResponseTo, CxlRejReason, Text, TransactTime (now)."""
    msg = _start(MsgType.ORDER_CANCEL_REJECT, poss_resend)
    msg.append_pair(Tag.ORDER_ID, order_id)
    msg.append_pair(Tag.CL_ORD_ID, cl_ord_id)
    msg.append_pair(Tag.ORIG_CL_ORD_ID, orig_cl_ord_id)
    msg.append_pair(Tag.ORD_STATUS, ord_status)
    msg.append_pair(Tag.CXL_REJ_RESPONSE_TO, response_to)
    msg.append_pair(Tag.CXL_REJ_REASON, cxl_rej_reason)
    msg.append_pair(Tag.TEXT, text)
    msg.append_utc_timestamp(Tag.TRANSACT_TIME, precision=3)
    return msg


def business_message_reject(
    *, ref_seq_num: str | None, ref_msg_type: str, reason: int, text: str
) -> simplefix.FixMessage:
    """BusinessMessageReject(j): RefSeqNum (when known), RefMsgType, BusinessRejectReason,
    Text."""
    msg = _start(MsgType.BUSINESS_MESSAGE_REJECT, False)
    if ref_seq_num:
        msg.append_pair(Tag.REF_SEQ_NUM, ref_seq_num)
    msg.append_pair(Tag.REF_MSG_TYPE, ref_msg_type)
    msg.append_pair(Tag.BUSINESS_REJECT_REASON, reason)
    msg.append_pair(Tag.TEXT, text)
    return msg
