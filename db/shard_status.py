"""Shard trading halts and end-of-day ledger reconciliation records (ops-visible, on the shard).

A reconciliation that finds any difference (a cached balance that does not equal the sum of its
entries, or a transaction that does not sum to zero) records itself in ``reconciliation_runs``,
opens a halt in ``shard_halts``, logs a CRITICAL line and counts ``RECONCILIATION_FAILURES``. While
a halt is open, :data:`HALT_REASON` reads its reason and the order path refuses new
orders on this shard; an operator clears it (``sherwood ops clear-halt --shard N`` or
``POST /ops/shards/{n}/clear-halt``). Other shards are not affected.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engines import run_in_transaction
from db.ledger import Ledger

log = logging.getLogger("sherwood.reconciliation")

# Process-local metric counters (name -> count); a metrics exporter reads them.
METRICS: Counter[str] = Counter()
RECONCILIATION_FAILURES = "sherwood_ledger_reconciliation_failures_total"


# why new orders are halted on this shard (one text, or NULL); cheap (partial index)
HALT_REASON = """SELECT reason || ' (halt #' || id || ')' FROM shard_halts
                  WHERE cleared_at IS NULL ORDER BY id LIMIT 1"""


@dataclass
class ReconcileOutcome:
    shard: int
    ok: bool
    accounts_checked: int
    run_id: int
    halt_id: int | None = None
    mismatches: list[dict[str, str]] = field(default_factory=list)
    unbalanced: list[dict[str, str]] = field(default_factory=list)


async def reconcile_and_record(
    engine: AsyncEngine, shard: int, business_date: date | None = None
) -> ReconcileOutcome:
    """Run the ledger reconciliation, record it, and halt the shard on any difference."""
    report = await Ledger(engine).reconcile()
    mism = [{"ledger_account_id": str(m.ledger_account_id), "owner": str(m.owner or "house"),
             "name": m.name, "from_entries": str(m.from_entries), "cached": str(m.cached)}
            for m in report.mismatches]
    unb = [{"txn_id": u.txn_id, "currency": u.currency, "total": str(u.total)} for u in report.unbalanced]

    async def _do(conn: AsyncConnection) -> ReconcileOutcome:
        run_id = (await conn.execute(
            text("INSERT INTO reconciliation_runs (business_date, ok, accounts_checked, mismatches, "
                 "unbalanced) VALUES (:d, :ok, :n, CAST(:m AS jsonb), CAST(:u AS jsonb)) RETURNING id"),
            {"d": business_date, "ok": report.ok, "n": report.accounts_checked, "m": json.dumps(mism),
             "u": json.dumps(unb)})).scalar_one()
        halt_id = None
        if not report.ok:
            reason = (f"ledger reconciliation failed: {len(mism)} balance mismatch(es), "
                      f"{len(unb)} unbalanced transaction(s)")
            halt_id = (await conn.execute(
                text("INSERT INTO shard_halts (reason, details, reconciliation_run_id) "
                     "VALUES (:r, CAST(:d AS jsonb), :run) RETURNING id"),
                {"r": reason, "d": json.dumps({"mismatches": mism[:50], "unbalanced": unb[:50]}),
                 "run": run_id})).scalar_one()
        return ReconcileOutcome(shard, report.ok, report.accounts_checked, run_id, halt_id, mism, unb)

    outcome = await run_in_transaction(engine, _do)
    if not outcome.ok:
        METRICS[RECONCILIATION_FAILURES] += 1
        log.critical("CRITICAL: shard %d ledger reconciliation failed (run %d): %s %s -- new orders "
                     "halted on this shard (halt #%s) until an operator clears it",
                     shard, outcome.run_id, mism[:5], unb[:5], outcome.halt_id)
    return outcome


async def open_halt(engine: AsyncEngine, shard: int, reason: str, details: dict[str, Any]) -> int:
    """Halt new orders on this shard (in a transaction of its own); returns the halt's id."""
    async with engine.begin() as conn:
        halt_id: int = (await conn.execute(
            text("INSERT INTO shard_halts (reason, details) VALUES (:r, CAST(:d AS jsonb)) RETURNING id"),
            {"r": reason, "d": json.dumps(details, default=str)})).scalar_one()
    log.critical("CRITICAL: shard %d halted (halt #%d): %s", shard, halt_id, reason)
    return halt_id


async def clear_halts(engine: AsyncEngine, *, operator: str, note: str = "") -> int:
    """Clear every open halt of the shard. Returns how many were cleared."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text("UPDATE shard_halts SET cleared_at = clock_timestamp(), cleared_by = :o, clear_note = :n "
                 "WHERE cleared_at IS NULL"), {"o": operator, "n": note})
    cleared: int = result.rowcount  # type: ignore[attr-defined]
    if cleared:
        log.warning("shard halts cleared by %s: %d (%s)", operator, cleared, note)
    return cleared


async def halts(engine: AsyncEngine, *, open_only: bool = True) -> list[dict[str, Any]]:
    where = "WHERE cleared_at IS NULL" if open_only else ""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            f"SELECT id, reason, details, created_at, cleared_at, cleared_by FROM shard_halts {where} "
            "ORDER BY id"))).mappings().all()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]
