"""The CorporateActions workflow: a business date's announcements applied on every shard.

Started by its Temporal Schedule (weekdays before the open, New York time) or by an operator
for a date. It fetches the announcements due that day (``fetch_announcements``: ex-date or
payable date), logs the ones the rules refuse as errors (visible, never applied), and applies
the rest on each shard (``apply_corporate_actions`` on ``backoffice-shard-<n>``): dividends on
their payable date, splits on their ex-date. Each account's share is written once (a rerun or a
replay pays nobody twice). A split waiting for its symbol's orders and settlement is retried
for up to ``split_wait_s``, then the run fails (listed as failed in Temporal: the alert).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.corporate_actions import (
        AppliedCorporateActions,
        ApplyCorporateActionsInput,
        FetchAnnouncementsInput,
        FetchedAnnouncements,
    )
    from domain import calendar
    from sherwood.contracts import backoffice_shard_queue


@dataclass
class CorporateActionsInput:
    shards: int
    business_date: str | None = None  # None: the New York date of the run
    entitled_at: str | None = None  # see ApplyCorporateActionsInput (tests)
    split_wait_s: float = 3600.0


@dataclass
class CorporateActionsResult:
    business_date: str
    refused: list[str] = field(default_factory=list)
    shards: list[AppliedCorporateActions] = field(default_factory=list)


@workflow.defn(name="CorporateActions")
class CorporateActionsWorkflow:
    @workflow.run
    async def run(self, inp: CorporateActionsInput) -> CorporateActionsResult:
        d = inp.business_date or calendar.trade_date(workflow.now()).isoformat()
        fetched = await workflow.execute_activity(
            "fetch_announcements", FetchAnnouncementsInput(d), result_type=FetchedAnnouncements,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=20))
        for why in fetched.refused:
            workflow.logger.error("corporate action refused: %s", why)
        result = CorporateActionsResult(d, fetched.refused)
        if not fetched.due:
            return result
        arg = ApplyCorporateActionsInput(d, fetched.due, inp.entitled_at)
        result.shards = list(await asyncio.gather(*(
            workflow.execute_activity(
                "apply_corporate_actions", arg, task_queue=backoffice_shard_queue(n),
                result_type=AppliedCorporateActions, start_to_close_timeout=timedelta(minutes=15),
                schedule_to_close_timeout=timedelta(seconds=inp.split_wait_s),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                         maximum_interval=timedelta(seconds=30)))
            for n in range(inp.shards))))
        return result
