"""``sherwood accounts ...``: customer accounts.

What it does: ``accounts create`` opens an account on the least-loaded shard, funds it (a demo
ACH credit settled at once) and prints its API credentials.

What it deliberately does not do: anything the API does for an account once it exists (orders,
transfers, positions), or mount itself (sherwood/cli.py adds ``accounts_app`` to the root app).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated

import typer

from sherwood.cli_common import Clients, DataDir, console, err, load_settings, run

accounts_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)


@accounts_app.command("create")
def accounts_create(
    deposit: Annotated[str, typer.Option(help="Initial settled deposit in USD.")] = "0",
    account_type: Annotated[str, typer.Option("--type", help="cash or instant.")] = "cash",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Open an account on the least-loaded shard, fund it, print its API credentials."""
    from domain.money import USD, check_scale, parse_decimal

    if account_type not in ("cash", "instant"):
        err.print("[red]error:[/] --type must be cash or instant")
        raise typer.Exit(2)
    amount = check_scale(parse_decimal(deposit, field="deposit"), USD, field="deposit")
    if amount < 0:
        err.print("[red]error:[/] --deposit must not be negative")
        raise typer.Exit(2)
    s = load_settings(data_dir)
    result = run(lambda c: _open_account(c, account_type, amount), s)
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k:>15}: {v}")


async def _open_account(c: Clients, account_type: str, amount: Decimal) -> dict[str, object]:
    from db.accounts import open_account

    router = c.router
    acct = await open_account(router, account_type=account_type)
    if amount > 0:
        ledger = router.ledger(acct.shard)
        # A demo funding: the ACH credit and its settlement at once.
        await ledger.deposit(f"open:{acct.account_id}:deposit", acct.account_id, amount)
        await ledger.settle_deposit(f"open:{acct.account_id}:settle", acct.account_id, amount)
    return {
        "account_id": str(acct.account_id),
        "account_number": acct.account_number,
        "shard": acct.shard,
        "type": acct.account_type,
        "cash": str(amount),
        "key_id": acct.credentials.key_id,
        "secret_key": acct.credentials.secret_key,
    }
