"""The order workflow's wait for a broker-held trigger (a trailing stop): called by
``workflows.order`` between the hold and the routing, behind the ``trailing-stop`` patch.

It starts ``watch_trigger`` (``activities.trigger``: a heartbeating activity on the shard's
``shard-<n>-triggers`` queue; a worker that dies is noticed within the heartbeat timeout and
the activity resumes elsewhere from its last heartbeat) and waits, on a durable timer, for the
first of: the trigger fires, the customer cancels (taken at once: nothing was sent), the DAY
order's close (expired: nothing was sent), or the watch fails for good (a deterministic error:
the order FAILS with its hold released, since no venue has it). A GTC order waits as long as
it takes. Deliberately not here: the routing (the order workflow sends the fired order as a
market order) and any state write of its own (the workflow's activities write the ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.trigger import TriggerActivities, TriggerFired, WatchTriggerInput
    from domain.orders import OrderSnapshot, OrderTimeouts, parse_order_request
    from domain.trigger import TriggerSpec
    from sherwood.contracts import trigger_task_queue

# a watch lasts as long as its order: a GTC trailing stop may wait months (the heartbeat
# timeout, not this, notices a dead worker)
WATCH_MAX = timedelta(days=400)
# transient failures (Redis or the shard database out of reach, a worker gone) are retried for
# as long as the order waits; a deterministic one fails the watch (internal_error)
WATCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


@dataclass
class TriggerOutcome:
    how: str  # fired | canceled | replace | expired | failed | ended (the order no longer waits)
    fired: TriggerFired | None = None
    reason: str = ""


def start_spec(request: dict[str, object]) -> TriggerSpec:
    """The trigger of a trailing stop request (no hwm yet: its first quote sets it)."""
    req = parse_order_request(request)
    if req.trail_price is not None:
        return TriggerSpec(req.symbol, req.side, "trail_price", req.trail_price)
    assert req.trail_percent is not None
    return TriggerSpec(req.symbol, req.side, "trail_percent", req.trail_percent)


async def wait_for_trigger(*, snap: OrderSnapshot, shard: int, request: dict[str, object],
                           timeouts: OrderTimeouts, cancel_requested: Callable[[], bool],
                           replace_requested: Callable[[], bool] = lambda: False) -> TriggerOutcome:
    """Watch until the trigger fires, the customer cancels or replaces the order (the watch is
    canceled: the workflow replaces it at the broker, then watches the order it ends with) or
    the DAY order's close passes."""
    watch = workflow.start_activity_method(
        TriggerActivities.watch_trigger,
        WatchTriggerInput(order_id=snap.order_id, spec=start_spec(request).to_wire()),
        task_queue=trigger_task_queue(shard), start_to_close_timeout=WATCH_MAX,
        heartbeat_timeout=timedelta(seconds=timeouts.trigger_heartbeat_s), retry_policy=WATCH_RETRY,
        summary="trailing stop: following quotes")
    timeout: timedelta | None = None
    if snap.expires_at:  # on the business clock (tests run it ahead of the wall clock)
        close = datetime.fromisoformat(snap.expires_at) - timedelta(seconds=timeouts.market_clock_offset_s)
        timeout = max(timedelta(0), close - workflow.now())
    try:
        await workflow.wait_condition(lambda: watch.done() or cancel_requested() or replace_requested(),
                                      timeout=timeout,
                                      timeout_summary="trailing stop: the DAY order's close")
    except TimeoutError:
        watch.cancel()
        return TriggerOutcome("expired", reason="DAY order expired at the close before its trigger fired")
    if cancel_requested():  # the customer's cancel wins over a firing not yet routed: nothing was sent
        watch.cancel()
        return TriggerOutcome("canceled")
    if replace_requested() and not watch.done():
        watch.cancel()
        return TriggerOutcome("replace")
    try:
        fired = watch.result()
    except ActivityError as exc:
        cause = exc.cause or exc
        return TriggerOutcome("failed", reason=f"the trigger could not be followed: {cause}"[:400])
    if fired is None:
        return TriggerOutcome("ended")
    return TriggerOutcome("fired", fired=fired)
