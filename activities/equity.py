"""The end-of-day equity snapshot activity of ONE shard (queue ``backoffice-shard-<n>``), served
by the back-office worker. The store is :mod:`db.equity`; the schedule and the fan-out are
:mod:`workflows.equity`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from db.equity import snapshot_equity
from domain import calendar
from sherwood.faults import final_unless_transient


@dataclass
class EquitySnapshotInput:
    now: str  # ISO time the run started (workflow time): its New York date is the snapshot's
    business_date: str | None = None  # a given date instead (an operator's rerun)


@dataclass
class EquitySnapshotResult:
    shard: int
    business_date: str | None  # None: not a session, nothing written
    written: int = 0


class EquityActivities:
    def __init__(self, engine: AsyncEngine, shard: int) -> None:
        self.engine = engine
        self.shard = shard

    @activity.defn(name="snapshot_shard_equity")
    @final_unless_transient
    async def snapshot_shard_equity(self, inp: EquitySnapshotInput) -> EquitySnapshotResult:
        """Snapshot this shard's accounts for the session of ``now`` (New York date), or for
        ``business_date``; a day that is no NYSE session writes nothing. Idempotent per date."""
        d = (date.fromisoformat(inp.business_date) if inp.business_date
             else calendar.trade_date(datetime.fromisoformat(inp.now)))
        if not calendar.is_session(d):
            return EquitySnapshotResult(self.shard, None)
        return EquitySnapshotResult(self.shard, d.isoformat(), await snapshot_equity(self.engine, d))

    def all(self) -> list[Callable[..., Any]]:
        return [self.snapshot_shard_equity]
