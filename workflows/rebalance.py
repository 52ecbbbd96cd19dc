"""The firm's inventory rebalance of one symbol on one shard (``domain.fractional``).

Filling fractions of shares leaves the firm long or short a symbol (its house ledger account
``inventory:SYM``). When that is a whole share or more away from zero, an order workflow that
booked such a fill starts this workflow (id ``rebalance-<shard>-<SYM>``: one at a time per
symbol and shard). It funds the firm's own brokerage account of the symbol from the inventory
(cash for a buy, the shares for a sell), places the whole-share market DAY order as an ordinary
child order workflow of that account -- so it goes to a venue, is booked, cleared and settled
like any order -- and, once that order has ended however it ended, gives every balance of the
account back to the inventory. What the venue did not fill simply stays in the inventory for
the next rebalance.

Deliberately not here: any booking (the activities' transactions do them) or a timer: the
child order's own timeouts bound it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities, RebalanceStepInput
    from db.rebalance import Funded
    from domain.orders import OrderSnapshot, OrderTimeouts, PlaceOrderInput, parse_order_request
    from sherwood.contracts import ACCOUNT_ID, ORDER_STATE, SHARD_ID, SYMBOL
    from sherwood.faults import retries_within

STEP_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                         maximum_interval=timedelta(seconds=5))


@dataclass
class RebalanceInput:
    shard: int
    symbol: str
    collar: str = "0.05"
    timeouts: OrderTimeouts | None = None
    day_ttl_s: float | None = None
    gateway_queue: str | None = None


def rebalance_workflow_id(shard: int, symbol: str) -> str:
    return f"rebalance-{shard}-{symbol}"


@workflow.defn(name="RebalanceInventory")
class RebalanceWorkflow:
    @workflow.run
    async def run(self, inp: RebalanceInput) -> str:
        order_id = str(workflow.uuid4())
        step = RebalanceStepInput(shard=inp.shard, symbol=inp.symbol, order_id=order_id,
                                  collar=inp.collar)
        try:
            funded: Funded | None = await workflow.execute_local_activity_method(
                OrderActivities.fund_rebalance, step, start_to_close_timeout=timedelta(seconds=15),
                retry_policy=retries_within(STEP_RETRY, 120))
        except (ActivityError, ApplicationError) as exc:  # no quote, the shard out of reach
            # nothing was funded (one transaction): the next fill by the firm tries again
            cause = exc.cause if isinstance(exc, ActivityError) and exc.cause else exc
            return f"not rebalanced: {cause}"
        if funded is None:
            return "nothing to rebalance"
        request = {"symbol": inp.symbol, "side": funded.side, "qty": funded.qty, "type": "market",
                   "time_in_force": "day", "client_order_id": f"rebalance-{order_id}"}
        req = parse_order_request(request)
        snap: OrderSnapshot = await workflow.execute_child_workflow(
            "Order", PlaceOrderInput(
                order_id=order_id, account_id=funded.account_id, shard=inp.shard,
                request=request, request_hash=req.hash(), actor="firm:rebalance",
                collar=inp.collar, timeouts=inp.timeouts, day_ttl_s=inp.day_ttl_s,
                gateway_queue=inp.gateway_queue),
            id=order_id, task_queue=workflow.info().task_queue, result_type=OrderSnapshot,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(ORDER_STATE, "PENDING"), SearchAttributePair(SYMBOL, inp.symbol),
                SearchAttributePair(ACCOUNT_ID, funded.account_id),
                SearchAttributePair(SHARD_ID, inp.shard)]))
        # the step that must not be skipped: retried until it commits (transient failures)
        await workflow.execute_local_activity_method(
            OrderActivities.return_rebalance, step, start_to_close_timeout=timedelta(seconds=15),
            retry_policy=STEP_RETRY)
        return f"{funded.side} {funded.qty} {inp.symbol}: {snap.state} ({snap.filled_qty} filled)"


async def start_rebalance(shard: int, symbol: str, *, collar: str, timeouts: OrderTimeouts | None,
                          day_ttl_s: float | None, gateway_queue: str | None) -> None:
    """From an order workflow whose fill by the firm left the inventory a whole share or more
    from zero: start the symbol's rebalance, left running when the order's workflow ends. One
    already running is left alone (it rebalances from the inventory as it stood when it began;
    the next such fill starts another)."""
    try:
        await workflow.start_child_workflow(
            RebalanceWorkflow.run, RebalanceInput(shard=shard, symbol=symbol, collar=collar,
                                                  timeouts=timeouts, day_ttl_s=day_ttl_s,
                                                  gateway_queue=gateway_queue),
            id=rebalance_workflow_id(shard, symbol), task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.ABANDON)
    except WorkflowAlreadyStartedError:
        pass
