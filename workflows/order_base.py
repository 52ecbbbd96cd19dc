"""What every step of the order workflow (``workflows.order``) stands on: its constants (retry
policies, the ``workflow.patched`` ids, what a failed activity raises), the workflow's state
(declared here, set by ``OrderWorkflow.__init__``), the OrderState search attribute, the venue
answers' dedup, and the sends to the gateway's activities.

The workflow class is assembled from a chain of mixins, each along one seam of the order's life:
``OrderCore`` (here) <- ``OrderFailures`` (``workflows.order_failures``: shard transactions and
the visible end of one that fails for good) <- ``VenueTimeouts`` (``workflows.order_venue``: a
silent venue, cancels, DAY expiry) <- ``OrderRouting`` (``workflows.order_routing``: the send of
a new order) <- ``OrderReplaces`` (``workflows.order_replace``: cancel/replace) <- ``OrderWorkflow``.
Deliberately nothing here decides anything or writes state on its own, and no mixin defines a
Temporal handler: signals, updates, queries and the run method are ``OrderWorkflow``'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimedOut

with workflow.unsafe.imports_passed_through():
    from domain.execution import VenueCancel, VenueEvent
    from domain.orders import (
        OrderSnapshot,
        OrderState,
        OrderTimeouts,
        PlaceOrderInput,
        ReplaceInput,
        ResolveInput,
    )
    from sherwood.contracts import GATEWAY_TASK_QUEUE, ORDER_STATE
    from sherwood.faults import activity_cause as _cause
    from sherwood.faults import describe_failure as _describe  # noqa: F401  (the mixins use it)
    from sherwood.faults import is_internal

S = OrderState
LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100),
                          maximum_interval=timedelta(seconds=5))
# The gateway keeps retrying while no venue is connected; the order waits (it is accepted).
GATEWAY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                            maximum_interval=timedelta(seconds=5))
MAX_CANCEL_ROUNDS = 3
# workflow.patched ids: a change of the steps an order takes, so that orders already running
# when it is deployed replay the steps they were written with
ROUTED_WITH_FIRST_ANSWERS = "routed-with-first-answers"
# implies ROUTED_WITH_FIRST_ANSWERS: one patch per order, not two (each costs the server a marker
# and a TemporalChangeVersion search-attribute update: measured ~10% of the floor's throughput)
DIRECT_SEND = "send-over-the-gateway-link"
# the gateway's activity sends within a routing deadline, a customer cancel is taken while it
# tries, and the order is abandoned (never sent later) when no venue took it
ROUTING_DEADLINE = "routing-deadline"
# a cancel is recorded (PENDING_CANCEL, the customer answered) before it is sent; a second one
# while it is on its way is the same request; sends to the gateway have deadlines
CANCEL_RECORDED_FIRST = "cancel-recorded-first"
# a step that fails for good (an internal error, or transient failures past the retry maximum)
# ends the order visibly: REJECTED before its hold, STUCK with it -- never retried forever
BOUNDED_FAILURES = "bounded-failures"
# an order accepted outside the regular session (its snapshot names the open) waits on a
# durable timer until the open, cancelable at once, then routes
QUEUED_FOR_OPEN = "queued-for-the-open"
# a customer's cancel/replace: recorded (PENDING_REPLACE, the replacement ROUTED) before the
# OrderCancelReplaceRequest is sent; once the venue replaced the order, its replacement's own
# workflow is started here (a child left running when this one ends)
CANCEL_REPLACE = "cancel-replace"
# a replace unanswered for replace_s -> OrderStatusRequest; still none within status_s -> the
# original STUCK (its hold kept), the replacement REJECTED (its extra hold released)
REPLACE_DEADLINE = "replace-deadline"
# a trailing stop waits, with its hold, for its broker-held trigger (workflows/trailing.py), then
# routes as a market order; cancelable at once, expiring (nothing sent) at a DAY order's close
TRAILING_STOP = "trailing-stop"
# an order with no whole share (qty < 1, or a notional order) is filled by the firm at the quote
# (domain.fractional) instead of being sent to a venue; only such orders take the patch
FRACTIONAL = "fractional"
ORDER_FAILED = "order_failed"  # the workflow fails: even the visible end could not be written
# What an awaited activity raises when it fails: an ActivityError wrapping the cause for a
# remote activity, but the activity's own ApplicationError, unwrapped, for a local one
# (temporalio 1.35; tests/workflows/test_order_faults.py sends a refused resolution through this).
ACTIVITY_FAILED = (ActivityError, ApplicationError, ActivityTimedOut)


class OrderCore:
    """The order workflow's state and the steps every other part of it uses."""

    # set by OrderWorkflow.__init__ (see there)
    _inp: PlaceOrderInput
    _t: OrderTimeouts
    _snap: OrderSnapshot | None
    _reports: list[VenueEvent]
    _seen: set[str]
    _cancel_requested: bool
    _resolution: ResolveInput | None
    _phase: str
    _deadline: datetime | None
    _cancel_rounds: int
    _expiring: bool
    _direct: bool
    _routing: bool
    _cancel_first: bool | None
    _replace_req: ReplaceInput | None
    _watching: bool
    _replace_done: dict[str, OrderSnapshot | ApplicationError]
    _rebalance: bool
    _published: str | None

    def _take_report(self, report: VenueEvent) -> None:
        """Queue a venue answer for booking, once (the ``execution_report`` signal's body)."""
        if self._first_time(report):
            self._reports.append(report)

    def _first_time(self, report: VenueEvent) -> bool:
        key = report.key
        if key in self._seen:
            return False  # a duplicate (PossDup / PossResend / redelivery): booked once, ever
        self._seen.add(key)
        return True

    async def _send_with_deadline(self, name: str, arg: object, seconds: float) -> None:
        """A cancel or status request through the gateway, given up after ``seconds``: a venue
        that cannot be reached gets no answer either, and the order moves on (status request,
        then STUCK) instead of waiting for the gateway forever."""
        self._publish_state()
        try:
            await workflow.execute_activity(
                name, arg, result_type=str, task_queue=self._gateway_queue(),
                schedule_to_close_timeout=timedelta(seconds=max(seconds, 1.0)),
                start_to_close_timeout=timedelta(seconds=10), retry_policy=GATEWAY_RETRY)
        except ActivityError as exc:
            workflow.logger.warning("%s for %s not sent: %s", name, self._inp.order_id, _cause(exc))

    def _venue_cancel(self, *, expiry: bool = False) -> VenueCancel:
        snap = self._snap
        assert snap is not None and snap.venue is not None
        return VenueCancel(order_id=snap.order_id, venue=snap.venue, symbol=snap.symbol,
                           side=snap.side, qty=snap.qty, attempt=self._cancel_rounds or 1,
                           expiry=expiry)

    def _gateway_queue(self) -> str:
        return self._inp.gateway_queue or GATEWAY_TASK_QUEUE

    async def _gateway(self, name: str, arg: object, result_type: type, *,
                       within_s: float | None = None) -> Any:
        self._publish_state()
        return await workflow.execute_activity(
            name, arg, result_type=result_type,
            task_queue=self._gateway_queue(),
            schedule_to_close_timeout=timedelta(seconds=within_s) if within_s else None,
            start_to_close_timeout=timedelta(seconds=10), retry_policy=GATEWAY_RETRY)

    def _set(self, snap: OrderSnapshot) -> None:
        self._snap = snap
        self._rebalance |= snap.rebalance
        if not self._direct:  # histories written before DIRECT_SEND: at every change
            self._publish_state()

    def _publish_state(self) -> None:
        """Upsert ``OrderState`` if it changed since the last upsert."""
        if self._snap is not None and self._snap.state != self._published:
            self._published = self._snap.state
            workflow.upsert_search_attributes([ORDER_STATE.value_set(self._published)])


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _refused(exc: BaseException) -> bool:
    """A business refusal (non-retryable, e.g. the gateway's: nothing was sent), not an internal
    error (which says nothing about what was done) or a timeout."""
    cause = _cause(exc)
    return isinstance(cause, ApplicationError) and cause.non_retryable and not is_internal(cause)


