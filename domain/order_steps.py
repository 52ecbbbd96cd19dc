"""The order machine's building blocks (``domain.order_machine``): what a state change writes
(its audit event, row values and trade update), the release of a hold back to its sources, the
sources a fill uses, the move to a terminal state (releasing what is held), and the bounding of
the numbers a venue sends. Pure.

Deliberately not here: which event moves an order where (``domain.order_machine.decide``), and
the fill arithmetic and bookings (``domain.order_fills``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from domain import ledger as templates
from domain.execution import VenueStatus
from domain.money import column_number
from domain.order_decision import Step
from domain.orders import InvalidTransition, OrderState, can_transition

S = OrderState
ZERO = Decimal(0)
TIMESTAMP_FOR = {S.FILLED: "filled_at", S.CANCELED: "canceled_at", S.EXPIRED: "expired_at",
                 S.FAILED: "failed_at", S.REJECTED: "failed_at"}
# the trade update (Alpaca event) of a state entered without a fill; Alpaca has no ``failed``
# event: an order we could not process is ``rejected`` to the customer (its status too)
UPDATE_FOR = {S.ROUTED: "pending_new", S.PENDING_CANCEL: "pending_cancel", S.STUCK: "pending_cancel",
              S.FAILED: "rejected"}
# the venue's answers that end the order when a status request finds it so
STATUS_OUTCOMES = {VenueStatus.CANCELED: S.CANCELED, VenueStatus.EXPIRED: S.EXPIRED,
                   VenueStatus.REJECTED: S.REJECTED}


def _move(step: Step, to: OrderState, *, actor: str, reason: str, venue: str | None = None,
          data: Mapping[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"state": to}
    if venue is not None:
        values["venue"] = venue
    step.event(to.value.lower(), actor=actor, reason=reason, to=to,
               data={"venue": venue} if venue else data)
    step.set(**values)
    step.update(UPDATE_FOR.get(to, to.value.lower()))


def _transition_ok(current: OrderState, to: OrderState) -> None:
    if not can_transition(current, to):
        raise InvalidTransition(f"order cannot go from {current} to {to}")


def _release(step: Step, label: str) -> str | None:
    """Post the release of whatever is still held (cash for a buy, shares for a sell), each part
    back to the source it was held from."""
    order = step.order
    if order.hold_amount <= 0:
        return None
    txn_id = f"order:{order.id}:release:{label}"
    parts = order.hold_sources
    if order.side == "buy":
        step.postings.append(templates.release_cash(txn_id, order.account_id, order.hold_amount,
                                                    to=parts))
    else:
        step.postings.append(templates.release_shares(txn_id, order.account_id, order.symbol,
                                                      order.hold_amount, to=parts))
    return txn_id


def _source_rank(source: str) -> tuple[int, date, str]:
    """The order a hold is taken and used in: settled first, then proceeds lots by settlement
    date (the undated pool first), provisional credit last; settled shares, then unsettled."""
    if source in (templates.SETTLED_CASH, templates.SETTLED_SHARES):
        return (0, date.min, source)
    if source == templates.PROVISIONAL:
        return (2, date.max, source)
    if source == templates.UNSETTLED_SHARES:
        return (1, date.min, source)
    return (1, templates.lot_date(source) or date.min, source)


def consume(sources: Mapping[str, Decimal] | None, amount: Decimal) -> dict[str, Decimal] | None:
    """What stays held per source after ``amount`` of the hold is used (by a fill), taken from
    the sources in the order they were held (:func:`_source_rank`)."""
    if sources is None:
        return None
    left: dict[str, Decimal] = {}
    for source in sorted(sources, key=_source_rank):
        used = min(amount, sources[source])
        amount -= used
        if sources[source] - used:
            left[source] = sources[source] - used
    return left


def _finish(step: Step, to: OrderState, *, actor: str, event: str, reason: str | None,
            code: str | None = None, data: Mapping[str, Any] | None = None) -> None:
    """Move to a terminal state, releasing any remaining hold."""
    _transition_ok(step.order.state, to)
    released = _release(step, to.value.lower())
    values: dict[str, Any] = {"state": to, "hold_amount": ZERO,
                              "hold_sources": {} if step.order.hold_sources is not None else None}
    if to in TIMESTAMP_FOR:
        values[TIMESTAMP_FOR[to]] = step.now
    if code is not None:
        values["reject_code"] = code
        values["reject_reason"] = reason
    step.event(event, actor=actor, reason=reason, to=to, ledger_txn=released, data=data)
    step.set(**values)
    step.update(UPDATE_FOR.get(to, event))


MAX_FILL_PRICE = Decimal(1_000_000)
# a number the venue sent, if it is finite and a column can hold it, else None
bounded = column_number


def _when(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
