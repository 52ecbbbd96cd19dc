"""``sherwood keys ...``: operations API keys (the ``ops_keys`` of the directory database).

What it does: issues a key to a holder with scopes (``read``, ``halt``, ``restrict``,
``resolve``, ``settlement``, ``keys``) and an expiry (``SHERWOOD_OPS_KEY_DAYS`` unless
``--days``), rotates one (a new key for the same holder and scopes, the old one revoked in the
same transaction), revokes one (refused on its next request: the API keeps no cache of ops
keys) and lists them. Every change names its ``--operator`` (one of
``SHERWOOD_OPS_OPERATORS``) and a ``--reason``, recorded in ``ops_audit``.

What it deliberately does not do: customer keys (``sherwood accounts create``), or show a secret
after the command that made it (only its hash is stored).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sherwood.cli_common import DataDir, console, load_settings, run
from sherwood.cli_ops import Operator, Reason, operator_actor, ops_run

if TYPE_CHECKING:
    from db.ops import OpsCredentials

keys_app = typer.Typer(help="Operations API keys: create, rotate, revoke, list.",
                       no_args_is_help=True)

Days = Annotated[int | None, typer.Option("--days", help="Lifetime in days (1-366).")]


def _print_creds(c: OpsCredentials, as_json: bool) -> None:
    out = {"key_id": c.key_id, "secret_key": c.secret_key, "holder": c.holder,
           "scopes": list(c.scopes), "expires_at": c.expires_at.isoformat()}
    if as_json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {' '.join(v) if isinstance(v, list) else v}")


@keys_app.command("create")
def keys_create(
    holder: Annotated[str, typer.Option("--holder", help="Who the key is for.")],
    scope: Annotated[list[str], typer.Option("--scope", help="read, halt, restrict, resolve, "
                                             "settlement or keys (repeat it).")],
    operator: Operator,
    reason: Reason,
    days: Days = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """Issue an ops key; its secret is printed once."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    _print_creds(ops_run(s, lambda ops: ops.create_key(actor, holder, scope, days, reason)),
                 as_json)


@keys_app.command("rotate")
def keys_rotate(key_id: str, operator: Operator, reason: Reason, days: Days = None,
                as_json: Annotated[bool, typer.Option("--json")] = False,
                data_dir: DataDir = None) -> None:
    """A new key for the same holder and scopes; the old one is revoked at once."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    _print_creds(ops_run(s, lambda ops: ops.rotate_key(actor, key_id, days, reason)), as_json)


@keys_app.command("revoke")
def keys_revoke(key_id: str, operator: Operator, reason: Reason, data_dir: DataDir = None) -> None:
    """Revoke an ops key: the API refuses it from its next request."""
    s = load_settings(data_dir)
    actor = operator_actor(s, operator)
    ops_run(s, lambda ops: ops.revoke_key(actor, key_id, reason))
    console.print(f"{key_id}: revoked")


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False,
              data_dir: DataDir = None) -> None:
    """Every ops key with its holder, scopes, expiry and revocation (never a secret)."""
    from db.ops import list_keys

    s = load_settings(data_dir)
    rows = run(lambda c: list_keys(c.router.directory), s)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("key id", "holder", "scopes", "expires", "revoked", "rotated from")
    for r in rows:
        table.add_row(r["key_id"], r["holder"], ",".join(r["scopes"]), str(r["expires_at"]),
                      str(r["revoked_at"] or ""), str(r["rotated_from"] or ""))
    console.print(table if rows else "no ops keys")
