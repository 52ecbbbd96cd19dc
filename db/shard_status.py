"""Shard trading halts and end-of-day ledger reconciliation records (ops-visible, on the shard).

The end-of-day reconciliation recomputes every balance from its entries and runs the invariants
audit (:func:`db.audit.audit_shard`: holds, fills, clearing, provisional ACH, settlement, ...). A
reconciliation that finds any difference (a cached balance that does not equal the sum of its
entries, a transaction that does not sum to zero, or any violated invariant) records itself in
``reconciliation_runs`` (the audit's findings in ``violations``), opens a halt in
``shard_halts``, logs a CRITICAL line and counts ``RECONCILIATION_FAILURES``. (With
``SHERWOOD_RECONCILE_AUDIT=record`` a violated invariant is recorded, logged and counted in
``INVARIANT_VIOLATIONS`` but does not halt; a ledger difference always does.) While
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

from db.audit import audit_shard
from db.engines import run_in_transaction
from db.ledger import Ledger

log = logging.getLogger("sherwood.reconciliation")

# Process-local metric counters (name -> count); a metrics exporter reads them.
METRICS: Counter[str] = Counter()
RECONCILIATION_FAILURES = "sherwood_ledger_reconciliation_failures_total"
INVARIANT_VIOLATIONS = "sherwood_invariant_violations_total"  # violated invariants, per run


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
    # the violated invariants of the audit: name, description, count, first rows
    violations: list[dict[str, Any]] = field(default_factory=list)


async def reconcile_and_record(
    engine: AsyncEngine, shard: int, business_date: date | None = None, *, audit_halts: bool = True
) -> ReconcileOutcome:
    """Run the ledger reconciliation and the invariants audit, record them, and halt the shard
    on any difference or violation (``audit_halts`` False: violations are recorded and logged,
    only a ledger difference halts). The outcome is ``ok`` when the shard is not halted; the run's
    row is ``ok`` only when nothing at all was found."""
    report = await Ledger(engine).reconcile()
    audit = await audit_shard(engine, shard)
    clean = report.ok and audit.ok
    ok = report.ok and (audit.ok or not audit_halts)
    mism = [{"ledger_account_id": str(m.ledger_account_id), "owner": str(m.owner or "house"),
             "name": m.name, "from_entries": str(m.from_entries), "cached": str(m.cached)}
            for m in report.mismatches]
    unb = [{"txn_id": u.txn_id, "currency": u.currency, "total": str(u.total)} for u in report.unbalanced]
    viol = [{"invariant": v.invariant, **v.to_json()} for v in audit.violations]

    async def _do(conn: AsyncConnection) -> ReconcileOutcome:
        run_id = (await conn.execute(
            text("INSERT INTO reconciliation_runs (business_date, ok, accounts_checked, mismatches, "
                 "unbalanced, violations) VALUES (:d, :ok, :n, CAST(:m AS jsonb), CAST(:u AS jsonb), "
                 "CAST(:v AS jsonb)) RETURNING id"),
            {"d": business_date, "ok": clean, "n": report.accounts_checked, "m": json.dumps(mism),
             "u": json.dumps(unb), "v": json.dumps(viol)})).scalar_one()
        halt_id = None
        if not ok:
            reason = (f"ledger reconciliation failed: {len(mism)} balance mismatch(es), "
                      f"{len(unb)} unbalanced transaction(s)")
            if viol:
                reason += (f", {len(viol)} invariant(s) violated: "
                           + ", ".join(f"{v['invariant']} ({v['count']})" for v in viol))
            halt_id = (await conn.execute(
                text("INSERT INTO shard_halts (reason, details, reconciliation_run_id) "
                     "VALUES (:r, CAST(:d AS jsonb), :run) RETURNING id"),
                {"r": reason, "d": json.dumps({"mismatches": mism[:50], "unbalanced": unb[:50],
                                               "violations": viol}),
                 "run": run_id})).scalar_one()
        return ReconcileOutcome(shard, ok, report.accounts_checked, run_id, halt_id, mism, unb, viol)

    outcome = await run_in_transaction(engine, _do)
    METRICS[INVARIANT_VIOLATIONS] += len(viol)
    if outcome.ok and viol:
        log.error("shard %d invariants violated (run %d, recorded, not halted): %s", shard,
                  outcome.run_id, audit.violated())
    if not outcome.ok:
        METRICS[RECONCILIATION_FAILURES] += 1
        log.critical("CRITICAL: shard %d ledger reconciliation failed (run %d): %s %s, invariants "
                     "violated: %s -- new orders halted on this shard (halt #%s) until an operator "
                     "clears it", shard, outcome.run_id, mism[:5], unb[:5], audit.violated(),
                     outcome.halt_id)
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
