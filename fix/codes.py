"""The FIX 4.4 codes Sherwood speaks: tag numbers, MsgTypes, the code enums of the order and
report fields, the tables between Sherwood's words and those codes, and :func:`text`, how any
field's value is read.

Everything here is a name for a number or letter on the wire, nothing more. Part of the FIX
vocabulary: :mod:`fix.messages` re-exports all of it with the builders and parsers that use it;
import from there. Only the execution gateway and the simulated venues see these codes.

Deliberately not here: building or parsing messages (:mod:`fix.messages`), the session layer's
own admin codes (``fix/session.py`` keeps those), and codes nobody reads or writes.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

import simplefix


class Tag(IntEnum):
    """Tags Sherwood's application code reads or writes (header tags included where the
    application sets or reads them; the session layer writes the rest of the header)."""

    AVG_PX = 6
    CL_ORD_ID = 11
    CUM_QTY = 14
    EXEC_ID = 17
    LAST_PX = 31
    LAST_QTY = 32
    MSG_SEQ_NUM = 34
    MSG_TYPE = 35
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    POSS_DUP_FLAG = 43
    PRICE = 44
    REF_SEQ_NUM = 45
    SENDER_COMP_ID = 49
    SENDING_TIME = 52
    SIDE = 54
    SYMBOL = 55
    TARGET_COMP_ID = 56
    TEXT = 58
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    POSS_RESEND = 97
    STOP_PX = 99
    CXL_REJ_REASON = 102
    ORD_REJ_REASON = 103
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    REF_MSG_TYPE = 372
    BUSINESS_REJECT_REASON = 380
    CXL_REJ_RESPONSE_TO = 434
    ORD_STATUS_REQ_ID = 790


# The FIX field names, as they appear in texts to the counterparty ("ClOrdID(11)").
FIELD_NAMES: dict[Tag, str] = {
    Tag.AVG_PX: "AvgPx", Tag.CL_ORD_ID: "ClOrdID", Tag.CUM_QTY: "CumQty", Tag.EXEC_ID: "ExecID",
    Tag.LAST_PX: "LastPx", Tag.LAST_QTY: "LastQty", Tag.MSG_SEQ_NUM: "MsgSeqNum",
    Tag.MSG_TYPE: "MsgType", Tag.ORDER_ID: "OrderID", Tag.ORDER_QTY: "OrderQty",
    Tag.ORD_STATUS: "OrdStatus", Tag.ORD_TYPE: "OrdType", Tag.ORIG_CL_ORD_ID: "OrigClOrdID",
    Tag.POSS_DUP_FLAG: "PossDupFlag", Tag.PRICE: "Price", Tag.REF_SEQ_NUM: "RefSeqNum",
    Tag.SENDER_COMP_ID: "SenderCompID", Tag.SENDING_TIME: "SendingTime", Tag.SIDE: "Side",
    Tag.SYMBOL: "Symbol", Tag.TARGET_COMP_ID: "TargetCompID", Tag.TEXT: "Text",
    Tag.TIME_IN_FORCE: "TimeInForce", Tag.TRANSACT_TIME: "TransactTime",
    Tag.POSS_RESEND: "PossResend", Tag.STOP_PX: "StopPx", Tag.CXL_REJ_REASON: "CxlRejReason",
    Tag.ORD_REJ_REASON: "OrdRejReason", Tag.EXEC_TYPE: "ExecType", Tag.LEAVES_QTY: "LeavesQty",
    Tag.REF_MSG_TYPE: "RefMsgType", Tag.BUSINESS_REJECT_REASON: "BusinessRejectReason",
    Tag.CXL_REJ_RESPONSE_TO: "CxlRejResponseTo", Tag.ORD_STATUS_REQ_ID: "OrdStatusReqID",
}


def field_label(tag: Tag) -> str:
    """A field as named in texts to the counterparty: ``ClOrdID(11)``."""
    return f"{FIELD_NAMES[tag]}({int(tag)})"


class MsgType(StrEnum):
    # session level: the session layer sends these; named for the simulator's sequence-gap fault
    HEARTBEAT = "0"
    EXECUTION_REPORT = "8"
    ORDER_CANCEL_REJECT = "9"
    NEW_ORDER_SINGLE = "D"
    ORDER_CANCEL_REQUEST = "F"
    ORDER_CANCEL_REPLACE_REQUEST = "G"
    ORDER_STATUS_REQUEST = "H"
    BUSINESS_MESSAGE_REJECT = "j"


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
    AT_THE_OPENING = "2"
    IOC = "3"
    FOK = "4"
    AT_THE_CLOSE = "7"


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
    UNKNOWN_ORDER = 5
    UNSUPPORTED = 11
    INCORRECT_QUANTITY = 13


class CxlRejReason(IntEnum):
    TOO_LATE = 0
    UNKNOWN_ORDER = 1
    BROKER_OPTION = 2
    DUPLICATE_CLORDID = 6


class CxlRejResponseTo(StrEnum):
    """CxlRejResponseTo(434): which request an OrderCancelReject answers."""

    ORDER_CANCEL_REQUEST = "1"
    ORDER_CANCEL_REPLACE_REQUEST = "2"


class BusinessRejectReason(IntEnum):
    UNSUPPORTED_MESSAGE_TYPE = 3


# Sherwood's words <-> FIX codes
SIDES = {"buy": Side.BUY, "sell": Side.SELL}
ORD_TYPES = {"market": OrdType.MARKET, "limit": OrdType.LIMIT, "stop": OrdType.STOP,
             "stop_limit": OrdType.STOP_LIMIT}
TIMES_IN_FORCE = {"day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC,
                  "fok": TimeInForce.FOK, "opg": TimeInForce.AT_THE_OPENING,
                  "cls": TimeInForce.AT_THE_CLOSE}
LIMIT_TYPES = frozenset({OrdType.LIMIT, OrdType.STOP_LIMIT})
STOP_TYPES = frozenset({OrdType.STOP, OrdType.STOP_LIMIT})
WORKING_ORD_STATUSES = frozenset({OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED})
FINAL_ORD_STATUSES = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED,
                                OrdStatus.EXPIRED})


def text(msg: simplefix.FixMessage, tag: int) -> str | None:
    """A field's value as text (None when absent)."""
    value = msg.get(tag)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
