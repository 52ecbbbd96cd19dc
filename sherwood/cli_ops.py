"""``sherwood ops ...``: operations: stuck orders, symbol halts and restrictions, shard halts.

What it does: lists the orders waiting for an operator (Temporal: OrderState="STUCK") and
resolves one with what the venue reports (the order workflow's ``resolve`` update), or, above
the four-eyes notional, records it for a second operator to ``approve``; halts, resumes and
restricts symbols; lists and clears the trading halts a failed reconciliation put on shards.
Every change names its ``--operator`` (one of ``SHERWOOD_OPS_OPERATORS``) and a ``--reason``,
and goes through api/services/ops.py, which records it in ``ops_audit``. Ops keys are
``sherwood keys ...`` (sherwood/cli_keys.py).

What it deliberately does not do: decide anything itself (the workflow and the stores check
and record every change), or mount itself (sherwood/cli.py adds ``ops_app`` to the root app).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from sherwood.cli_common import Clients, DataDir, console, err, load_settings, run
from sherwood.settings import Settings

if TYPE_CHECKING:
    from api.services.ops import OpsService, ResolveOutcome
    from db.ops import Actor
    from domain.risk import SymbolControl

T = TypeVar("T")

ops_app = typer.Typer(help="Operations: stuck orders, halts, restrictions.", no_args_is_help=True)


@ops_app.command("stuck")
def ops_stuck(data_dir: DataDir = None,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Orders waiting for an operator (Temporal: OrderState="STUCK")."""
    s = load_settings(data_dir)
    rows = run(_stuck_orders, s, temporal=True)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("order id", "symbol", "account", "shard", "started")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("order_id", "symbol", "account_id", "shard", "since")))
    console.print(table if rows else "no stuck orders")


async def _stuck_orders(c: Clients) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    async for wf in c.temporal.list_workflows('OrderState="STUCK" AND ExecutionStatus="Running"'):
        sa = wf.search_attributes
        out.append({"order_id": wf.id, "symbol": (sa.get("Symbol") or [None])[0],
                    "account_id": (sa.get("AccountId") or [None])[0],
                    "shard": (sa.get("ShardId") or [None])[0],
                    "since": wf.start_time.isoformat() if wf.start_time else None})
    return out


Operator = Annotated[str, typer.Option(
    "--operator", help="Who acts: one of the configured operators (SHERWOOD_OPS_OPERATORS).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (required; recorded in ops_audit).")]


def operator_actor(settings: Settings, operator: str) -> Actor:
    """The audited identity of a CLI user: ``--operator`` must name a configured operator."""
    from db.ops import Actor
    from domain.ops import OpsRefusal, check_operator

    try:
        return Actor(check_operator(operator, settings.ops_operators))
    except OpsRefusal as exc:
        err.print(f"[red]error:[/] {exc} ({exc.code})")
        raise typer.Exit(2) from None


def ops_run(settings: Settings, fn: Callable[[OpsService], Awaitable[T]], *,
            temporal: bool = False) -> T:
    """Run ``fn`` with an :class:`OpsService`; a refusal or failure is printed, exit 1 (2 for a
    refused input)."""
    from api.services.ops import OpsService
    from domain.ops import OpsRefusal

    async def go(c: Clients) -> T:
        return await fn(OpsService(c.settings, c.router, c.redis,
                                   c.temporal if temporal else None))

    try:
        return run(go, settings, temporal=temporal)
    except OpsRefusal as exc:
        err.print(f"[red]error:[/] {exc} ({exc.code})")
        raise typer.Exit(2 if exc.status == 422 else 1) from None
    except Exception as exc:
        err.print(f"[red]error:[/] {getattr(exc, 'cause', None) or exc}")
        raise typer.Exit(1) from None


def _print_outcome(out: ResolveOutcome) -> None:
    if out.status == "pending":
        console.print(f"order {out.order_id}: resolution of notional {out.notional} is pending "
                      f"a second operator's approval: request {out.request_id}\n"
                      f"  sherwood ops approve {out.request_id} --operator OTHER --reason ...")
        return
    snap = out.order or {}
    console.print(f"order {out.order_id}: {snap.get('state')}, filled {snap.get('filled_qty')}")


@ops_app.command("resolve")
def ops_resolve(
    order_id: str,
    operator: Operator,
    reason: Reason,
    filled_qty: Annotated[str, typer.Option(help="Total quantity the venue filled.")] = "0",
    avg_price: Annotated[str | None, typer.Option(help="Average price of the fills not yet booked.")] = None,
    canceled: Annotated[bool, typer.Option("--canceled", help="The venue canceled the rest.")] = False,
    note: Annotated[str, typer.Option(help="What the venue said (default: the reason).")] = "",
    fill: Annotated[list[str] | None, typer.Option(
        help="One of the venue's executions not booked yet, EXEC_ID:QTY@PRICE (repeat it); "
             "booked under the venue's ExecID so the clearinghouse matches it. Instead of "
             "--avg-price.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """Resolve a STUCK order with what the venue reports (fills and/or canceled). Above
    SHERWOOD_OPS_FOUR_EYES_NOTIONAL it is recorded pending until another operator approves."""
    from domain.orders import ResolveFill, ResolveInput

    fills = None
    if fill:
        try:
            fills = [ResolveFill(exec_id=f.rsplit(":", 1)[0], qty=f.rsplit(":", 1)[1].split("@")[0],
                                 price=f.rsplit("@", 1)[1]) for f in fill]
        except IndexError:
            err.print("[red]error:[/] --fill takes EXEC_ID:QTY@PRICE")
            raise typer.Exit(2) from None
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    res = ResolveInput(order_id=order_id, outcome="canceled" if canceled else "filled",
                       filled_qty=filled_qty, avg_price=avg_price, note=note, fills=fills)
    out = ops_run(s, lambda ops: ops.resolve(actor, res, reason), temporal=True)
    if as_json:
        print(json.dumps(out.__dict__, default=str))
    else:
        _print_outcome(out)


@ops_app.command("approve")
def ops_approve(request_id: str, operator: Operator, reason: Reason,
                as_json: Annotated[bool, typer.Option("--json")] = False,
                data_dir: DataDir = None) -> None:
    """Approve another operator's pending resolution: it is sent to the order workflow."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    out = ops_run(s, lambda ops: ops.approve(actor, request_id, reason), temporal=True)
    if as_json:
        print(json.dumps(out.__dict__, default=str))
    else:
        _print_outcome(out)


@ops_app.command("pending")
def ops_pending(data_dir: DataDir = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Resolutions waiting for a second operator's approval."""
    from db.ops import resolutions

    s = load_settings(data_dir)
    rows = run(lambda c: resolutions(c.router.directory), s)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("request", "order id", "notional", "requested by", "at")
    for r in rows:
        table.add_row(str(r["id"]), r["order_id"], str(r["notional"]), r["requested_by"],
                      str(r["requested_at"]))
    console.print(table if rows else "no pending resolutions")


@ops_app.command("halt")
def ops_halt(symbol: str, operator: Operator, reason: Reason, data_dir: DataDir = None) -> None:
    """Halt trading in a symbol: no new order for it is accepted or routed once this returns."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    _print_control(symbol, ops_run(s, lambda ops: ops.halt(actor, symbol, reason)))


@ops_app.command("resume")
def ops_resume(symbol: str, operator: Operator, reason: Reason, data_dir: DataDir = None) -> None:
    """Lift a trading halt."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    _print_control(symbol, ops_run(s, lambda ops: ops.resume(actor, symbol, reason)))


@ops_app.command("restrict")
def ops_restrict(
    symbol: str,
    operator: Operator,
    reason: Reason,
    mode: Annotated[str, typer.Option(help="close_only, blocked or none")] = "close_only",
    data_dir: DataDir = None,
) -> None:
    """Restrict a symbol: close_only (sells only), blocked, or none to lift it."""
    if mode not in ("close_only", "blocked", "none"):
        err.print("[red]error:[/] --mode must be close_only, blocked or none")
        raise typer.Exit(2)
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    restriction = None if mode == "none" else mode
    _print_control(symbol, ops_run(s, lambda ops: ops.restrict(actor, symbol, restriction, reason)))


def _print_control(symbol: str, ctl: SymbolControl) -> None:
    console.print(f"{symbol.upper()}: halted={ctl.halted} restriction={ctl.restriction} {ctl.reason}")


@ops_app.command("clear-halt")
def ops_clear_halt(
    shard: Annotated[int, typer.Option("--shard", help="The halted shard.")],
    operator: Operator,
    reason: Reason,
    data_dir: DataDir = None,
) -> None:
    """Clear the trading halt a failed ledger reconciliation put on a shard."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    cleared = ops_run(s, lambda ops: ops.clear_shard_halt(actor, shard, reason))
    console.print(f"shard {shard}: {cleared} halt(s) cleared")


@ops_app.command("halts")
def ops_halts(data_dir: DataDir = None) -> None:
    """Open trading halts on every shard."""
    s = load_settings(data_dir)
    rows = run(_open_halts, s)
    for n, h in rows:
        console.print(f"shard {n}: halt #{h['id']} since {h['created_at']}: {h['reason']}")
    if not rows:
        console.print("no open halts")


async def _open_halts(c: Clients) -> list[tuple[int, dict[str, object]]]:
    from db.shard_status import halts

    out = []
    for n in range(c.settings.shard_count):
        out += [(n, h) for h in await halts(c.engine(c.settings.shard_url(n)))]
    return out


@ops_app.command("shortfalls")
def ops_shortfalls(data_dir: DataDir = None,
                   all_: Annotated[bool, typer.Option("--all", help="Covered ones too.")] = False,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Money customers owe (a returned ACH deposit, a buy filled above its hold): open ones,
    which restrict their account to closing orders until settled cash covers them."""
    s = load_settings(data_dir)
    rows = run(lambda c: _shortfalls(c, all_), s)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("shard", "account", "cause", "owed", "order / transfer", "since", "covered")
    for r in rows:
        table.add_row(str(r["shard"]), str(r["account_id"]), r["cause"], str(r["amount"]),
                      str(r["order_id"] or r["transfer_id"]), str(r["created_at"]),
                      str(r["covered_at"] or ""))
    console.print(table if rows else "no shortfalls")


async def _shortfalls(c: Clients, all_: bool) -> list[dict[str, Any]]:
    from db.funding import FundingStore

    out = []
    for n in range(c.settings.shard_count):
        out += [{"shard": n, **r} for r in await FundingStore(c.engine(c.settings.shard_url(n))).shortfalls()
                if all_ or r["covered_at"] is None]
    return out
