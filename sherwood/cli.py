"""The ``sherwood`` command line. Each command builds Settings (env ``SHERWOOD_*``, then a
running dev stack's ``stack.json``) and nothing else does.

Layout: this module is the root app: :func:`main` (the console script and ``python -m
sherwood``), the root commands ``dev``, ``migrate`` and ``reconcile``, and the mounting of the
sub-command groups, one module each: ``accounts`` (sherwood/cli_accounts.py), ``serve``
(sherwood/cli_serve.py), ``ops`` (sherwood/cli_ops.py), ``audit`` (sherwood/cli_audit.py),
``sim`` (simulators/cli.py), ``settlement`` and ``schedules`` (sherwood/cli_backoffice.py). What
they share (settings loading, the consoles, :func:`sherwood.cli_common.run` which runs a
command's async part with its clients and closes them) is sherwood/cli_common.py. Commands
only parse options, call into the packages that do the work, and print.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated

import typer
from rich.table import Table

from sherwood.cli_accounts import accounts_app
from sherwood.cli_audit import audit_app
from sherwood.cli_backoffice import schedules_app, settlement_app
from sherwood.cli_common import Clients, DataDir, console, err, load_settings, run
from sherwood.cli_keys import keys_app
from sherwood.cli_ops import ops_app
from sherwood.cli_reports import reports_app
from sherwood.cli_serve import serve_app
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
    _exit_with_supervisor()
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


def _exit_with_supervisor() -> None:
    """A child of ``sherwood dev`` (``SHERWOOD_DEV_SUPERVISOR_PID`` set) ends when it does."""
    from pydantic import ValidationError

    from sherwood.lifecycle import exit_with_parent

    if not os.environ.get("SHERWOOD_DEV_SUPERVISOR_PID"):
        return  # not a child of sherwood dev: no settings to read at start-up
    try:
        s = Settings()
    except ValidationError:
        return  # the command reports its settings itself
    if s.dev_supervisor_pid is not None:
        exit_with_parent(s.dev_supervisor_pid, interval_s=s.dev_parent_check_s,
                         grace_s=s.dev_stop_grace_s)


app.add_typer(accounts_app, name="accounts")
app.add_typer(serve_app, name="serve")
app.add_typer(ops_app, name="ops")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(reports_app, name="reports")


def _mount_simulators() -> None:
    from simulators.cli import sim_app

    app.add_typer(sim_app, name="sim", help="Simulated venues speaking the real protocols.")


_mount_simulators()
app.add_typer(settlement_app, name="settlement")
app.add_typer(schedules_app, name="schedules")


@app.command()
def dev(
    data_dir: DataDir = None,
    shards: Annotated[int | None, typer.Option(help="Number of shard databases.")] = None,
    status: Annotated[bool, typer.Option(
        "--status", help="Show the running stack's processes (pid, state, restarts) and exit.")] = False,
) -> None:
    """Start the whole local stack (embedded Postgres/Redis/Temporal unless URLs are configured)
    and supervise it: a process that dies is restarted; Ctrl-C stops everything."""
    from sherwood.dev import DevStack, running_stack
    from sherwood.embedded import EmbeddedError

    values: dict[str, object] = {}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if shards is not None:
        values["shards"] = shards
    settings = Settings(**values)  # type: ignore[arg-type]  # never reuse a stale stack.json
    if status:
        info = running_stack(settings.data_dir)
        if info is None:
            err.print(f"no `sherwood dev` stack runs on {settings.data_dir}")
            raise typer.Exit(1)
        table = Table(title=f"sherwood dev (pid {info['pid']})")
        for col in ("process", "pid", "state", "restarts", "last exit", "metrics"):
            table.add_column(col)
        metrics = info.get("metrics", {})
        for c in info.get("children", []):
            table.add_row(str(c["name"]), str(c["pid"] or "-"), str(c["state"]), str(c["restarts"]),
                          "-" if c["last_exit"] is None else str(c["last_exit"]),
                          metrics.get(c["name"], "-"))
        console.print(table)
        return
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
        console.print("A process that dies is restarted (logged here; `sherwood dev --status` "
                      "lists pids and restarts).")
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
    """Create and migrate every database (as SHERWOOD_DB_OWNER_USER, granting the URLs' users
    their service privileges); register the order search attributes in Temporal."""
    from sherwood.wiring import migrate_databases

    s = load_settings(data_dir)
    if s.db_owner() is None:
        err.print("[yellow]warning:[/] SHERWOOD_DB_OWNER_USER is not set: migrating as the URLs' user, "
                  "no service roles (every process could rewrite the books)")
    elif s.api_login() is None:
        err.print("[yellow]warning:[/] SHERWOOD_API_DB_USER is not set: no API role (the API "
                  "connects as the service role and could write the books)")
    migrate_databases(s, progress=lambda m: console.print(m))
    if s.temporal_address:
        from sherwood.temporal import ensure_search_attributes

        run(lambda c: ensure_search_attributes(c.temporal, s.temporal_namespace), s, temporal=True)
        console.print("search attributes registered")
    console.print("[green]migrated[/]")


@app.command("redis-acl")
def redis_acl(
    commands: Annotated[bool, typer.Option("--commands", help="ACL SETUSER commands (for "
                                           "redis-cli) instead of ACL file lines.")] = False,
) -> None:
    """Print the Redis users of every process kind (sherwood/redis_acl.py) for SHERWOOD_REDIS_PREFIX:
    ACL file lines, or ACL SETUSER commands. Passwords from SHERWOOD_REDIS_<KIND>_PASSWORD
    (QUOTES, INGEST, SERVICE), else made now; each process's URL goes to stderr."""
    import secrets

    from sherwood.redis_acl import USERS, acl_lines, user_name

    prefix = Settings().redis_prefix
    passwords = {kind: os.environ.get(f"SHERWOOD_REDIS_{kind.upper()}_PASSWORD") or secrets.token_urlsafe(18)
                 for kind in USERS}
    for line in acl_lines(prefix, passwords):
        print(f"ACL SETUSER {line.removeprefix('user ')}" if commands else line)
    for kind, who in (("service", "api, shard workers, gateway, back office"), ("ingest", "ingest"),
                      ("quotes", "fan-out, simulated venues")):
        err.print(f"# {who}: SHERWOOD_REDIS_URL=redis://{user_name(prefix, kind)}:"
                  f"{passwords[kind]}@<host>:<port>/0", highlight=False, soft_wrap=True)


@app.command()
def reconcile(data_dir: DataDir = None) -> None:
    """Recompute every cached balance from entries on every shard; exit 1 on any difference."""
    s = load_settings(data_dir)
    if not run(_reconcile, s):
        raise typer.Exit(1)


async def _reconcile(c: Clients) -> bool:
    router = c.router
    ok = True
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
    return ok
