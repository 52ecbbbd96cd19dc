"""The FIX vocabulary (fix.messages): every builder's fields and their order, and round trips of
each message through the wire bytes into the parser of the side that receives it."""

from __future__ import annotations

import pytest
import simplefix

from domain.execution import VenueCancel, VenueEventKind, VenueOrder, VenueStatus
from fix.framing import encode, parse_frame
from fix.messages import (
    BusinessRejectReason,
    CxlRejReason,
    CxlRejResponseTo,
    ExecType,
    InvalidOrderMessage,
    MsgType,
    NewOrderSingle,
    OrderCancelReplaceRequest,
    OrderCancelRequest,
    OrderStatusRequest,
    OrdRejReason,
    OrdStatus,
    OrdType,
    Side,
    Tag,
    TimeInForce,
    business_message_reject,
    execution_report,
    field_label,
    new_order_single,
    order_cancel_reject,
    order_cancel_replace_request,
    order_cancel_request,
    order_status_request,
    parse_inbound,
    parse_new_order_single,
    parse_order_cancel_replace_request,
    parse_order_cancel_request,
    parse_order_status_request,
    text,
    venue_event,
)

ORDER_ID = "0b5c6a3e-0000-4000-8000-000000000001"


def wire(msg: simplefix.FixMessage) -> simplefix.FixMessage:
    """``msg`` framed (MsgType first, as the session sends it) and parsed back from the bytes."""
    pairs = [p for p in msg.pairs if p[0] == b"35"] + [p for p in msg.pairs if p[0] != b"35"]
    return parse_frame(encode(pairs))


def tags(msg: simplefix.FixMessage) -> list[int]:
    return [int(t) for t, _ in msg.pairs]


def order(order_type: str = "limit", **kw: object) -> VenueOrder:
    fields: dict[str, object] = dict(
        order_id=ORDER_ID, account_id="acct", shard=1, symbol="AAPL", side="buy", qty="10",
        order_type=order_type, time_in_force="day",
        limit_price="187.25" if order_type in ("limit", "stop_limit") else None,
        stop_price="188" if order_type in ("stop", "stop_limit") else None)
    fields.update(kw)
    return VenueOrder(**fields)  # type: ignore[arg-type]


def test_field_label() -> None:
    assert field_label(Tag.CL_ORD_ID) == "ClOrdID(11)"
    assert field_label(Tag.STOP_PX) == "StopPx(99)"


# ---------------------------------------------------------------- Sherwood -> venue


ORDER_TYPES = [
    ("market", OrdType.MARKET, []), ("limit", OrdType.LIMIT, [44]), ("stop", OrdType.STOP, [99]),
    ("stop_limit", OrdType.STOP_LIMIT, [44, 99]),
]


@pytest.mark.parametrize(("order_type", "code", "price_tags"), ORDER_TYPES)
def test_new_order_single_round_trip(order_type: str, code: str, price_tags: list[int]) -> None:
    msg = new_order_single(order(order_type, time_in_force="gtc"))
    assert tags(msg) == [35, 11, 55, 54, 60, 38, 40, *price_tags, 59]
    got = parse_new_order_single(wire(msg))
    assert got == NewOrderSingle(
        cl_ord_id=ORDER_ID, symbol="AAPL", side=Side.BUY, order_qty="10", ord_type=code,
        price="187.25" if 44 in price_tags else None, stop_px="188" if 99 in price_tags else None,
        time_in_force=TimeInForce.GTC, transact_time=got.transact_time)
    assert got.transact_time and len(got.transact_time) == len("20260102-14:30:00.123")


@pytest.mark.parametrize("qty", ["2.5", "0", "0.5", "1E+1", "-1"])
def test_order_qty_to_a_venue_is_whole(qty: str) -> None:
    with pytest.raises(InvalidOrderMessage, match="whole number"):
        new_order_single(order(qty=qty))


def test_cancel_and_status_requests_round_trip() -> None:
    req = VenueCancel(order_id=ORDER_ID, venue="MM1", symbol="AAPL", side="sell", qty="10",
                      attempt=2)
    cxl = order_cancel_request(req)
    assert tags(cxl) == [35, 41, 11, 54, 60, 55, 38]
    got = parse_order_cancel_request(wire(cxl))
    assert got == OrderCancelRequest(
        orig_cl_ord_id=ORDER_ID, cl_ord_id=f"{ORDER_ID}:C2", symbol="AAPL", side=Side.SELL,
        order_qty="10", transact_time=got.transact_time)
    status = order_status_request(req)
    assert tags(status) == [35, 11, 54, 55, 790]
    assert parse_order_status_request(wire(status)) == OrderStatusRequest(
        cl_ord_id=ORDER_ID, symbol="AAPL", side=Side.SELL, ord_status_req_id=f"{ORDER_ID}:S2")


@pytest.mark.parametrize(("order_type", "code", "price_tags"), ORDER_TYPES)
def test_order_cancel_replace_request_round_trip(order_type: str, code: str,
                                                 price_tags: list[int]) -> None:
    new_terms = order(order_type, qty="25", side="sell", time_in_force="gtc")
    msg = order_cancel_replace_request(new_terms, orig_cl_ord_id=ORDER_ID,
                                       cl_ord_id=f"{ORDER_ID}:R1")
    assert text(msg, Tag.MSG_TYPE) == MsgType.ORDER_CANCEL_REPLACE_REQUEST
    assert tags(msg) == [35, 41, 11, 54, 60, 55, 38, 40, *price_tags, 59]
    got = parse_order_cancel_replace_request(wire(msg))
    assert got == OrderCancelReplaceRequest(
        orig_cl_ord_id=ORDER_ID, cl_ord_id=f"{ORDER_ID}:R1", symbol="AAPL", side=Side.SELL,
        order_qty="25", ord_type=code,
        price="187.25" if 44 in price_tags else None, stop_px="188" if 99 in price_tags else None,
        time_in_force=TimeInForce.GTC, transact_time=got.transact_time)
    assert got.transact_time


def test_order_cancel_replace_request_refuses_what_fix_cannot_say() -> None:
    with pytest.raises(InvalidOrderMessage, match="without limit_price"):
        order_cancel_replace_request(order("limit", limit_price=None), orig_cl_ord_id=ORDER_ID,
                                     cl_ord_id=f"{ORDER_ID}:R1")
    with pytest.raises(InvalidOrderMessage, match="unsupported side"):
        order_cancel_replace_request(order("market", side="short"), orig_cl_ord_id=ORDER_ID,
                                     cl_ord_id=f"{ORDER_ID}:R1")


def test_poss_resend_goes_in_the_header() -> None:
    msg = order_cancel_replace_request(order(), orig_cl_ord_id=ORDER_ID, cl_ord_id="x",
                                       poss_resend=True)
    assert tags(msg)[:2] == [97, 35] and text(msg, Tag.POSS_RESEND) == "Y"


# ---------------------------------------------------------------- venue -> Sherwood


def report(**kw: object) -> simplefix.FixMessage:
    fields: dict[str, object] = dict(
        order_id="MM1-O1", cl_ord_id=ORDER_ID, exec_id="MM1-E2", exec_type=ExecType.TRADE,
        ord_status=OrdStatus.PARTIALLY_FILLED, symbol="AAPL", side=Side.BUY, order_qty="10",
        leaves_qty="6", cum_qty="4", avg_px="187.1", ord_type=OrdType.LIMIT, price="187.25",
        time_in_force=TimeInForce.DAY, last_qty="4", last_px="187.1")
    fields.update(kw)
    return execution_report(**fields)  # type: ignore[arg-type]


def test_execution_report_fields_and_round_trip() -> None:
    fill = report()
    assert tags(fill) == [35, 37, 11, 17, 150, 39, 55, 54, 38, 40, 44, 59, 32, 31, 151, 14, 6, 60]
    got = parse_inbound("MM1", wire(fill))
    assert got is not None
    assert (got.msg_type, got.exec_id, got.exec_type, got.ord_status, got.cl_ord_id,
            got.order_id, got.venue_order_id, got.last_qty, got.last_px, got.cum_qty,
            got.leaves_qty, got.avg_px) == (
        "8", "MM1-E2", "F", "1", ORDER_ID, ORDER_ID, "MM1-O1", "4", "187.1", "4", "6", "187.1")
    event = venue_event(got)
    assert (event.kind, event.status) == (VenueEventKind.FILL, VenueStatus.PARTIALLY_FILLED)


def test_execution_report_optional_fields() -> None:
    # LastQty/LastPx on a trade only, OrdRejReason on a rejection only, OrigClOrdID when given
    ack = report(exec_type=ExecType.NEW, ord_status=OrdStatus.NEW, ord_rej_reason=1, text="hi",
                 orig_cl_ord_id=None, ord_type=None, price=None, time_in_force=None,
                 stop_px="188")
    assert tags(ack) == [35, 37, 11, 17, 150, 39, 55, 54, 38, 99, 151, 14, 6, 58, 60]
    rej = report(exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED,
                 ord_rej_reason=OrdRejReason.UNKNOWN_SYMBOL, text="unknown symbol XYZ",
                 orig_cl_ord_id=f"{ORDER_ID}:C1", poss_resend=True)
    assert tags(rej) == [97, 35, 37, 11, 41, 17, 150, 39, 55, 54, 38, 40, 44, 59, 151, 14, 6,
                         103, 58, 60]
    got = parse_inbound("MM1", wire(rej))
    assert got is not None and got.ord_rej_reason == "1" and got.poss_resend
    assert venue_event(got).kind == VenueEventKind.REJECTED


def test_order_cancel_reject_round_trip() -> None:
    msg = order_cancel_reject(order_id="MM1-O1", cl_ord_id=f"{ORDER_ID}:C1",
                              orig_cl_ord_id=ORDER_ID, ord_status=OrdStatus.FILLED,
                              cxl_rej_reason=CxlRejReason.TOO_LATE, text="too late")
    assert tags(msg) == [35, 37, 11, 41, 39, 434, 102, 58, 60]
    assert text(msg, Tag.CXL_REJ_RESPONSE_TO) == CxlRejResponseTo.ORDER_CANCEL_REQUEST
    got = parse_inbound("MM1", wire(msg))
    assert got is not None
    assert (got.msg_type, got.order_id, got.cl_ord_id, got.ord_status, got.cxl_rej_reason,
            got.text) == ("9", ORDER_ID, f"{ORDER_ID}:C1", "2", "0", "too late")
    assert venue_event(got).kind == VenueEventKind.CANCEL_REJECTED


def test_replace_answers_belong_to_the_order_replaced() -> None:
    """Replaced (ExecType 5) and a refused replace (35=9, CxlRejResponseTo 2) are booked by the
    order named in OrigClOrdID; the replace's ClOrdID is its replacement's id."""
    new = "0b5c6a3e-0000-4000-8000-000000000002"
    done = report(exec_type=ExecType.REPLACED, ord_status=OrdStatus.NEW, cl_ord_id=new,
                  orig_cl_ord_id=ORDER_ID)
    got = parse_inbound("MM1", wire(done))
    assert got is not None and (got.order_id, got.cl_ord_id) == (ORDER_ID, new)
    assert venue_event(got).kind == VenueEventKind.REPLACED
    refused = order_cancel_reject(order_id="MM1-O1", cl_ord_id=new, orig_cl_ord_id=ORDER_ID,
                                  ord_status=OrdStatus.NEW, cxl_rej_reason=CxlRejReason.TOO_LATE,
                                  text="no", response_to=CxlRejResponseTo.ORDER_CANCEL_REPLACE_REQUEST)
    got = parse_inbound("MM1", wire(refused))
    assert got is not None and got.order_id == ORDER_ID and got.cxl_rej_response_to == "2"
    event = venue_event(got)
    assert event.kind == VenueEventKind.REPLACE_REJECTED and not event.final


def test_business_message_reject() -> None:
    msg = business_message_reject(ref_seq_num="7", ref_msg_type="G",
                                  reason=BusinessRejectReason.UNSUPPORTED_MESSAGE_TYPE,
                                  text="unsupported message type G")
    assert [(int(t), v.decode()) for t, v in msg.pairs] == [
        (35, "j"), (45, "7"), (372, "G"), (380, "3"), (58, "unsupported message type G")]
    assert tags(business_message_reject(ref_seq_num=None, ref_msg_type="", reason=3,
                                        text="?")) == [35, 372, 380, 58]
    assert parse_inbound("MM1", wire(msg)) is None  # not a report
