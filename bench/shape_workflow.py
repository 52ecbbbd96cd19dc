"""The floor of bench.orders: a workflow with exactly the Temporal shape of a filled market order
(update-with-start answered when its first workflow task completes; in that task two local
activities: accept, and the send over the gateway link with the booking of its answers; one
patch marker; OrderState upserted once), with no-op bodies. What it costs is what the order's
Temporal steps alone cost; ours minus it is the price of the business work (HTTP, risk, ledger,
FIX). Its own module so the workflow sandbox imports nothing but temporalio."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

ORDER_STATE = SearchAttributeKey.for_keyword("OrderState")


@activity.defn(name="shape_local")
async def shape_local(step: str) -> str:
    return step


@workflow.defn(name="BenchShape")
class ShapeWorkflow:
    def __init__(self) -> None:
        self.state: str | None = None

    @workflow.update
    async def accepted(self, _: str) -> str:
        await workflow.wait_condition(lambda: self.state is not None)
        assert self.state is not None
        return self.state

    @workflow.run
    async def run(self, _: str) -> str:
        workflow.patched("bench-shape")
        self.state = await self._local("FUNDS_HELD")
        state = await self._local("FILLED")  # sent and booked
        workflow.upsert_search_attributes([ORDER_STATE.value_set(state)])
        return state

    async def _local(self, step: str) -> str:
        return await workflow.execute_local_activity(shape_local, step,
                                                     start_to_close_timeout=timedelta(seconds=10))
