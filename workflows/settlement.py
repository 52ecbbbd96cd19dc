"""The settlement workflow: one run settles one or more NYSE business dates, in order.

Started by the Temporal Schedule (``date`` None: today in New York, catching up every session
missed since the last settled one) or by ``sherwood settlement run DATE [--through DATE]``. For
each date it fans out to every shard (activities on ``backoffice-shard-<n>``: one database
transaction per shard, idempotent by date), then writes the cross-shard netting report and the
clearinghouse comparison (``backoffice``). Finally each shard's ledger is reconciled (end of day);
a difference halts that shard's new orders. A non-session date settles nothing.

Failures (patch :data:`BOUNDED_RETRIES`): every activity's retries are bounded
(``retry_s``, from ``settlement_retry_s``). A shard whose settlement or reconciliation fails for
good halts itself (:mod:`activities.settlement`) and the run fails: listed by Temporal as failed,
the halt in ``sherwood ops halts``. Runs started before the patch keep retrying without end.

Each shard's answer is :class:`domain.settlement.ShardSettlement`; the other payloads are the
activities' inputs and results (:mod:`activities.settlement`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.settlement import (
        PlanInput,
        ReconcileInput,
        ReconcileResult,
        ReportInput,
        ReportSummary,
        SettleDayInput,
    )
    from domain.settlement import ShardSettlement
    from sherwood.contracts import BACKOFFICE_TASK_QUEUE, backoffice_shard_queue
    from sherwood.faults import retries_within

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Patch id: retries bounded (a run whose shard fails for good fails, the shard halted)
BOUNDED_RETRIES = "settlement-bounded-retries"
# how long the end-of-day reconciliation (its workflow's input is only the shard count) retries
# a transient failure; the Settlement workflow's own is its input's retry_s
RECONCILE_RETRY_S = 1800.0


def retry_policy(within_s: float) -> RetryPolicy:
    """RETRY bounded to about ``within_s`` of retries, for runs that have the patch."""
    return retries_within(RETRY, within_s) if workflow.patched(BOUNDED_RETRIES) else RETRY


@dataclass
class SettlementInput:
    shards: int
    date: str | None = None  # None: today (New York), with catch-up
    through: str | None = None
    reconcile: bool = True
    max_catch_up_days: int = 10
    retry_s: float = 1800.0  # a transient failure is retried this long (settlement_retry_s)


@dataclass
class DayResult:
    business_date: str
    executions: int
    accounts: int
    replayed: bool
    report: ReportSummary


@dataclass
class SettlementResult:
    days: list[DayResult] = field(default_factory=list)
    reconciliation: list[ReconcileResult] = field(default_factory=list)

    @property
    def halted_shards(self) -> list[int]:
        return [r.shard for r in self.reconciliation if not r.ok]


@workflow.defn(name="Settlement")
class SettlementWorkflow:
    @workflow.run
    async def run(self, inp: SettlementInput) -> SettlementResult:
        retry = retry_policy(inp.retry_s)
        now = workflow.now().isoformat()  # the plan activity turns it into a New York date
        last: list[str | None] = []
        if inp.date is None:
            last = list(await asyncio.gather(*(
                workflow.execute_activity(
                    "last_settled_date", task_queue=backoffice_shard_queue(n), result_type=str,
                    start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
                for n in range(inp.shards))))
        dates: list[str] = await workflow.execute_activity(
            "plan_settlement", PlanInput(now=now, date=inp.date, through=inp.through,
                                         last_settled=last, max_catch_up_days=inp.max_catch_up_days),
            task_queue=BACKOFFICE_TASK_QUEUE, result_type=list[str],
            start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
        result = SettlementResult()
        for d in dates:  # strictly in order: a day starts when the previous one is done everywhere
            parts: list[ShardSettlement] = list(await asyncio.gather(*(
                workflow.execute_activity(
                    "settle_shard_day", SettleDayInput(d), task_queue=backoffice_shard_queue(n),
                    result_type=ShardSettlement, start_to_close_timeout=timedelta(minutes=15),
                    retry_policy=retry)
                for n in range(inp.shards))))
            report: ReportSummary = await workflow.execute_activity(
                "record_settlement_report", ReportInput(d, parts), task_queue=BACKOFFICE_TASK_QUEUE,
                result_type=ReportSummary, start_to_close_timeout=timedelta(minutes=15), retry_policy=retry)
            result.days.append(DayResult(d, sum(p.executions for p in parts), sum(p.accounts for p in parts),
                                         all(p.replayed for p in parts), report))
        if inp.reconcile:
            on = dates[-1] if dates else inp.date
            result.reconciliation = list(await asyncio.gather(*(
                workflow.execute_activity(
                    "reconcile_shard_ledger", ReconcileInput(on), task_queue=backoffice_shard_queue(n),
                    result_type=ReconcileResult, start_to_close_timeout=timedelta(minutes=15),
                    retry_policy=retry)
                for n in range(inp.shards))))
        return result


@workflow.defn(name="LedgerReconciliation")
class LedgerReconciliationWorkflow:
    """End-of-day ledger reconciliation of every shard on its own (also part of Settlement)."""

    @workflow.run
    async def run(self, shards: int) -> list[ReconcileResult]:
        retry = retry_policy(RECONCILE_RETRY_S)
        return list(await asyncio.gather(*(
            workflow.execute_activity(
                "reconcile_shard_ledger", ReconcileInput(None), task_queue=backoffice_shard_queue(n),
                result_type=ReconcileResult, start_to_close_timeout=timedelta(minutes=15),
                retry_policy=retry)
            for n in range(shards))))
