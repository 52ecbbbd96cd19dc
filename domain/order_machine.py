"""The order core's decisions: ``decide(order, event, now) -> Decision``. Pure.

An order moves only through here. Each event (a venue's answer, a command of the workflow, an
operator's resolution) is decided against the order row as it stands: the new row, the ledger
transactions to post, the audit events and the trade updates (Alpaca ``trade_updates``) to
write. ``db.orders`` loads the row, calls :func:`decide`, and writes the decision in one
transaction; it makes no decision of its own.

Three outcomes, always explicit:

- a change (a :class:`Decision` with ``changes``, postings, events and updates);
- nothing to do (:meth:`Decision.nothing`), when the event was already applied or the order has
  moved past it (an activity retried after its commit; ROUTED recorded after the venue's ACK);
- a refusal: :class:`domain.orders.InvalidTransition` (or another :class:`OrderError`) is
  raised. A transition the state machine forbids is never silently skipped.

Deliberately not here: reading or writing anything, the clock (``now`` is given), what a FIX
message says (the gateway translates it into a :class:`VenueEvent` first), and the pre-trade
rules (``domain.risk.pre_trade``; :func:`accept` only turns their outcome into the order's
first steps).

Its parts: :func:`decide`, the commands and the venue's answers here; a new order's first steps
in ``domain.order_accept``; fills (the venue's and the firm's) in ``domain.order_fills``; the
shared building blocks (state moves, releases of a hold, bounded venue numbers) in
``domain.order_steps``. Their public names are importable from here as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain import fractional
from domain.errors import DomainError
from domain.execution import WORKING_VENUE_STATUSES, VenueEvent, VenueEventKind, VenueStatus
from domain.execution_quality import fill_record
from domain.order_accept import accept, accept_failed
from domain.order_decision import Decision, Execution, Step
from domain.order_fills import CLOCK_SKEW, HouseFill, _fill, _fill_math, _house_fill, executed_at
from domain.order_row import OrderRow
from domain.order_steps import (
    MAX_FILL_PRICE,
    STATUS_OUTCOMES,
    TIMESTAMP_FOR,
    UPDATE_FOR,
    ZERO,
    S,
    _finish,
    _move,
    _source_rank,
    _when,
    bounded,
    consume,
)
from domain.orders import (
    AT_VENUE,
    TERMINAL,
    InvalidTransition,
    OrderError,
    OrderState,
    ResolveInput,
)

# what other modules import from here, including the building blocks that live in
# domain.order_steps and domain.order_fills (re-exported: imported from here before the split)
__all__ = [
    "CLOCK_SKEW", "MAX_FILL_PRICE", "OPERATOR", "STATUS_OUTCOMES", "TIMESTAMP_FOR", "UPDATE_FOR",
    "ZERO", "Command", "Event", "Finish", "HouseFill", "MarkStuck", "RequestCancel", "Route", "S",
    "_finish", "_move", "_source_rank", "accept", "accept_failed", "bounded", "consume", "decide",
    "executed_at", "execution", "refusal", "refuse", "venue_filled",
]

# ============================================================================ commands


@dataclass(frozen=True)
class Route:
    """The gateway handed the order to ``venue``."""

    venue: str
    actor: str = "gateway"
    reason: str | None = None  # default: "sent to <venue>"


@dataclass(frozen=True)
class RequestCancel:
    """We asked the venue to cancel (PENDING_CANCEL until it answers)."""

    reason: str
    actor: str = "system"


@dataclass(frozen=True)
class MarkStuck:
    """Nobody can tell what the venue did: an operator must (funds stay held). ``venue``: where
    it was sent, when that is known but not yet recorded (its first booking failed)."""

    reason: str
    actor: str = "system"
    venue: str | None = None


@dataclass(frozen=True)
class Finish:
    """A terminal state decided by us (canceled before routing, refused by the gateway, failed):
    whatever is still held is released."""

    to: OrderState
    reason: str
    actor: str = "system"
    code: str | None = None


Command = Route | RequestCancel | MarkStuck | Finish | ResolveInput | HouseFill
Event = VenueEvent | Command


def decide(order: OrderRow, event: Event, now: datetime) -> Decision:
    """What ``event`` does to ``order`` (see the module docstring for the three outcomes)."""
    if isinstance(event, VenueEvent):
        return _venue(order, event, now)
    if isinstance(event, Route):
        return _enter(order, S.ROUTED, now, actor=event.actor,
                      reason=event.reason or f"sent to {event.venue}", venue=event.venue)
    if isinstance(event, RequestCancel):
        return _enter(order, S.PENDING_CANCEL, now, actor=event.actor, reason=event.reason)
    if isinstance(event, MarkStuck):
        return _enter(order, S.STUCK, now, actor=event.actor, reason=event.reason,
                      venue=event.venue if order.venue is None else None)
    if isinstance(event, Finish):
        if order.terminal:
            return Decision.nothing(order)
        step = Step(order, now)
        _finish(step, event.to, actor=event.actor, event=event.to.value.lower(), reason=event.reason,
                code=event.code)
        return step.decision()
    if isinstance(event, ResolveInput):
        return _resolve(order, event, now)
    if isinstance(event, HouseFill):
        return _house_fill(order, event, now)
    raise TypeError(f"not an order event: {event!r}")


# Where each command's state may be entered from; from a later state it is a no-op (the order
# moved past it: the venue answered first, or this is a replay), from an earlier one a refusal.
_ENTER_FROM = {
    S.ROUTED: frozenset({S.FUNDS_HELD}),
    S.PENDING_CANCEL: frozenset({S.ROUTED, S.ACKED, S.PARTIALLY_FILLED, S.STUCK, S.PENDING_REPLACE}),
    # from FUNDS_HELD: a send or a first booking that failed in a way that leaves open whether
    # a venue has the order
    S.STUCK: frozenset({S.FUNDS_HELD, S.ROUTED, S.ACKED, S.PARTIALLY_FILLED, S.PENDING_CANCEL,
                        S.PENDING_REPLACE}),
}
_PAST = {
    S.ROUTED: AT_VENUE | TERMINAL,
    S.PENDING_CANCEL: frozenset({S.PENDING_CANCEL}) | TERMINAL,
    S.STUCK: frozenset({S.STUCK}) | TERMINAL,
}


def _enter(order: OrderRow, to: OrderState, now: datetime, *, actor: str, reason: str,
           venue: str | None = None) -> Decision:
    """A non-terminal state change that moves no money (ROUTED, PENDING_CANCEL, STUCK)."""
    if order.state in _PAST[to]:
        return Decision.nothing(order)
    if order.state not in _ENTER_FROM[to]:
        raise InvalidTransition(f"order is {order.state}: it cannot become {to} ({reason})")
    step = Step(order, now)
    _move(step, to, actor=actor, reason=reason, venue=venue)
    return step.decision()


# ============================================================================ venue events


def execution(order: OrderRow, e: VenueEvent, refused: OrderError | None = None,
              ) -> tuple[Execution, OrderError | None]:
    """The execution row recording ``e``, and why the rules refuse to book it (see
    :func:`refusal`), if they do; ``refused``: refused already (the ledger would not take it). A
    refused fill is recorded with quantity 0: its ExecID stays deduplicated and nothing counts
    it. Every number the venue sent is bounded before it is written: one that is unreadable or
    beyond what a column holds is recorded as unknown (the raw report keeps it). A booked fill
    that carries its route (the gateway attaches it) is recorded with its execution quality
    (:func:`domain.execution_quality.fill_record`)."""
    refused = refused or refusal(order, e)
    fill = e.kind == VenueEventKind.FILL and refused is None
    price = Decimal(e.last_px) if fill and e.last_px else None
    return Execution(
        venue=e.venue, exec_id=e.exec_id, kind="refused" if refused else e.kind.value,
        qty=Decimal(e.last_qty) if fill else ZERO, price=price,
        cum_qty=bounded(e.cum_qty), leaves_qty=bounded(e.leaves_qty), avg_px=bounded(e.avg_px),
        transact_time=_when(e.transact_time),
        raw={k: getattr(e, k) for k in _EVENT_FIELDS},
        quality=fill_record(e.route, price) if e.route is not None and price is not None
        else None), refused


# the raw report as the venue sent it (a fill's route is stored in columns of its own)
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(VenueEvent) if f.name != "route")


OPERATOR = "operator"  # the venue name of an operator's resolution without the venue's ExecIDs


def refusal(order: OrderRow, e: VenueEvent) -> OrderError | None:
    """Why a venue report cannot be taken against the order as it stands, or None: a report
    from another venue than the order was routed to; for a fill, a quantity or price that is not
    a finite positive number, a fraction of a share, a price beyond $1,000,000 or with more than
    4 decimals (never rounded), worse than the order's limit, more than the order's quantity."""
    if order.venue is not None and e.venue not in (order.venue, OPERATOR):
        return OrderError(f"a report from {e.venue} about an order routed to {order.venue}",
                          code="wrong_venue")
    if e.kind != VenueEventKind.FILL:
        return None
    qty, px = bounded(e.last_qty), bounded(e.last_px)
    if qty is None or px is None or qty <= 0 or px <= 0:
        return OrderError(f"unreadable fill {e.last_qty!r} @ {e.last_px!r}", code="invalid_fill")
    if qty != qty.to_integral_value():
        return OrderError(f"fill of {qty} shares: this order trades whole shares", code="fractional_fill")
    if px > MAX_FILL_PRICE or px != px.quantize(Decimal("0.0001")):
        return OrderError(f"fill price {e.last_px!r} is beyond $1,000,000 or finer than $0.0001",
                          code="invalid_fill_price")
    limit = order.limit_price
    if limit is not None and (px > limit if order.side == "buy" else px < limit):
        return OrderError(f"fill at {px} is worse than the order's limit {limit}", code="beyond_limit")
    try:
        _fill_math(order, qty, px)
    except OrderError as exc:
        return exc
    except (DomainError, ArithmeticError) as exc:  # any other arithmetic the books refuse
        return OrderError(f"fill {e.last_qty!r} @ {e.last_px!r} cannot be booked: {exc}",
                          code="invalid_fill")
    return None


def refuse(order: OrderRow, e: VenueEvent, why: OrderError, now: datetime) -> Decision:
    """The decision for a venue report that cannot be booked (the rules refuse it, or the
    ledger refused its booking): audited, and a working order goes STUCK with its funds held."""
    return _refuse(Step(order, now), e, why)


def _venue(order: OrderRow, e: VenueEvent, now: datetime) -> Decision:
    state = order.state
    if state not in AT_VENUE and state not in TERMINAL:
        raise InvalidTransition(f"order is {state}: it was never sent, so {e.venue} cannot have "
                                f"answered it ({e.kind} {e.exec_id})")
    step = Step(order, now)
    actor = f"venue:{e.venue}"
    info = {"exec_id": e.exec_id, "kind": e.kind.value, "status": e.status.value, "text": e.text,
            "cum_qty": e.cum_qty, "leaves_qty": e.leaves_qty}
    refused = refusal(order, e)
    if refused is not None:
        return _refuse(step, e, refused)
    kind = e.kind
    if (kind == VenueEventKind.CANCEL_REJECTED and e.status == VenueStatus.REJECTED
            and state not in TERMINAL):
        # the venue does not know the order (it lost it, or never got it): nothing works there
        # that a cancel could stop, and whether anything filled is for an operator to establish;
        # going back to waiting would hold the funds forever with no timer left
        reason = (f"{e.venue} rejected the cancel as an unknown order ({e.text or e.reject_reason});"
                  f" {order.filled_qty} booked: needs an operator")
        if state == S.STUCK:
            step.event("cancel_rejected", actor=actor, reason=reason, to=state, data=info)
        else:
            _move(step, S.STUCK, actor=actor, reason=reason, data=info)
        return step.decision()
    if kind == VenueEventKind.CANCEL_REJECTED:  # the order lives on at the venue
        back = S.PARTIALLY_FILLED if order.filled_qty > 0 else S.ACKED
        if state in (S.PENDING_CANCEL, S.STUCK):
            step.event("cancel_rejected", actor=actor, reason=e.text, to=back, data=info)
            step.set(state=back)
            step.update("order_cancel_rejected")
        else:
            step.event("cancel_rejected", actor=actor, reason=e.text, to=state, data=info)
        return step.decision()
    if state in TERMINAL:
        return _late(step, e, actor, info)
    ends = _venue_ends_it(e)
    if ends is not None and not _cum_matches(order, e):
        # the venue ended the order with another filled quantity than we booked: what it did
        # is for an operator to establish; nothing is released on a guess
        _move(step, S.STUCK, actor=actor, reason=f"{e.venue} says {ends.value.lower()} with "
              f"{e.cum_qty!r} filled; {order.filled_qty} booked: needs an operator", data=info)
        return step.decision()
    if kind == VenueEventKind.ACK:
        if state == S.ROUTED:
            step.event("new", actor=actor, reason="venue accepted", to=S.ACKED, data=info)
            step.set(state=S.ACKED, venue_order_id=e.venue_order_id)
            step.update("new")
        else:
            step.set(venue_order_id=e.venue_order_id)
    elif kind == VenueEventKind.FILL:
        _fill(step, e, actor, info)
    elif kind == VenueEventKind.CANCELED and e.at_close:  # our own cancel at the DAY close
        _finish(step, S.EXPIRED, actor=actor, event="expired", reason="DAY order expired at the close",
                data=info)
    elif kind == VenueEventKind.CANCELED:
        _finish(step, S.CANCELED, actor=actor, event="canceled",
                reason=e.text or "canceled at the venue", data=info)
    elif kind == VenueEventKind.EXPIRED:
        _finish(step, S.EXPIRED, actor=actor, event="expired", reason=e.text or "expired at the venue",
                data=info)
    elif kind == VenueEventKind.REJECTED:
        _finish(step, S.REJECTED, actor=actor, event="rejected", code="venue_rejected",
                reason=f"rejected by {e.venue}: {e.text or e.reject_reason}", data=info)
    elif kind == VenueEventKind.STATUS and (done := _status_outcome(order, e)) is not None:
        _finish(step, done, actor=actor, event=done.value.lower(),
                reason=f"venue status: {e.text or done.value.lower()}", data=info,
                code="venue_rejected" if done == S.REJECTED else None)
    elif kind == VenueEventKind.STATUS and state == S.ROUTED and e.status in WORKING_VENUE_STATUSES:
        step.event("new", actor=actor, reason="venue status: working", to=S.ACKED, data=info)
        step.set(state=S.ACKED)
    else:  # nothing for the order to do (a pending acknowledgement, a bust, ...): audited
        step.event(f"report_{kind.value}", actor=actor, reason=e.text, to=state, data=info)
    return step.decision()


def _status_outcome(order: OrderRow, e: VenueEvent) -> OrderState | None:
    """A status answer ends the order when the venue says it is done and nothing is unbooked."""
    done = STATUS_OUTCOMES.get(e.status)
    if done is not None and _cum_matches(order, e):
        return done
    return None


def _venue_ends_it(e: VenueEvent) -> OrderState | None:
    """The state a report would end the order in (canceled, expired, rejected; a status answer
    saying so), or None when it does not end it (fills end an order through their quantity)."""
    if e.kind == VenueEventKind.CANCELED:
        return S.EXPIRED if e.at_close else S.CANCELED
    if e.kind == VenueEventKind.EXPIRED:
        return S.EXPIRED
    if e.kind == VenueEventKind.REJECTED:
        return S.REJECTED
    if e.kind == VenueEventKind.STATUS:
        return STATUS_OUTCOMES.get(e.status)
    return None


def _cum_matches(order: OrderRow, e: VenueEvent) -> bool:
    """The venue's cumulative quantity (CumQty) is what we booked for the order."""
    return bounded(e.cum_qty) == venue_filled(order) + order.prior_filled_qty


def venue_filled(order: OrderRow) -> Decimal:
    """What the venue filled of the order: all of it but the fraction the firm filled (which it
    fills only once the venue has filled the whole part)."""
    return min(order.filled_qty, fractional.whole_part(order.qty))


def _late(step: Step, e: VenueEvent, actor: str, info: Mapping[str, Any]) -> Decision:
    """A report about an order that has ended. Its fills are booked (the money moved at the
    venue) and reopen the order into STUCK; a report ending it again with the quantity we
    booked is a late confirmation (audited); one that says another quantity reopens it too. The
    rest is audited."""
    order = step.order
    ends = _venue_ends_it(e)
    if e.kind == VenueEventKind.FILL:
        _fill(step, e, actor, info)
        _reopen(step, f"{e.venue} reports a fill ({e.last_qty} @ {e.last_px}) after the order ended "
                f"{order.state.value}: needs an operator")
    elif ends is not None and not _cum_matches(order, e):
        _reopen(step, f"{e.venue} says {ends.value.lower()} with {e.cum_qty!r} filled after the order "
                f"ended {order.state.value} with {order.filled_qty}: needs an operator")
    else:
        step.event("late_report", actor=actor, reason=e.text, to=order.state, data=info)
    return step.decision()


def _reopen(step: Step, reason: str) -> None:
    """An ended order the venue contradicts goes back to STUCK, for an operator to settle what
    really happened (``resolve``)."""
    step.event("reopened", actor="system", reason=reason, to=S.STUCK)
    step.set(state=S.STUCK)
    step.update(UPDATE_FOR[S.STUCK])


def _refuse(step: Step, e: VenueEvent, why: OrderError) -> Decision:
    """A venue fill the rules refuse is audited and a working order goes STUCK with its funds
    still held: what the venue really did is for an operator to establish and book
    (``resolve``); it is never guessed, and the order's other reports still book."""
    state = step.order.state
    step.event("report_refused", actor=f"venue:{e.venue}", reason=str(why), to=state,
               data={"exec_id": e.exec_id, "code": why.code, "last_qty": e.last_qty,
                     "last_px": e.last_px, "cum_qty": e.cum_qty})
    reason = f"venue report {e.exec_id} refused ({why.code}): needs an operator"
    if state in _ENTER_FROM[S.STUCK]:
        _move(step, S.STUCK, actor="system", reason=reason)
    elif state in TERMINAL:  # the venue says something the ended order cannot take
        _reopen(step, reason)
    return step.decision()


# ============================================================================ operator


def _resolve_fills(step: Step, inp: ResolveInput, missing: Decimal, actor: str) -> None:
    """Book the venue's own executions an operator reports (not booked yet: the store leaves out
    those already booked), under the venue's ExecIDs."""
    assert inp.fills is not None
    qty = [bounded(f.qty) for f in inp.fills]
    if any(q is None for q in qty) or sum((q or ZERO for q in qty), ZERO) != missing:
        raise OrderError(f"the fills add up to {[f.qty for f in inp.fills]}, not the {missing} "
                         "not booked yet", code="invalid_resolution")
    venue = step.order.venue or OPERATOR
    for f in inp.fills:
        if not f.exec_id or len(f.exec_id) > 128:
            raise OrderError("each fill needs the venue's ExecID (1..128 characters)",
                             code="invalid_resolution")
        e = VenueEvent(venue=venue, exec_id=f.exec_id, order_id=inp.order_id, kind=VenueEventKind.FILL,
                       cl_ord_id=inp.order_id, last_qty=f.qty, last_px=f.price, text=inp.note)
        refused = refusal(step.order, e)
        if refused is not None:
            raise OrderError(f"fill {f.exec_id} cannot be booked: {refused}", code="invalid_resolution")
        record, _ = execution(step.order, e)
        step.executions.append(record)
        _fill(step, e, actor, {"resolution": inp.outcome, "note": inp.note, "exec_id": f.exec_id})


def _resolve(order: OrderRow, inp: ResolveInput, now: datetime) -> Decision:
    """Book what an operator says the venue did for a STUCK order (the fills not yet booked, as
    one execution at their average price), then end it."""
    if order.terminal:
        return Decision.nothing(order)
    if order.state not in AT_VENUE:
        raise OrderError(f"order is {order.state}, not at a venue", code="not_resolvable")
    total = bounded(inp.filled_qty)
    if total is None:
        raise OrderError(f"filled_qty {inp.filled_qty!r} is not a number", code="invalid_resolution")
    missing = total - order.filled_qty
    if missing < 0 or total > order.qty:
        raise OrderError(f"filled_qty {total} is below what is booked or above the order qty",
                         code="invalid_resolution")
    step = Step(order, now)
    actor = f"operator:{inp.operator}"
    if missing > 0 and inp.fills:
        _resolve_fills(step, inp, missing, actor)
    elif missing > 0:
        if not inp.avg_price:
            raise OrderError("avg_price is required when booking fills", code="invalid_resolution")
        e = VenueEvent(venue=OPERATOR, exec_id=f"manual-{inp.order_id}-{total}", order_id=inp.order_id,
                       kind=VenueEventKind.FILL, cl_ord_id=inp.order_id, last_qty=str(missing),
                       last_px=inp.avg_price, text=inp.note,
                       status=VenueStatus.FILLED if total == order.qty else VenueStatus.PARTIALLY_FILLED)
        refused = refusal(order, e)
        if refused is not None:
            raise OrderError(f"the resolution cannot be booked: {refused}", code="invalid_resolution")
        step.executions.append(Execution(
            venue=e.venue, exec_id=e.exec_id, kind=VenueEventKind.FILL.value, qty=missing,
            price=Decimal(inp.avg_price), cum_qty=ZERO, leaves_qty=ZERO, avg_px=ZERO,
            transact_time=None, raw={}))
        _fill(step, e, actor, {"resolution": inp.outcome, "note": inp.note})
    if not step.order.terminal:
        to = S.CANCELED if inp.outcome == "canceled" or step.order.filled_qty < order.qty else S.FILLED
        _finish(step, to, actor=actor, event=to.value.lower(), reason=f"resolved by operator: {inp.note}")
    return step.decision()
