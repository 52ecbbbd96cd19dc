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
import contextlib
import json
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer

from sherwood.cli_common import Clients, DataDir, console, err, load_settings, run

if TYPE_CHECKING:
    from db.audit import AuditReport
    from domain.reconstruction import Reconstruction

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


# ============================================================================ reconstruction

AS_OF_MAX = 40  # characters of --as-of (an ISO 8601 timestamp is at most 35)


def parse_as_of(text: str, now: datetime) -> datetime:
    """``now`` or an ISO 8601 timestamp WITH its offset (``Z`` or ``+hh:mm``): an instant the
    regulator names is never read in some local zone by guess."""
    text = text.strip()
    if text.lower() == "now":
        return now
    if len(text) > AS_OF_MAX:
        raise typer.BadParameter("too long for a timestamp", param_hint="--as-of")
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 timestamp: {text!r}", param_hint="--as-of") from None
    if at.tzinfo is None:
        raise typer.BadParameter("give the offset (e.g. 2025-03-04T14:30:00Z)", param_hint="--as-of")
    if at > now:
        raise typer.BadParameter("is in the future", param_hint="--as-of")
    return at.astimezone(UTC)


@audit_app.command("account")
def audit_account(
    account_id: Annotated[str, typer.Argument(help="The account's id (uuid).")],
    as_of: Annotated[str, typer.Option("--as-of", help="An instant (ISO 8601 with offset) or 'now'.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Rebuild the account as it stood at --as-of from its shard's append-only records: balances,
    positions (qty, cost basis), open orders, the full event history."""
    try:
        acct = uuid.UUID(account_id[:64])
    except ValueError:
        raise typer.BadParameter("not an account id (uuid)", param_hint="ACCOUNT_ID") from None
    at = parse_as_of(as_of, datetime.now(UTC))
    s = load_settings(data_dir)

    async def _rebuild(c: Clients) -> Reconstruction:
        from db.errors import UnknownAccount
        from db.reconstruction import reconstruct_account

        try:
            shard = await c.router.shard_for(acct)
            return await reconstruct_account(c.engine(s.shard_url(shard)), acct, at)
        except UnknownAccount as exc:
            raise typer.BadParameter(f"no account {acct}", param_hint="ACCOUNT_ID") from exc

    rec = run(_rebuild, s)
    if as_json:
        print(json.dumps(rec.to_json(), default=str))
        return
    _print_reconstruction(rec)


def _print_reconstruction(rec: Reconstruction) -> None:
    from domain.reconstruction import utc_micro

    out = console.print
    out(f"account {rec.account_id} as of {utc_micro(rec.as_of)}", markup=False, highlight=False)
    out("cash: " + " ".join(f"{k}={v}" for k, v in rec.cash.items()), markup=False, highlight=False)
    out("balances:", markup=False)
    for name, v in sorted(rec.balances.items()):
        out(f"  {name} {v}", markup=False, highlight=False)
    out("positions:", markup=False)
    for p in rec.positions:
        out(f"  {p.symbol} qty={p.qty} cost_basis={p.cost_basis} avg_entry_price={p.avg_entry_price}",
            markup=False, highlight=False)
    out("open orders:", markup=False)
    for o in rec.open_orders:
        out(f"  {o.id} {o.side} {o.qty or o.notional} {o.symbol} {o.order_type} {o.state} "
            f"filled={o.filled_qty} hold={o.hold_amount} {o.hold_currency}", markup=False, highlight=False)
    out(f"history ({len(rec.history)} records):", markup=False)
    for h in rec.history:
        what = h.get("event") or h.get("kind") or h.get("to_status")
        ref = h.get("order_id") or h.get("id") or h.get("transfer_id")
        out(f"  {h['at']} {h['type']} {what} {ref}", markup=False, highlight=False)


@audit_app.command("export")
def audit_export(
    day: Annotated[str, typer.Option("--date", help="The New York trade date (YYYY-MM-DD).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Every order event of a New York date, on every shard, as CAT-like JSON lines
    (docs/operations.md, "Order-event export")."""
    try:
        d = date.fromisoformat(day.strip()[:10]) if len(day.strip()) == 10 else None
    except ValueError:
        d = None
    if d is None:
        raise typer.BadParameter("give the date as YYYY-MM-DD", param_hint="--date")
    from domain.calendar import NY
    from domain.cat_export import cat_line

    s = load_settings(data_dir)
    ny = ZoneInfo(NY)
    start = datetime.combine(d, time(0), ny)
    end = datetime.combine(d + timedelta(days=1), time(0), ny)

    async def _export(c: Clients) -> int:
        from db.reconstruction import order_events_between

        n = 0
        with contextlib.ExitStack() as stack:
            sink: IO[str] = (stack.enter_context(out.open("w", encoding="utf-8")) if out is not None
                             else sys.stdout)
            for shard in range(s.shard_count):
                async for r in order_events_between(c.engine(s.shard_url(shard)), start, end):
                    sink.write(json.dumps(cat_line(
                        firm_id=s.cat_firm_id, event_id=f"{shard}:{r.id}",
                        account_id=str(r.account_id), order_id=str(r.order_id),
                        client_order_id=r.client_order_id, event=r.event, symbol=r.symbol,
                        side=r.side, order_type=r.order_type, time_in_force=r.time_in_force,
                        order_qty=r.qty, notional=r.notional, limit_price=r.limit_price,
                        stop_price=r.stop_price, venue=r.venue, to_state=r.to_state,
                        data=r.data or {}, at=r.created_at)) + "\n")
                    n += 1
        return n

    n = run(_export, s)
    if out is not None:
        err.print(f"{n} order events of {d} written to {out}", markup=False, highlight=False)
