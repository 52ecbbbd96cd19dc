"""Payloads exchanged between order workflows and the execution gateway (Temporal activity
inputs/outputs and the execution-report signal). Plain dataclasses; decimals travel as strings.

Identity rules (DESIGN: idempotent at every layer):
- the order workflow id is the order id (a UUID string);
- the FIX ClOrdID of an order is its order id; a cancel or status request gets
  ``<order id>:C<n>`` / ``<order id>:S<n>``, so any ClOrdID maps back to its order with
  :func:`order_id_of` and an activity retry never creates a second order at the venue;
- an ExecID is the identity of a venue event: ``(venue, exec_id)`` is booked once, ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


def order_id_of(cl_ord_id: str) -> str:
    """The order id a ClOrdID belongs to (cancel/status ids carry a ``:`` suffix)."""
    return cl_ord_id.split(":", 1)[0]


def cancel_cl_ord_id(order_id: str, attempt: int) -> str:
    return f"{order_id}:C{attempt}"


def status_cl_ord_id(order_id: str, attempt: int) -> str:
    return f"{order_id}:S{attempt}"


def expiry_cl_ord_id(order_id: str, attempt: int) -> str:
    """The cancel we send when a DAY order outlives the close: its confirmation means EXPIRED."""
    return f"{order_id}:X{attempt}"


def is_expiry_request(cl_ord_id: str) -> bool:
    return ":X" in cl_ord_id


@dataclass
class VenueOrder:
    """Input of the gateway's ``send_new_order`` activity."""

    order_id: str
    account_id: str
    shard: int
    symbol: str
    side: str  # buy | sell
    qty: str
    order_type: str  # market | limit | stop | stop_limit
    time_in_force: str  # day | gtc | ioc | fok
    limit_price: str | None = None
    stop_price: str | None = None
    venue: str | None = None  # None: the gateway chooses

    @property
    def cl_ord_id(self) -> str:
        return self.order_id


@dataclass
class VenueAck:
    """Result of ``send_new_order``: where the order went. ``resent`` is True when this call
    found the order already handed to the session (an activity retry) and sent nothing new.

    ``reports``: the venue's first answers (New, and the fills of an order that executes at once)
    when they arrived within the gateway's short wait, in arrival order. The gateway does not
    signal those: the workflow books them with the routing, in one workflow task and one shard
    transaction. Later reports come as ``execution_report`` signals. A retry returns every report
    recorded for the order; the workflow's ExecID set makes the overlap harmless."""

    venue: str
    cl_ord_id: str
    resent: bool = False
    reports: list[VenueEvent] = field(default_factory=list)


@dataclass
class VenueCancel:
    """Input of ``send_cancel`` (OrderCancelRequest) and ``send_status`` (OrderStatusRequest)."""

    order_id: str
    venue: str
    symbol: str
    side: str
    qty: str
    attempt: int = 1
    expiry: bool = False  # a DAY order's own cancel at the close (ClOrdID from expiry_cl_ord_id)

    @property
    def cl_ord_id(self) -> str:
        return (expiry_cl_ord_id if self.expiry else cancel_cl_ord_id)(self.order_id, self.attempt)


@dataclass
class VenueReplace:
    """Input of ``send_replace`` (OrderCancelReplaceRequest): ``order`` carries the new terms
    under the replacement's id (its ClOrdID; ``qty`` is the venue's total, what the chain has
    filled included); ``orig_order_id`` is the order it replaces, at ``venue``."""

    order: VenueOrder
    orig_order_id: str
    venue: str


# --- venue events: what a venue said, in the order core's words --------------------------


class VenueEventKind(StrEnum):
    """What happened at the venue. The gateway translates each inbound FIX message into one of
    these (``fix.messages``); nothing outside ``fix/``, the gateway and the simulators sees a
    FIX code."""

    ACK = "ack"  # the venue accepted the order: it is working there
    FILL = "fill"  # an execution of ``last_qty`` at ``last_px``
    CANCELED = "canceled"  # canceled at the venue (at our request, or its own)
    EXPIRED = "expired"  # expired at the venue (a DAY order at the close, an IOC/FOK rest)
    REJECTED = "rejected"  # the venue refused the order
    REPLACED = "replaced"  # a cancel/replace request took effect
    STATUS = "status"  # the answer to a status request: ``status`` says where the order stands
    CANCEL_REJECTED = "cancel_rejected"  # the venue refused a cancel: the order lives on
    REPLACE_REJECTED = "replace_rejected"  # the venue refused a replace: the order lives on as it was
    PENDING = "pending"  # pending new/cancel/replace: an acknowledgement that changes nothing
    BUSTED = "busted"  # the venue busted an earlier trade
    CORRECTED = "corrected"  # the venue corrected an earlier trade
    OTHER = "other"  # anything else a venue sent (audited; nothing changes)


class VenueStatus(StrEnum):
    """Where the order stands at the venue after the event (FIX OrdStatus, in words)."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    PENDING_NEW = "pending_new"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    DONE_FOR_DAY = "done_for_day"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"


# the venue says the order is done with
FINAL_VENUE_STATUSES = frozenset({VenueStatus.FILLED, VenueStatus.CANCELED, VenueStatus.REJECTED,
                                  VenueStatus.EXPIRED})
# the order still works at the venue
WORKING_VENUE_STATUSES = frozenset({VenueStatus.NEW, VenueStatus.PARTIALLY_FILLED})


@dataclass
class RouteFacts:
    """The route of the order a fill belongs to, as the gateway recorded it when it sent the
    order (``gateway_routes``), attached by the gateway to each fill it delivers so the shard
    stores it with the execution (``domain.execution_quality.fill_record``).

    ``route_order_id`` is the order that was routed: the order itself, or for a replacement
    (a new ClOrdID after the venue's Replaced) the first order of its chain. ``routed_at`` is
    ISO 8601 (the gateway database's clock); ``since_routed_ms`` the time from routing to this
    report's arrival at the gateway (same clock). Decimals as strings, None when unknown: the
    gateway had no quote at routing."""

    venue: str
    route_order_id: str
    order_type: str
    side: str
    routed_at: str
    limit_price: str | None = None
    bid: str | None = None
    ask: str | None = None
    quote_age_ms: int | None = None
    since_routed_ms: int | None = None


@dataclass
class VenueEvent:
    """One venue event delivered to an order (the ``execution_report`` signal's payload, and
    the early answers a send returns): ``(venue, exec_id)`` is its identity, booked once, ever.

    Decimals travel as strings, exactly as the venue sent them (the order core parses and bounds
    them). ``kind`` has no default: a payload written before venue events existed (a FIX-coded
    ``ExecutionReportSignal``) does not decode as one, and the data converter upgrades it
    (``sherwood.temporal``)."""

    venue: str
    exec_id: str
    order_id: str  # the order the event is about (from the ClOrdID)
    kind: VenueEventKind
    status: VenueStatus = VenueStatus.UNKNOWN
    cl_ord_id: str = ""  # the ClOrdID the venue answered: the order id, or a cancel/status id
    orig_cl_ord_id: str | None = None
    venue_order_id: str | None = None
    last_qty: str = "0"
    last_px: str | None = None
    cum_qty: str = "0"
    leaves_qty: str = "0"
    avg_px: str = "0"
    text: str | None = None
    reject_reason: str | None = None  # the venue's reason code for a rejected order or cancel
    transact_time: str | None = None  # ISO 8601, UTC, when the venue says it happened
    redelivered: bool = False  # the venue marked it as possibly sent before (PossDup/PossResend)
    # a fill's route (the gateway attaches it; None: not known, or a payload from before)
    route: RouteFacts | None = None

    @property
    def key(self) -> str:
        """``venue:exec_id``: the event's identity, as the order workflow keeps the ones it saw."""
        return f"{self.venue}:{self.exec_id}"

    @property
    def final(self) -> bool:
        """The venue says the order is done (filled, canceled, rejected or expired)."""
        return (self.kind not in (VenueEventKind.CANCEL_REJECTED, VenueEventKind.REPLACE_REJECTED)
                and self.status in FINAL_VENUE_STATUSES)

    @property
    def at_close(self) -> bool:
        """This answers our own cancel of a DAY order at the close (its ClOrdID says so)."""
        return is_expiry_request(self.cl_ord_id)
