"""The ``sherwood`` command line. Each command builds Settings (env ``SHERWOOD_*``, then a
running dev stack's ``stack.json``) and nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sherwood.lifecycle import freeze_startup_objects, run_loop
from sherwood.settings import Settings

app = typer.Typer(help="Sherwood brokerage backend.", no_args_is_help=True)


def main() -> None:
    """The ``sherwood`` command: runs :data:`app`, then leaves without the interpreter's
    finalization.

    The Temporal SDK's Rust threads can outlive a command's event loop and abort the
    interpreter while it finalizes ("PyGILState_Release ... finalizing", SIGABRT; an open SDK
    issue, temporalio/sdk-python#300), turning a command that has done its work and printed its
    answer into a crash. Logs and output are flushed first; the exit status is the command's.
    """
    code = 0
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


accounts_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
serve_app = typer.Typer(help="Run one Sherwood process in the foreground.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(serve_app, name="serve")
ops_app = typer.Typer(help="Operations: stuck orders, halts, restrictions.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")


def _mount_simulators() -> None:
    from simulators.cli import sim_app

    app.add_typer(sim_app, name="sim", help="Simulated venues speaking the real protocols.")


_mount_simulators()

console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Stack data directory.")]


def load_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values).resolved()  # type: ignore[arg-type]


@app.command()
def dev(
    data_dir: DataDir = None,
    shards: Annotated[int | None, typer.Option(help="Number of shard databases.")] = None,
) -> None:
    """Start the whole local stack (embedded Postgres/Redis/Temporal unless URLs are configured)."""
    from sherwood.dev import DevStack
    from sherwood.embedded import EmbeddedError

    values: dict[str, object] = {}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if shards is not None:
        values["shards"] = shards
    settings = Settings(**values)  # type: ignore[arg-type]  # never reuse a stale stack.json
    logging.basicConfig(level=logging.WARNING)
    stack = DevStack(settings, progress=lambda m: console.print(f"[cyan]•[/] {m}"))

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        info = stack.start()
        table = Table(title="Sherwood is running", show_header=False)
        table.add_row("API", f"{info['api_url']}  (docs {info['api_url']}/docs, "
                             f"health {info['api_url']}/healthz)")
        table.add_row("Temporal", str(info["temporal_address"]))
        table.add_row("Temporal UI", str(info["temporal_ui_url"] or "(configured server)"))
        table.add_row("Directory DB", str(info["directory_url"]))
        shard_list: list[str] = list(info["shard_urls"])  # type: ignore[call-overload]
        for n, url in enumerate(shard_list):
            table.add_row(f"Shard {n} DB", url)
        table.add_row("Redis", str(info["redis_url"]))
        table.add_row("Venues (FIX)", ", ".join(info.get("venues", [])))  # type: ignore[arg-type]
        table.add_row("Data dir", str(info["data_dir"]))
        console.print(table)
        console.print("Try: [bold]sherwood accounts create --deposit 10000 --json[/], then POST "
                      f"{info['api_url']}/v2/orders with its key.   Stop: Ctrl-C")
        stack.wait()
    except KeyboardInterrupt:
        console.print("\n[yellow]stopping ...[/]")
    except EmbeddedError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        stack.stop()
        console.print("[green]stopped[/]")


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Create and migrate every database; register the order search attributes in Temporal."""
    from db.migrate import migrate_all
    from sherwood.wiring import shard_urls

    s = load_settings(data_dir)
    migrate_all(s.directory_db_url(), shard_urls(s), progress=lambda m: console.print(m))
    from db.migrate import migrate_marketdata

    console.print("migrating market-data database")
    migrate_marketdata(s.marketdata_db_url_resolved())
    if s.temporal_address:
        from sherwood.temporal import connect, ensure_search_attributes

        async def _sa() -> None:
            await ensure_search_attributes(await connect(s), s.temporal_namespace)

        asyncio.run(_sa())
        console.print("search attributes registered")
    console.print("[green]migrated[/]")


@accounts_app.command("create")
def accounts_create(
    deposit: Annotated[str, typer.Option(help="Initial settled deposit in USD.")] = "0",
    account_type: Annotated[str, typer.Option("--type", help="cash or instant.")] = "cash",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Open an account on the least-loaded shard, fund it, print its API credentials."""
    from db.accounts import open_account
    from domain.money import USD, check_scale, parse_decimal
    from sherwood.wiring import build_router

    if account_type not in ("cash", "instant"):
        err.print("[red]error:[/] --type must be cash or instant")
        raise typer.Exit(2)
    amount = check_scale(parse_decimal(deposit, field="deposit"), USD, field="deposit")
    if amount < 0:
        err.print("[red]error:[/] --deposit must not be negative")
        raise typer.Exit(2)
    s = load_settings(data_dir)

    async def _go() -> dict[str, object]:
        router = build_router(s)
        try:
            acct = await open_account(router, account_type=account_type)
            if amount > 0:
                ledger = router.ledger(acct.shard)
                # A demo funding: the ACH credit and its settlement at once.
                await ledger.deposit(f"open:{acct.account_id}:deposit", acct.account_id, amount)
                await ledger.settle_deposit(f"open:{acct.account_id}:settle", acct.account_id,
                                            amount)
            return {
                "account_id": str(acct.account_id),
                "account_number": acct.account_number,
                "shard": acct.shard,
                "type": acct.account_type,
                "cash": str(amount),
                "key_id": acct.credentials.key_id,
                "secret_key": acct.credentials.secret_key,
            }
        finally:
            await router.dispose()

    result = asyncio.run(_go())
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k:>15}: {v}")


@app.command()
def reconcile(data_dir: DataDir = None) -> None:
    """Recompute every cached balance from entries on every shard; exit 1 on any difference."""
    from sherwood.wiring import build_router

    s = load_settings(data_dir)

    async def _go() -> bool:
        router = build_router(s)
        ok = True
        try:
            for n in range(router.shard_count):
                report = await router.ledger(n).reconcile()
                status = "[green]ok[/]" if report.ok else "[red]MISMATCH[/]"
                console.print(f"shard {n}: {report.accounts_checked} ledger accounts {status}")
                for m in report.mismatches:
                    console.print(f"  {m.owner or 'house'} {m.name}: entries {m.from_entries} "
                                  f"cached {m.cached}")
                for u in report.unbalanced:
                    console.print(f"  transaction {u.txn_id} {u.currency} sums to {u.total}")
                ok = ok and report.ok
        finally:
            await router.dispose()
        return ok

    if not asyncio.run(_go()):
        raise typer.Exit(1)


@serve_app.command("api")
def serve_api(data_dir: DataDir = None) -> None:
    """The REST API (uvicorn) on SHERWOOD_BIND_HOST:SHERWOOD_API_PORT."""
    import uvicorn

    from api.app import create_app

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO)
    app = create_app(s)
    freeze_startup_objects()
    uvicorn.run(app, host=s.bind_host, port=s.api_port, log_level="info")




@serve_app.command("shard-worker")
def serve_shard_worker(
    shard: Annotated[list[int] | None, typer.Option("--shard", help="Shard(s); default all.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Temporal workers for shard task queues (order workflows + their shard's activities)."""
    from workers.shard import run

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_loop(run(s, shard if shard else list(range(s.shard_count))))


@serve_app.command("gateway")
def serve_gateway(data_dir: DataDir = None) -> None:
    """The execution gateway: FIX sessions to every configured venue + its Temporal activities."""
    from workers.gateway import run_gateway

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_loop(run_gateway(s))


@ops_app.command("stuck")
def ops_stuck(data_dir: DataDir = None,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Orders waiting for an operator (Temporal: OrderState="STUCK")."""
    from sherwood.temporal import connect

    s = load_settings(data_dir)

    async def _go() -> list[dict[str, object]]:
        client = await connect(s)
        out: list[dict[str, object]] = []
        async for wf in client.list_workflows('OrderState="STUCK" AND ExecutionStatus="Running"'):
            sa = wf.search_attributes
            out.append({"order_id": wf.id, "symbol": (sa.get("Symbol") or [None])[0],
                        "account_id": (sa.get("AccountId") or [None])[0],
                        "shard": (sa.get("ShardId") or [None])[0],
                        "since": wf.start_time.isoformat() if wf.start_time else None})
        return out

    rows = asyncio.run(_go())
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("order id", "symbol", "account", "shard", "started")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("order_id", "symbol", "account_id", "shard", "since")))
    console.print(table if rows else "no stuck orders")


@ops_app.command("resolve")
def ops_resolve(
    order_id: str,
    filled_qty: Annotated[str, typer.Option(help="Total quantity the venue filled.")] = "0",
    avg_price: Annotated[str | None, typer.Option(help="Average price of the fills not yet booked.")] = None,
    canceled: Annotated[bool, typer.Option("--canceled", help="The venue canceled the rest.")] = False,
    note: Annotated[str, typer.Option(help="Why: what the venue said.")] = "",
    operator: Annotated[str, typer.Option(help="Who resolves it.")] = "operator",
    data_dir: DataDir = None,
) -> None:
    """Resolve a STUCK order with what the venue reports (fills and/or canceled)."""
    from domain.orders import OrderSnapshot, ResolveInput
    from sherwood.temporal import connect

    s = load_settings(data_dir)
    res = ResolveInput(order_id=order_id, outcome="canceled" if canceled else "filled",
                       filled_qty=filled_qty, avg_price=avg_price, operator=operator, note=note)

    async def _go() -> OrderSnapshot:
        client = await connect(s)
        result: OrderSnapshot = await client.get_workflow_handle(order_id).execute_update(
            "resolve", res, result_type=OrderSnapshot)
        return result

    try:
        snap = asyncio.run(_go())
    except Exception as exc:
        err.print(f"[red]error:[/] {getattr(exc, 'cause', None) or exc}")
        raise typer.Exit(1) from None
    console.print(f"order {snap.order_id}: {snap.state}, filled {snap.filled_qty}")


def _controls(data_dir: Path | None, symbol: str, **kwargs: object) -> None:
    from db.controls import ControlsStore
    from sherwood.wiring import build_router

    s = load_settings(data_dir)

    async def _go() -> None:
        from redis.asyncio import Redis

        redis = Redis.from_url(s.redis_url) if s.redis_url else None
        router = build_router(s)
        try:
            store = ControlsStore(router.directory, redis, s.redis_prefix)
            c = await store.set(symbol, actor="cli", **kwargs)  # type: ignore[arg-type]
            console.print(f"{symbol.upper()}: halted={c.halted} restriction={c.restriction} {c.reason}")
        finally:
            await router.dispose()
            if redis is not None:
                await redis.aclose()

    asyncio.run(_go())


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
    from sherwood.wiring import build_router

    s = load_settings(data_dir)

    async def _go() -> dict[str, str]:
        router = build_router(s)
        try:
            creds = await create_api_key(router, None, role="ops")
            return {"key_id": creds.key_id, "secret_key": creds.secret_key}
        finally:
            await router.dispose()

    out = asyncio.run(_go())
    print(json.dumps(out) if as_json else f"key_id: {out['key_id']}\nsecret_key: {out['secret_key']}")


# --- back office -------------------------------------------------------------------------------

settlement_app = typer.Typer(help="T+1 settlement: run days, read netting reports.", no_args_is_help=True)
schedules_app = typer.Typer(help="Temporal Schedules (settlement).", no_args_is_help=True)
app.add_typer(settlement_app, name="settlement")
app.add_typer(schedules_app, name="schedules")


@serve_app.command("backoffice")
def serve_backoffice(data_dir: DataDir = None) -> None:
    """Back-office workers: settlement/reconciliation (queue backoffice) and funding + shard-local
    settlement activities (queues backoffice-shard-<n>)."""
    from sherwood.wiring import run_backoffice

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_loop(run_backoffice(s))


@schedules_app.command("apply")
def schedules_apply(data_dir: DataDir = None) -> None:
    """Create or update the settlement schedule (idempotent)."""
    from sherwood.temporal import connect
    from workers.backoffice import apply_schedules

    s = load_settings(data_dir)

    async def _go() -> str:
        return await apply_schedules(await connect(s), s)

    outcome = asyncio.run(_go())
    console.print(f"schedule {s.settlement_schedule_id}: {outcome} (weekdays "
                  f"{s.settlement_hour_ny:02d}:{s.settlement_minute_ny:02d} America/New_York)")


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
    from datetime import date as _date

    from temporalio.common import WorkflowIDReusePolicy

    from sherwood.contracts import BACKOFFICE_TASK_QUEUE
    from sherwood.temporal import connect
    from workflows.settlement import SettlementInput, SettlementWorkflow

    _date.fromisoformat(business_date)
    if through:
        _date.fromisoformat(through)
    s = load_settings(data_dir)

    async def _go() -> dict[str, object]:
        client = await connect(s)
        result = await client.execute_workflow(
            SettlementWorkflow.run,
            SettlementInput(shards=s.shard_count, date=business_date, through=through),
            id=f"settlement-manual-{business_date}-{through or business_date}-{_uuid.uuid4().hex[:6]}",
            task_queue=BACKOFFICE_TASK_QUEUE, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        return dataclasses.asdict(result)

    out = asyncio.run(_go())
    if as_json:
        print(json.dumps(out, default=str))
        return
    for day in out["days"]:  # type: ignore[attr-defined]
        console.print(f"{day['business_date']}: {day['executions']} executions, {day['accounts']} "
                      f"accounts{' (already settled)' if day['replayed'] else ''}, "
                      f"{day['report']['breaks']} break(s)")
    for r in out["reconciliation"]:  # type: ignore[attr-defined]
        status = "[green]ok[/]" if r["ok"] else "[red]MISMATCH: HALTED[/]"
        console.print(f"shard {r['shard']}: ledger {status}")


@settlement_app.command("report")
def settlement_report(
    business_date: Annotated[str, typer.Argument(help="Business date (YYYY-MM-DD).")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The netting report of a business date across every shard, and the clearinghouse breaks."""
    from datetime import date as _date

    from db.engines import make_engine
    from db.settlement import load_report

    s = load_settings(data_dir)

    async def _go() -> dict[str, object] | None:
        engine = make_engine(s.directory_db_url(), pool_size=1, max_overflow=0)
        try:
            return await load_report(engine, _date.fromisoformat(business_date))
        finally:
            await engine.dispose()

    report = asyncio.run(_go())
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


@ops_app.command("clear-halt")
def ops_clear_halt(
    shard: Annotated[int, typer.Option("--shard", help="The halted shard.")],
    note: Annotated[str, typer.Option(help="Why it is safe to trade again.")] = "",
    operator: Annotated[str, typer.Option(help="Who clears it.")] = "operator",
    data_dir: DataDir = None,
) -> None:
    """Clear the trading halt a failed ledger reconciliation put on a shard."""
    from db.engines import make_engine
    from db.shard_status import clear_halts

    s = load_settings(data_dir)

    async def _go() -> int:
        engine = make_engine(s.shard_url(shard), pool_size=1, max_overflow=0)
        try:
            return await clear_halts(engine, operator=operator, note=note)
        finally:
            await engine.dispose()

    console.print(f"shard {shard}: {asyncio.run(_go())} halt(s) cleared")


@ops_app.command("halts")
def ops_halts(data_dir: DataDir = None) -> None:
    """Open trading halts on every shard."""
    from db.engines import make_engine
    from db.shard_status import halts

    s = load_settings(data_dir)

    async def _go() -> list[tuple[int, dict[str, object]]]:
        out = []
        for n in range(s.shard_count):
            engine = make_engine(s.shard_url(n), pool_size=1, max_overflow=0)
            try:
                out += [(n, h) for h in await halts(engine)]
            finally:
                await engine.dispose()
        return out

    rows = asyncio.run(_go())
    for n, h in rows:
        console.print(f"shard {n}: halt #{h['id']} since {h['created_at']}: {h['reason']}")
    if not rows:
        console.print("no open halts")


@serve_app.command("ingest")
def serve_ingest(data_dir: DataDir = None) -> None:
    """Market-data ingest: feed lines on SHERWOOD_MARKETDATA_FEED_PORT -> Redis + bars DB."""
    from marketdata.ingest import run_ingest

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run_ingest(s))


@serve_app.command("fanout")
def serve_fanout(data_dir: DataDir = None) -> None:
    """Market-data WebSocket fan-out on ws://SHERWOOD_BIND_HOST:SHERWOOD_FANOUT_PORT/v2/iex."""
    from marketdata.fanout import run_fanout

    s = load_settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run_fanout(s))
