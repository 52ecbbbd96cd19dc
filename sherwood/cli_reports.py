"""``sherwood reports ...``: regulatory-style reports (read only).

``reports execution-quality --from D --to D [--symbol S] [--json]``: per venue and order type the
orders, shares, average and total price improvement, % improved, effective/quoted spread, time
to execution, fill, reject and cancel rates, plus the monthly routing disclosure and the fills
per day and venue (db/execution_quality.py: the back office's aggregation of the quality stored
per shard with each fill). New York business dates, both included. Changes nothing.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

import typer
from rich.table import Table

from sherwood.cli_common import Clients, DataDir, console, load_settings, run

reports_app = typer.Typer(help="Execution-quality and routing reports (read only).",
                          no_args_is_help=True)


def _date(text: str, hint: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}", param_hint=hint) from exc


@reports_app.command("execution-quality")
def execution_quality(
    start: Annotated[str, typer.Option("--from", help="First business date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Last business date, YYYY-MM-DD.")],
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Execution quality per venue and order type, and the routing disclosure per month."""
    from db.execution_quality import MAX_DAYS

    d0, d1 = _date(start, "--from"), _date(end, "--to")
    if d1 < d0 or (d1 - d0).days > MAX_DAYS:
        raise typer.BadParameter(f"--to must be on or after --from, at most {MAX_DAYS} days",
                                 param_hint="--to")
    if symbol is not None and not (0 < len(symbol) <= 16):
        raise typer.BadParameter("a symbol has 1 to 16 characters", param_hint="--symbol")
    s = load_settings(data_dir)
    rep = run(lambda c: _load(c, d0, d1, symbol), s)
    if as_json:
        print(json.dumps(rep))
        return
    _print(rep)


async def _load(c: Clients, start: date, end: date, symbol: str | None) -> dict[str, Any]:
    from db.execution_quality import load_report
    from db.gateway import GatewayStore

    store = GatewayStore.from_url(c.settings.gateway_db_url_resolved(), pool_size=1)
    try:
        return await load_report(store, c.router, [v.name for v in c.settings.venues], start, end,
                                 symbol.upper() if symbol else None)
    finally:
        await store.dispose()


def _print(rep: dict[str, Any]) -> None:
    t = Table(title=f"Execution quality {rep['from']} .. {rep['to']}")
    cols = ["venue", "order_type", "orders", "shares", "executed_shares",
            "avg_price_improvement_per_share", "total_price_improvement", "pct_orders_improved",
            "avg_effective_spread", "avg_quoted_spread", "avg_time_to_execution_s", "fill_rate",
            "reject_rate", "cancel_rate"]
    for col in cols:
        t.add_column(col.replace("_", " "))
    for r in [*rep["rows"], {"venue": "TOTAL", "order_type": "", **rep["totals"]}]:
        t.add_row(*(str(r[c]) for c in cols))
    console.print(t)
    d = Table(title="Routing disclosure (% of orders per venue)")
    for col in ("month", "order type", "orders", *rep["venues"]):
        d.add_column(col)
    for m in rep["routing_disclosure"]:
        d.add_row(m["month"], m["order_type"], str(m["orders"]), *(v["pct"] for v in m["venues"]))
    console.print(d)
    if rep["daily"]:
        day = Table(title="Fills per day and venue (by the day routed)")
        cols = ["day", "venue", "fills", "executed_shares", "notional", "total_price_improvement",
                "avg_price_improvement_per_share"]
        for col in cols:
            day.add_column(col.replace("_", " "))
        for r in rep["daily"]:
            day.add_row(*(str(r[c]) for c in cols))
        console.print(day)
