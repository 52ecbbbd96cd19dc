"""The end-of-day equity snapshot: every shard's accounts valued after the close, once per
session (``GET /v2/account`` answers the previous session's as ``last_equity``).

Started by its Temporal Schedule (weekdays after the close, New York time,
:func:`workers.backoffice.equity_snapshot_schedule`); each shard snapshots on its own queue
``backoffice-shard-<n>`` (:mod:`activities.equity`). A non-session day writes nothing; a rerun
for the same date writes nothing new.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.equity import EquitySnapshotInput, EquitySnapshotResult
    from sherwood.contracts import backoffice_shard_queue

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@dataclass
class EquityRunInput:
    shards: int
    business_date: str | None = None  # None: the New York date of the run
    # the instant valued (ISO); None: the session's close, or the run's time if that is earlier.
    # An operator's rerun or a test's simulated session names it.
    as_of: str | None = None


@dataclass
class EquityRunResult:
    shards: list[EquitySnapshotResult] = field(default_factory=list)


@workflow.defn(name="EquitySnapshot")
class EquitySnapshotWorkflow:
    @workflow.run
    async def run(self, inp: EquityRunInput) -> EquityRunResult:
        arg = EquitySnapshotInput(now=workflow.now().isoformat(), business_date=inp.business_date,
                                  as_of=inp.as_of)
        return EquityRunResult(list(await asyncio.gather(*(
            workflow.execute_activity(
                "snapshot_shard_equity", arg, task_queue=backoffice_shard_queue(n),
                result_type=EquitySnapshotResult, start_to_close_timeout=timedelta(minutes=15),
                retry_policy=RETRY)
            for n in range(inp.shards)))))
