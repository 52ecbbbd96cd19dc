"""``sherwood ops ...``: operations: stuck orders, symbol halts and restrictions, shard halts.

What it does: lists the orders waiting for an operator (Temporal: OrderState="STUCK") and
resolves one with what the venue reports (the order workflow's ``resolve`` update); halts,
resumes and restricts symbols (directory DB + Redis mirror, through ``ControlsStore``); issues
operations API keys; lists and clears the trading halts a failed reconciliation put on shards.

What it deliberately does not do: decide anything itself (the workflow and the stores check
and record every change), or mount itself (sherwood/cli.py adds ``ops_app`` to the root app).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from sherwood.cli_common import Clients, DataDir, console, err, load_settings, run

if TYPE_CHECKING:
    from domain.orders import OrderSnapshot, ResolveInput

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


@ops_app.command("resolve")
def ops_resolve(
    order_id: str,
    filled_qty: Annotated[str, typer.Option(help="Total quantity the venue filled.")] = "0",
    avg_price: Annotated[str | None, typer.Option(help="Average price of the fills not yet booked.")] = None,
    canceled: Annotated[bool, typer.Option("--canceled", help="The venue canceled the rest.")] = False,
    note: Annotated[str, typer.Option(help="Why: what the venue said.")] = "",
    operator: Annotated[str, typer.Option(help="Who resolves it.")] = "operator",
    fill: Annotated[list[str] | None, typer.Option(
        help="One of the venue's executions not booked yet, EXEC_ID:QTY@PRICE (repeat it); "
             "booked under the venue's ExecID so the clearinghouse matches it. Instead of "
             "--avg-price.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Resolve a STUCK order with what the venue reports (fills and/or canceled)."""
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
    res = ResolveInput(order_id=order_id, outcome="canceled" if canceled else "filled",
                       filled_qty=filled_qty, avg_price=avg_price, operator=operator, note=note,
                       fills=fills)
    try:
        snap = run(lambda c: _resolve(c, order_id, res), s, temporal=True)
    except Exception as exc:
        err.print(f"[red]error:[/] {getattr(exc, 'cause', None) or exc}")
        raise typer.Exit(1) from None
    console.print(f"order {snap.order_id}: {snap.state}, filled {snap.filled_qty}")


async def _resolve(c: Clients, order_id: str, res: ResolveInput) -> OrderSnapshot:
    from workflows.order import OrderWorkflow

    return await c.temporal.get_workflow_handle(order_id).execute_update(OrderWorkflow.resolve, res)


def _controls(data_dir: Path | None, symbol: str, **kwargs: object) -> None:
    s = load_settings(data_dir)
    run(lambda c: _set_controls(c, symbol, kwargs), s)


async def _set_controls(c: Clients, symbol: str, kwargs: dict[str, Any]) -> None:
    from db.controls import ControlsStore

    store = ControlsStore(c.router.directory, c.redis, c.settings.redis_prefix)
    ctl = await store.set(symbol, actor="cli", **kwargs)
    console.print(f"{symbol.upper()}: halted={ctl.halted} restriction={ctl.restriction} {ctl.reason}")


@ops_app.command("halt")
def ops_halt(symbol: str, reason: Annotated[str, typer.Option()] = "halted by operations",
             data_dir: DataDir = None) -> None:
    """Halt trading in a symbol: no new order for it is accepted or routed once this returns."""
    _controls(data_dir, symbol, halted=True, reason=reason)


@ops_app.command("resume")
def ops_resume(symbol: str, data_dir: DataDir = None) -> None:
    """Lift a trading halt."""
    _controls(data_dir, symbol, halted=False, reason="resumed")


@ops_app.command("restrict")
def ops_restrict(
    symbol: str,
    mode: Annotated[str, typer.Option(help="close_only, blocked or none")] = "close_only",
    reason: Annotated[str, typer.Option()] = "",
    data_dir: DataDir = None,
) -> None:
    """Restrict a symbol: close_only (sells only), blocked, or none to lift it."""
    if mode not in ("close_only", "blocked", "none"):
        err.print("[red]error:[/] --mode must be close_only, blocked or none")
        raise typer.Exit(2)
    _controls(data_dir, symbol, restriction=None if mode == "none" else mode, reason=reason)


@ops_app.command("create-key")
def ops_create_key(data_dir: DataDir = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Issue an operations API key (for /ops endpoints)."""
    from db.accounts import create_api_key

    s = load_settings(data_dir)
    creds = run(lambda c: create_api_key(c.router, None, role="ops"), s)
    out = {"key_id": creds.key_id, "secret_key": creds.secret_key}
    print(json.dumps(out) if as_json else f"key_id: {out['key_id']}\nsecret_key: {out['secret_key']}")


@ops_app.command("clear-halt")
def ops_clear_halt(
    shard: Annotated[int, typer.Option("--shard", help="The halted shard.")],
    note: Annotated[str, typer.Option(help="Why it is safe to trade again.")] = "",
    operator: Annotated[str, typer.Option(help="Who clears it.")] = "operator",
    data_dir: DataDir = None,
) -> None:
    """Clear the trading halt a failed ledger reconciliation put on a shard."""
    from db.shard_status import clear_halts

    s = load_settings(data_dir)
    cleared = run(lambda c: clear_halts(c.engine(s.shard_url(shard)), operator=operator, note=note), s)
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
