"""bench.orders' floor (``bench.shape_workflow``) keeps the Temporal shape of a filled market order:
the same history, event for event. The floor's cost is what the order's Temporal steps alone
cost, and ours over it is issue 20's ratio; a floor with a step more or less than the order has
would misstate both. This is what catches a change to the order's steps that the floor missed."""

from __future__ import annotations

import uuid

from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.shape_workflow import ShapeWorkflow, shape_local
from tests.stack import TradingStack
from tests.workflows.order_helpers import buy_two_aapl_filled, event_types, local_steps


async def test_the_bench_floor_has_the_temporal_shape_of_a_filled_market_order(
    stack: TradingStack,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    order = await (await buy_two_aapl_filled(stack, acct)).fetch_history()

    queue = f"floor-shape-{uuid.uuid4().hex[:6]}"
    async with Worker(stack.temporal, task_queue=queue, workflows=[ShapeWorkflow],
                      activities=[shape_local], workflow_runner=UnsandboxedWorkflowRunner()):
        start = WithStartWorkflowOperation(
            ShapeWorkflow.run, "x", id=f"shape-{uuid.uuid4()}", task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        await stack.temporal.execute_update_with_start_workflow(ShapeWorkflow.accepted, "x",
                                                                start_workflow_operation=start)
        handle = await start.workflow_handle()
        await handle.result()
        floor = await handle.fetch_history()

    assert event_types(floor) == event_types(order)
    assert len(local_steps(floor)) == len(local_steps(order)) == 2
