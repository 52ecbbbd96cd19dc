"""``sherwood audit ...``: checks of the books that change nothing.

What it does: ``audit invariants`` runs every invariant of db/audit.py (ledger transactions
balanced, cached balances, negative balances and their causes, fill bookings, orders' filled
quantities and holds, held balances, clearing accounts, provisional ACH, settlement) on every
shard, or on one (``--shard N``), each shard in one REPEATABLE READ snapshot. It prints per shard
``ok`` or each violated invariant with its count and first rows; ``--json`` prints one JSON
document (shards -> invariants -> rows). Exit code 0 when every shard is clean, 1 when any
invariant is violated, 2 for a usage error.

What it deliberately does not do: repair anything or halt a shard (the end-of-day reconciliation
halts a shard whose audit fails; what to do is in docs/operations.md, "A failed reconciliation"),
or mount itself (sherwood/cli.py adds ``audit_app`` to the root app).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer

from sherwood.cli_common import Clients, DataDir, console, load_settings, run

if TYPE_CHECKING:
    from db.audit import AuditReport

audit_app = typer.Typer(help="Audits of the books (read only).", no_args_is_help=True)

SHOWN = 5  # rows printed per violated invariant (--json carries every row the audit kept)


@audit_app.command("invariants")
def audit_invariants(
    shard: Annotated[int | None, typer.Option("--shard", help="Audit only this shard.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Check the books' invariants on every shard; exit 1 when any is violated."""
    s = load_settings(data_dir)
    if shard is not None and not 0 <= shard < s.shard_count:
        raise typer.BadParameter(f"no shard {shard}: shards are 0..{s.shard_count - 1}",
                                 param_hint="--shard")
    shards = [shard] if shard is not None else list(range(s.shard_count))
    reports = run(lambda c: _audit(c, shards), s)
    ok = all(r.ok for r in reports)
    if as_json:
        print(json.dumps({"ok": ok, "shards": {str(r.shard): r.to_json() for r in reports}}))
    else:
        for r in reports:
            _print(r)
    if not ok:
        raise typer.Exit(1)


async def _audit(c: Clients, shards: list[int]) -> list[AuditReport]:
    from db.audit import audit_shard

    return list(await asyncio.gather(*(
        audit_shard(c.engine(c.settings.shard_url(n)), n) for n in shards)))


def _print(report: AuditReport) -> None:
    if report.ok:
        console.print(f"shard {report.shard}: [green]ok[/] ({len(report.checked)} invariants)")
        return
    console.print(f"shard {report.shard}: [red]{len(report.violations)} invariant(s) violated[/]")
    for v in report.violations:
        console.print(f"  [bold]{v.invariant}[/] ({v.count}): {v.description}")
        for row in v.rows[:SHOWN]:
            console.print("    " + " ".join(f"{k}={val}" for k, val in row.items() if val is not None),
                          markup=False, highlight=False)
        if v.count > SHOWN:
            console.print(f"    ... and {v.count - SHOWN} more", markup=False, highlight=False)
