"""Settlement and reconciliation activities.

:class:`ShardSettlementActivities` are bound to ONE shard's database and run on that shard's
back-office queue ``backoffice-shard-<n>``; :class:`SettlementActivities` run on ``backoffice``
(planning, the cross-shard netting report in the directory and the clearinghouse comparison).
Both are served by the back-office worker (:mod:`workers.backoffice`).

The clearinghouse is the :class:`domain.ports.Clearinghouse` port: the entry point chooses it
(:func:`sherwood.wiring.outside_world`; today the simulated
:class:`simulators.clearinghouse.Clearinghouse`).

Failures of a shard's settlement or reconciliation: a deterministic one (the ledger's refusal, or
anything unexpected) halts the shard for an operator (naming the date, and the account when
known) and is not retried; a transient one is retried within the workflow's maximum, and on the
last attempt halts the shard the same way. Either way the workflow then fails, visibly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.errors import LedgerRejected
from db.settlement import (
    SettlementFailed,
    last_settled,
    load_report,
    settle_shard,
    settled_fills,
    store_report,
)
from db.shard_status import open_halt, reconcile_and_record
from domain import calendar
from domain.ports import Clearinghouse
from domain.settlement import (
    Netting,
    SettlementDateError,
    ShardSettlement,
    catch_up_dates,
    check_settleable,
    compare,
    merge,
    sessions_between,
)
from sherwood.faults import INTERNAL_ERROR, final_unless_transient, is_transient

log = logging.getLogger(__name__)


@dataclass
class SettleDayInput:
    business_date: str


@dataclass
class ReconcileInput:
    business_date: str | None = None


@dataclass
class ReconcileResult:
    shard: int
    ok: bool
    accounts_checked: int
    halt_id: int | None = None
    mismatches: int = 0
    unbalanced: int = 0
    # the invariants the audit found violated (db/audit.py); absent from results recorded earlier
    violated: list[str] = field(default_factory=list)


@dataclass
class PlanInput:
    now: str  # ISO time the run started (workflow time)
    date: str | None = None
    through: str | None = None
    last_settled: list[str | None] = field(default_factory=list)
    max_catch_up_days: int = 10


@dataclass
class ReportInput:
    business_date: str
    shards: list[ShardSettlement]


@dataclass
class ReportSummary:
    business_date: str
    executions: int
    symbols: int
    breaks: int
    street_fills: int | None


class ShardSettlementActivities:
    def __init__(self, engine: AsyncEngine, shard: int, *, house_stripes: int = 32,
                 audit_halts: bool = True) -> None:
        self.engine = engine
        self.shard = shard
        self.house_stripes = house_stripes
        self.audit_halts = audit_halts  # a violated invariant halts the shard (else: recorded)

    @activity.defn(name="settle_shard_day")
    @final_unless_transient
    async def settle_shard_day(self, inp: SettleDayInput) -> ShardSettlement:
        """Settle the date on this shard. A settlement the ledger refuses is deterministic: the
        shard is halted (naming the account) and the failure is not retried."""
        try:
            return await settle_shard(self.engine, self.shard, date.fromisoformat(inp.business_date),
                                      house_stripes=self.house_stripes)
        except SettlementDateError as exc:  # not a shard's problem: refused, not retried
            raise ApplicationError(exc.message, type=exc.code, non_retryable=True) from exc
        except (SettlementFailed, LedgerRejected) as exc:
            account = getattr(exc, "account", None)
            reason = f"settlement of {inp.business_date} failed: {exc.message}"
            halt = await open_halt(self.engine, self.shard, reason,
                                   {"business_date": inp.business_date, "account": account})
            raise ApplicationError(f"shard {self.shard}: {reason} (halt #{halt})", type=exc.code,
                                   non_retryable=True) from exc
        except Exception as exc:
            final = await self._halt_unless_retried(
                exc, f"settlement of {inp.business_date}", inp.business_date)
            if final is None:
                raise
            raise final from exc

    async def _halt_unless_retried(self, exc: Exception, what: str,
                                   business_date: str | None) -> ApplicationError | None:
        """What an unexpected failure becomes: a transient one, while attempts remain, None
        (raised as it is: retried); otherwise the shard halted for an operator and a non-retryable error
        (``internal_error``, or ``shard_unavailable`` after the last transient attempt). A halt
        that cannot be written (the database out of reach) is logged; the error stands."""
        transient = is_transient(exc)
        if transient and not _last_attempt():
            return None
        reason = f"{what} failed: {type(exc).__name__}: {exc}"[:500]
        if transient:
            reason += " (retries exhausted)"
        try:
            halt: int | str = await open_halt(self.engine, self.shard, reason,
                                              {"business_date": business_date,
                                               "error": type(exc).__name__})
        except Exception as again:
            log.critical("CRITICAL: shard %d: %s; the halt could not be written either: %s",
                         self.shard, reason, again)
            halt = "not written"
        return ApplicationError(f"shard {self.shard}: {reason} (halt #{halt})",
                                type="shard_unavailable" if transient else INTERNAL_ERROR,
                                non_retryable=True)

    @activity.defn(name="last_settled_date")
    @final_unless_transient
    async def last_settled_date(self) -> str | None:
        d = await last_settled(self.engine)
        return d.isoformat() if d else None

    @activity.defn(name="reconcile_shard_ledger")
    @final_unless_transient
    async def reconcile_shard_ledger(self, inp: ReconcileInput) -> ReconcileResult:
        try:
            out = await reconcile_and_record(
                self.engine, self.shard,
                date.fromisoformat(inp.business_date) if inp.business_date else None,
                audit_halts=self.audit_halts)
        except Exception as exc:
            final = await self._halt_unless_retried(
                exc, f"reconciliation of {inp.business_date or 'today'}", inp.business_date)
            if final is None:
                raise
            raise final from exc
        return ReconcileResult(self.shard, out.ok, out.accounts_checked, out.halt_id,
                               len(out.mismatches), len(out.unbalanced),
                               [v["invariant"] for v in out.violations])

    def all(self) -> list[Callable[..., Any]]:
        return [self.settle_shard_day, self.last_settled_date, self.reconcile_shard_ledger]


def _last_attempt() -> bool:
    """This activity's attempt is the last its retry policy allows."""
    info = activity.info()
    policy = info.retry_policy
    return bool(policy and policy.maximum_attempts and info.attempt >= policy.maximum_attempts)


class SettlementActivities:
    def __init__(self, directory: AsyncEngine, shard_engines: list[AsyncEngine],
                 clearinghouse: Clearinghouse) -> None:
        self.directory = directory
        self.shards = shard_engines
        self.clearinghouse = clearinghouse

    @activity.defn(name="plan_settlement")
    @final_unless_transient
    async def plan_settlement(self, inp: PlanInput) -> list[str]:
        """The business dates a run settles, in order (explicit range, or catch-up from the last
        date every shard settled up to today). A date after today is refused: settling it would
        settle today's trades early."""
        if inp.date is not None:
            start = date.fromisoformat(inp.date)
            end = date.fromisoformat(inp.through) if inp.through else start
            try:
                check_settleable(max(start, end), datetime.fromisoformat(inp.now))
            except SettlementDateError as exc:
                raise ApplicationError(exc.message, type=exc.code, non_retryable=True) from exc
            return [d.isoformat() for d in sessions_between(start, end)]
        dones = [date.fromisoformat(x) if x else None for x in inp.last_settled]
        last = None if (not dones or any(d is None for d in dones)) else min(d for d in dones if d)
        today = calendar.trade_date(datetime.fromisoformat(inp.now))
        return [d.isoformat() for d in catch_up_dates(last, today, inp.max_catch_up_days)]

    @activity.defn(name="record_settlement_report")
    @final_unless_transient
    async def record_settlement_report(self, inp: ReportInput) -> ReportSummary:
        d = date.fromisoformat(inp.business_date)
        netting = merge([Netting.from_wire(n) for n in s.netting] for s in inp.shards)
        ours = [f for part in await asyncio.gather(*(settled_fills(e, d) for e in self.shards))
                for f in part]
        street = await self.clearinghouse.report(d)
        breaks = compare(ours, street).breaks if street is not None else []
        for b in breaks:
            activity.logger.error("settlement break %s: %s %s/%s ours=%s theirs=%s", d, b.kind, b.venue,
                                  b.exec_id, b.ours, b.theirs)
        await store_report(self.directory, d, netting, shards=len(inp.shards), executions=len(ours),
                           breaks=breaks, street_fills=len(street) if street is not None else None)
        return ReportSummary(inp.business_date, len(ours), len(netting), len(breaks),
                             len(street) if street is not None else None)

    @activity.defn(name="load_settlement_report")
    @final_unless_transient
    async def load_settlement_report(self, business_date: str) -> dict[str, Any] | None:
        return await load_report(self.directory, date.fromisoformat(business_date))

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan_settlement, self.record_settlement_report, self.load_settlement_report]
