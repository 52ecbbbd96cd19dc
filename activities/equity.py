"""The end-of-day snapshot activity of ONE shard (queue ``backoffice-shard-<n>``), served by the
back-office worker. The store is :mod:`db.equity`; closing prices come from the market-data
database's minute bars (:mod:`db.bar_prices`); the schedule and the fan-out are
:mod:`workflows.equity`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from db.bar_prices import last_closes
from db.equity import snapshot_equity
from domain import calendar
from sherwood.faults import final_unless_transient


@dataclass
class EquitySnapshotInput:
    now: str  # ISO time the run started (workflow time): its New York date is the snapshot's
    business_date: str | None = None  # a given date instead (an operator's rerun)
    as_of: str | None = None  # the instant valued; None: min(the session's close, now)


@dataclass
class EquitySnapshotResult:
    shard: int
    business_date: str | None  # None: not a session, nothing written
    written: int = 0


class EquityActivities:
    def __init__(self, engine: AsyncEngine, shard: int, marketdata: AsyncEngine | None = None) -> None:
        """``marketdata``: the market-data database (minute bars); None values positions at the
        shard's last fills only."""
        self.engine = engine
        self.shard = shard
        self.marketdata = marketdata

    async def _bar_closes(self, symbols: Sequence[str], at: datetime) -> Mapping[str, Decimal]:
        return {} if self.marketdata is None else await last_closes(self.marketdata, symbols, at)

    @activity.defn(name="snapshot_shard_equity")
    @final_unless_transient
    async def snapshot_shard_equity(self, inp: EquitySnapshotInput) -> EquitySnapshotResult:
        """Snapshot this shard's accounts for the session of ``now`` (New York date), or for
        ``business_date``, as of its close (or ``as_of``); a day that is no NYSE session writes
        nothing. Idempotent per date."""
        now = datetime.fromisoformat(inp.now)
        d = date.fromisoformat(inp.business_date) if inp.business_date else calendar.trade_date(now)
        hours = calendar.session_hours(d)
        if hours is None:
            return EquitySnapshotResult(self.shard, None)
        as_of = datetime.fromisoformat(inp.as_of) if inp.as_of else min(now, hours[1])
        written = await snapshot_equity(self.engine, d, as_of, self._bar_closes)
        return EquitySnapshotResult(self.shard, d.isoformat(), written)

    def all(self) -> list[Callable[..., Any]]:
        return [self.snapshot_shard_equity]
