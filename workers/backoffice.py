"""The back-office worker: settlement, reconciliation, end-of-day equity snapshots and funding.

Task queues (kept apart from ``shard-<n>``, whose workers register only the order workflow):

- ``backoffice``: the Settlement, LedgerReconciliation and EquitySnapshot workflows and the cross-shard
  activities (plan, netting report in the directory, clearinghouse comparison);
- ``backoffice-shard-<n>``: the Deposit and Withdrawal workflows of that shard's accounts (their
  local activities bound to that shard's database and the ACH bank) and the shard-local
  settlement/reconciliation/equity snapshot activities.

One process may serve every shard (``sherwood serve backoffice``); it keeps its pools small.

The outside world comes in through the ports of :mod:`domain.ports`: :class:`BackofficeWorkers`
is given a :class:`~domain.ports.Bank` and a :class:`~domain.ports.Clearinghouse` and never builds
or imports an implementation. The entry point chooses them: ``sherwood serve backoffice`` runs
:func:`sherwood.wiring.run_backoffice`, whose :func:`sherwood.wiring.outside_world` supplies the
simulators today; tests pass their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import Worker

from activities.corporate_actions import AnnouncementActivities, CorporateActionActivities
from activities.equity import EquityActivities
from activities.funding import FundingActivities
from activities.settlement import SettlementActivities, ShardSettlementActivities
from db.engines import make_engine
from db.funding import FundingStore
from domain.ports import Announcements, Bank, Clearinghouse
from sherwood.contracts import BACKOFFICE_TASK_QUEUE, backoffice_shard_queue
from sherwood.lifecycle import shutdown_workers, stopped_by_signals
from sherwood.settings import Settings
from sherwood.temporal import connect
from workflows.corporate_actions import CorporateActionsInput, CorporateActionsWorkflow
from workflows.deposit import DepositWorkflow
from workflows.equity import EquityRunInput, EquitySnapshotWorkflow
from workflows.settlement import (
    LedgerReconciliationWorkflow,
    SettlementInput,
    SettlementWorkflow,
)
from workflows.withdrawal import WithdrawalWorkflow

log = logging.getLogger(__name__)


def backoffice_workflows() -> list[type]:
    return [SettlementWorkflow, LedgerReconciliationWorkflow, EquitySnapshotWorkflow,
            CorporateActionsWorkflow]


def backoffice_shard_workflows() -> list[type]:
    return [DepositWorkflow, WithdrawalWorkflow]


def backoffice_activities(directory: AsyncEngine, engine_by_shard: list[AsyncEngine],
                          clearinghouse: Clearinghouse, announcements: Announcements
                          ) -> list[Callable[..., Any]]:
    return [*SettlementActivities(directory, engine_by_shard, clearinghouse).all(),
            *AnnouncementActivities(announcements).all()]


def backoffice_shard_activities(settings: Settings, engine: AsyncEngine, shard: int,
                                bank: Bank, marketdata: AsyncEngine | None = None,
                                client: Client | None = None) -> list[Callable[..., Any]]:
    return [*ShardSettlementActivities(engine, shard, house_stripes=settings.house_balance_stripes,
                                       audit_halts=settings.reconcile_audit == "halt").all(),
            *EquityActivities(engine, shard, marketdata).all(),
            *CorporateActionActivities(engine, shard, client, settings.house_balance_stripes).all(),
            *FundingActivities(FundingStore(engine), bank).all()]


@dataclass
class BackofficeWorkers:
    """The back-office workers of this process. The bank and the clearinghouse are the caller's
    (it also closes whatever they hold); the shard and directory pools are opened here."""

    settings: Settings
    bank: Bank
    clearinghouse: Clearinghouse
    shards: list[int] | None = None  # None: every shard
    client: Client | None = None
    # the corporate-action announcements feed; None: the simulator's file (settings)
    announcements: Announcements | None = None
    _workers: list[Worker] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _engines: list[AsyncEngine] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        self.client = self.client or await connect(s)
        size = s.backoffice_db_pool_size
        shards = self.shards if self.shards is not None else list(range(s.shard_count))
        engines = [make_engine(s.shard_url(n), pool_size=size, max_overflow=size)
                   for n in range(s.shard_count)]
        directory = make_engine(s.directory_db_url(), pool_size=size, max_overflow=size)
        # the minute bars of the closing prices (end-of-day snapshots)
        marketdata = make_engine(s.marketdata_db_url_resolved(), pool_size=1, max_overflow=1)
        self._engines = [*engines, directory, marketdata]
        self._add(Worker(self.client, task_queue=BACKOFFICE_TASK_QUEUE, workflows=backoffice_workflows(),
                         activities=backoffice_activities(directory, engines, self.clearinghouse,
                                                          self._announcements())))
        for n in shards:
            self._add(Worker(self.client, task_queue=backoffice_shard_queue(n),
                             workflows=backoffice_shard_workflows(),
                             activities=backoffice_shard_activities(s, engines[n], n, self.bank, marketdata,
                                                                   self.client),
                             max_concurrent_activities=4, max_concurrent_local_activities=50))
        log.info("back-office workers running (shards %s)", shards)

    def _announcements(self) -> Announcements:
        if self.announcements is None:
            from simulators.announcements import FileAnnouncements  # the development feed

            self.announcements = FileAnnouncements(self.settings.announcements_file_resolved())
        return self.announcements

    def _add(self, worker: Worker) -> None:
        self._workers.append(worker)
        self._tasks.append(asyncio.create_task(worker.run(), name=f"worker-{worker.task_queue}"))

    async def stop(self) -> None:
        await shutdown_workers(self._workers, self.settings.worker_shutdown_timeout_s,
                               "back-office workers")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for e in self._engines:
            await e.dispose()


def settlement_schedule(settings: Settings) -> Schedule:
    """Every weekday at settlement_hour_ny:settlement_minute_ny New York time; the workflow
    no-ops on non-sessions (exchange-calendars decides) and catches up missed sessions."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SettlementWorkflow.run,
            SettlementInput(shards=settings.shard_count, max_catch_up_days=settings.settlement_catch_up_days,
                            retry_s=settings.settlement_retry_s),
            id=f"{settings.settlement_schedule_id}-run", task_queue=BACKOFFICE_TASK_QUEUE),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(
                day_of_week=[ScheduleRange(1, 5)], hour=[ScheduleRange(settings.settlement_hour_ny)],
                minute=[ScheduleRange(settings.settlement_minute_ny)], second=[ScheduleRange(0)])],
            time_zone_name="America/New_York"),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ALL,
                              catchup_window=timedelta(days=7)),
    )


def equity_snapshot_schedule(settings: Settings) -> Schedule:
    """Every weekday at equity_snapshot_hour_ny:equity_snapshot_minute_ny New York time (after
    the close); the workflow writes nothing on non-sessions."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            EquitySnapshotWorkflow.run, EquityRunInput(shards=settings.shard_count),
            id=f"{settings.equity_snapshot_schedule_id}-run", task_queue=BACKOFFICE_TASK_QUEUE),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(
                day_of_week=[ScheduleRange(1, 5)], hour=[ScheduleRange(settings.equity_snapshot_hour_ny)],
                minute=[ScheduleRange(settings.equity_snapshot_minute_ny)], second=[ScheduleRange(0)])],
            time_zone_name="America/New_York"),
        # a missed snapshot is not caught up later: the equity it would value is gone
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=1)),
    )


def corporate_actions_schedule(settings: Settings) -> Schedule:
    """Every weekday at corporate_actions_hour_ny:00 New York time (before the open: splits take
    effect before trading on their ex-date)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CorporateActionsWorkflow.run, CorporateActionsInput(
                shards=settings.shard_count, split_wait_s=settings.corporate_actions_split_wait_s),
            id=f"{settings.corporate_actions_schedule_id}-run", task_queue=BACKOFFICE_TASK_QUEUE),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(
                day_of_week=[ScheduleRange(1, 5)], hour=[ScheduleRange(settings.corporate_actions_hour_ny)],
                minute=[ScheduleRange(0)], second=[ScheduleRange(0)])],
            time_zone_name="America/New_York"),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ALL,
                              catchup_window=timedelta(days=1)),
    )


async def apply_schedules(client: Client, settings: Settings) -> str:
    """Create the settlement, equity snapshot and corporate-action schedules, or update them to
    the current definitions. Idempotent; returns the settlement schedule's outcome (created |
    updated)."""
    await _apply(client, settings.equity_snapshot_schedule_id, equity_snapshot_schedule(settings))
    await _apply(client, settings.corporate_actions_schedule_id, corporate_actions_schedule(settings))
    return await _apply(client, settings.settlement_schedule_id, settlement_schedule(settings))


async def _apply(client: Client, sid: str, schedule: Schedule) -> str:
    try:
        await client.create_schedule(sid, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        def _update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(sid).update(_update)
        return "updated"


async def run(settings: Settings, bank: Bank, clearinghouse: Clearinghouse) -> None:
    """Serve the back office with this bank and clearinghouse until SIGINT/SIGTERM."""
    workers = BackofficeWorkers(settings, bank, clearinghouse)
    await workers.start()
    with stopped_by_signals() as stop:
        await stop.wait()
    await workers.stop()
