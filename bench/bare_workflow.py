"""The baseline of bench.orders: a bare workflow of five no-op activities and one signal.
Its own module so the workflow sandbox imports nothing but temporalio."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def noop(_: str) -> str:
    return "ok"


@workflow.defn(name="BenchBare")
class BareWorkflow:
    def __init__(self) -> None:
        self.signalled = False

    @workflow.signal
    def go(self) -> None:
        self.signalled = True

    @workflow.run
    async def run(self, _: str) -> str:
        for _i in range(5):
            await workflow.execute_activity(noop, "x", start_to_close_timeout=timedelta(seconds=10))
        await workflow.wait_condition(lambda: self.signalled)
        return "done"
