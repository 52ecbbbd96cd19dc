"""``sherwood settlement ...`` and ``sherwood schedules ...``: the back office.

What it does: ``settlement run`` settles a business day (or a range) through the settlement
workflow on the back-office queue and prints what each day settled and each shard's ledger
reconciliation; ``settlement report`` prints a day's netting per symbol and the breaks against
the clearinghouse; ``schedules apply`` creates or updates the daily settlement schedule.

What it deliberately does not do: settle anything itself (the workflow and the back-office
workers do; a back-office worker must be running, ``sherwood serve backoffice``), or mount
itself (sherwood/cli.py adds ``settlement_app`` and ``schedules_app`` to the root app).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from sherwood.cli_common import DataDir, console, err, load_settings, run

settlement_app = typer.Typer(help="T+1 settlement: run days, read netting reports.", no_args_is_help=True)
schedules_app = typer.Typer(help="Temporal Schedules (settlement, equity snapshot).", no_args_is_help=True)


@schedules_app.command("apply")
def schedules_apply(data_dir: DataDir = None) -> None:
    """Create or update the settlement and end-of-day equity snapshot schedules (idempotent)."""
    from workers.backoffice import apply_schedules

    s = load_settings(data_dir)
    outcome = run(lambda c: apply_schedules(c.temporal, s), s, temporal=True)
    console.print(f"schedule {s.settlement_schedule_id}: {outcome} (weekdays "
                  f"{s.settlement_hour_ny:02d}:{s.settlement_minute_ny:02d} America/New_York)")
    console.print(f"schedule {s.equity_snapshot_schedule_id}: applied (weekdays "
                  f"{s.equity_snapshot_hour_ny:02d}:{s.equity_snapshot_minute_ny:02d} America/New_York)")


@settlement_app.command("run")
def settlement_run(
    business_date: Annotated[str, typer.Argument(help="First business date (YYYY-MM-DD).")],
    through: Annotated[str | None, typer.Option("--through", help="Last date (inclusive).")] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Settle DATE (or every session DATE..THROUGH, in order). Re-running a day is a no-op."""
    import dataclasses
    import uuid as _uuid
    from datetime import UTC, datetime
    from datetime import date as _date

    from temporalio.common import WorkflowIDReusePolicy

    from domain.settlement import SettlementDateError, check_settleable
    from sherwood.contracts import BACKOFFICE_TASK_QUEUE
    from workflows.settlement import SettlementInput, SettlementWorkflow

    last = _date.fromisoformat(through or business_date)
    _date.fromisoformat(business_date)
    try:
        check_settleable(last, datetime.now(UTC))
    except SettlementDateError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    s = load_settings(data_dir)
    result = run(lambda c: c.temporal.execute_workflow(
        SettlementWorkflow.run,
        SettlementInput(shards=s.shard_count, date=business_date, through=through,
                        retry_s=s.settlement_retry_s),
        id=f"settlement-manual-{business_date}-{through or business_date}-{_uuid.uuid4().hex[:6]}",
        task_queue=BACKOFFICE_TASK_QUEUE, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE),
        s, temporal=True)
    out = dataclasses.asdict(result)
    if as_json:
        print(json.dumps(out, default=str))
        return
    for day in out["days"]:
        console.print(f"{day['business_date']}: {day['executions']} executions, {day['accounts']} "
                      f"accounts{' (already settled)' if day['replayed'] else ''}, "
                      f"{day['report']['breaks']} break(s)")
    for r in out["reconciliation"]:
        status = "[green]ok[/]" if r["ok"] else "[red]MISMATCH: HALTED[/]"
        violated = f" (invariants violated: {', '.join(r['violated'])})" if r.get("violated") else ""
        console.print(f"shard {r['shard']}: ledger {status}{violated}")


@settlement_app.command("report")
def settlement_report(
    business_date: Annotated[str, typer.Argument(help="Business date (YYYY-MM-DD).")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The netting report of a business date across every shard, and the clearinghouse breaks."""
    from datetime import date as _date

    from db.settlement import load_report

    s = load_settings(data_dir)
    report = run(lambda c: load_report(c.engine(s.directory_db_url()), _date.fromisoformat(business_date)), s)
    if report is None:
        err.print(f"no settlement report for {business_date}")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(report))
        return
    table = Table("symbol", "bought", "sold", "net shares", "buy value", "sell value", "net cash", "fills",
                  title=f"Settlement {business_date} ({report['executions']} executions)")
    for n in report["netting"]:  # type: ignore[attr-defined]
        table.add_row(n["symbol"], n["bought"], n["sold"], n["net_shares"], n["buy_value"], n["sell_value"],
                      n["net_cash"], str(n["fills"]))
    console.print(table)
    breaks = report["breaks"]
    console.print(f"{len(breaks)} break(s) against the clearinghouse")  # type: ignore[arg-type]
    for b in breaks:  # type: ignore[attr-defined]
        console.print(f"  {b['kind']}: {b['venue']}/{b['exec_id']} ours={b['ours']} theirs={b['theirs']}")
