"""The order state machine: Sherwood's states, the transitions the rules allow, and Alpaca's
status of each state. Pure; :mod:`domain.orders` re-exports every name here."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import DomainError


class OrderState(StrEnum):
    PENDING = "PENDING"
    VALIDATED = "VALIDATED"
    FUNDS_HELD = "FUNDS_HELD"
    ROUTED = "ROUTED"
    ACKED = "ACKED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    PENDING_CANCEL = "PENDING_CANCEL"
    STUCK = "STUCK"
    # a cancel/replace request is at the venue: fills of the order as it was still come
    PENDING_REPLACE = "PENDING_REPLACE"
    REPLACED = "REPLACED"  # the venue replaced it: its replacement (``replaced_by``) lives on
    # a leg of an order group waiting at the broker (Alpaca ``held``): no venue has it and it
    # holds nothing (domain.order_groups); it is activated (FUNDS_HELD) or ends CANCELED
    HELD = "HELD"


S = OrderState
TERMINAL = frozenset({S.FILLED, S.REJECTED, S.CANCELED, S.EXPIRED, S.FAILED, S.REPLACED})
# Where a venue may still act on the order (fills can arrive).
AT_VENUE = frozenset({S.ROUTED, S.ACKED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.STUCK,
                      S.PENDING_REPLACE})

_VENUE_OUTCOMES = {S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.PENDING: frozenset({S.VALIDATED, S.REJECTED, S.FAILED, S.CANCELED}),
    S.VALIDATED: frozenset({S.FUNDS_HELD, S.REJECTED, S.FAILED, S.CANCELED}),
    # REJECTED: the gateway's last check (a halt) refuses an order before any venue has it
    # STUCK from FUNDS_HELD: the send failed in a way that leaves open whether a venue has it
    # FILLED: the firm fills an order with no whole share itself (domain.fractional);
    # REPLACED: a trailing stop waiting at the broker is replaced there
    S.FUNDS_HELD: frozenset({S.ROUTED, S.CANCELED, S.FAILED, S.EXPIRED, S.REJECTED, S.STUCK,
                             S.FILLED, S.REPLACED}),
    # STUCK straight from the venue states: a venue report the rules refuse to book (an
    # overfill) needs a human as much as a venue that went silent
    S.ROUTED: frozenset(_VENUE_OUTCOMES | {S.PENDING_CANCEL, S.STUCK}),
    S.ACKED: frozenset(_VENUE_OUTCOMES - {S.ACKED} | {S.PENDING_CANCEL, S.STUCK, S.PENDING_REPLACE}),
    S.PARTIALLY_FILLED: frozenset(_VENUE_OUTCOMES - {S.ACKED}
                                  | {S.PENDING_CANCEL, S.STUCK, S.PENDING_REPLACE}),
    S.PENDING_CANCEL: frozenset(_VENUE_OUTCOMES | {S.STUCK}),
    # back to ACKED / PARTIALLY_FILLED: the venue refused the replace; PENDING_CANCEL: the DAY
    # order's own cancel at the close
    S.PENDING_REPLACE: frozenset(_VENUE_OUTCOMES | {S.STUCK, S.REPLACED, S.PENDING_CANCEL}),
    S.STUCK: frozenset(_VENUE_OUTCOMES | {S.PENDING_CANCEL}),
    S.HELD: frozenset({S.FUNDS_HELD, S.CANCELED, S.REJECTED, S.FAILED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset(),
    S.REPLACED: frozenset(),
}

ALPACA_STATUS: dict[OrderState, str] = {
    S.PENDING: "accepted",
    S.VALIDATED: "accepted",
    S.FUNDS_HELD: "accepted",
    S.ROUTED: "pending_new",
    S.ACKED: "new",
    S.PARTIALLY_FILLED: "partially_filled",
    S.FILLED: "filled",
    S.PENDING_CANCEL: "pending_cancel",
    S.STUCK: "pending_cancel",
    S.CANCELED: "canceled",
    S.EXPIRED: "expired",
    S.REJECTED: "rejected",
    S.FAILED: "rejected",
    S.PENDING_REPLACE: "pending_replace",
    S.REPLACED: "replaced",
    S.HELD: "held",
}
OPEN_STATUSES = frozenset(ALPACA_STATUS[s] for s in S if s not in TERMINAL)


class OrderError(DomainError):
    """An order request or transition refused by the rules."""

    code = "invalid_order"


class InvalidTransition(OrderError):
    code = "invalid_transition"


def can_transition(current: OrderState, new: OrderState) -> bool:
    return current == new or new in TRANSITIONS[current]


def transition(current: OrderState, new: OrderState) -> OrderState:
    if not can_transition(current, new):
        raise InvalidTransition(f"order cannot go from {current} to {new}")
    return new


def alpaca_status(state: str) -> str:
    return ALPACA_STATUS[OrderState(state)]
