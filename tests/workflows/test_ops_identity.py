"""Operator identity end to end: a resolution of a STUCK order above the four-eyes notional
waits for a second, different operator (API and CLI), and the ``sherwood keys`` / ``ops`` CLI
accepts only configured operators and audits what they do. The commands run in the test
process (tests/cli.py) but for one real ``python -m sherwood`` per command family.

Not here: scopes and revocation on every /ops route (tests/api/test_ops_auth.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

from sqlalchemy import text

from tests.cli import sherwood_in_process
from tests.stack import TradingStack, ops_headers
from tests.workflows.order_helpers import (
    balances,
    place,
    sherwood_cli,
    sherwood_subprocess,
    wait_order,
)


async def stuck_order(stack: TradingStack, cash: str, qty: str) -> tuple[object, dict]:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account(cash)
    with stack.venues_behave(never_ack=True):
        order = await place(stack, acct, symbol="AAPL", qty=qty, side="buy", type="limit",
                            limit_price="190", time_in_force="day")
        snap = await wait_order(stack, acct, order["id"], {"pending_cancel"}, timeout=10)
        deadline = time.monotonic() + 15
        while snap["state"] != "STUCK":
            assert time.monotonic() < deadline, snap
            await asyncio.sleep(0.1)
            snap = await wait_order(stack, acct, order["id"], {"pending_cancel"})
    return acct, order


async def cli(stack: TradingStack, *args: str) -> tuple[int, str]:
    """``sherwood ARGS`` in this process (tests/cli.py): (exit status, stdout + stderr)."""
    code, out, err = await sherwood_in_process(stack.env(), *args)
    return code, out + err


async def test_a_resolve_above_the_threshold_waits_for_a_second_operator(
    stack: TradingStack,
) -> None:
    assert stack.settings.ops_four_eyes_notional == Decimal(10000)
    acct, order = await stuck_order(stack, "20000", "100")
    alice = await ops_headers(stack.router, "resolve", holder="alice")
    alice2 = await ops_headers(stack.router, "resolve", holder="alice")  # her second key
    bob = await ops_headers(stack.router, "resolve", "read", holder="bob")
    async with stack.http() as http:
        r = await http.post(f"/ops/orders/{order['id']}/resolve", headers=alice, json={
            "outcome": "filled", "filled_qty": "100", "avg_price": "187.45",
            "reason": "MM1 desk: all 100 filled"})
        assert r.status_code == 200, r.text
        pending = r.json()
        assert (pending["status"], pending["notional"]) == ("pending", "18745.00"), pending
        # nothing reached the workflow: still STUCK with its hold
        snap = await wait_order(stack, acct, order["id"], {"pending_cancel"})
        assert snap["state"] == "STUCK"
        assert (await balances(stack, acct))["cash_held"] == 19000
        listed = (await http.get("/ops/resolutions", headers=bob)).json()
        assert pending["request_id"] in {str(x["id"]) for x in listed}
        # the requester cannot approve her own, with whichever key
        for hdr in (alice, alice2):
            r = await http.post(f"/ops/resolutions/{pending['request_id']}/approve", headers=hdr,
                                json={"reason": "looks right to me"})
            assert (r.status_code, r.json()["reason"]) == (403, "same_operator"), r.text
        assert (await wait_order(stack, acct, order["id"], {"pending_cancel"}))["state"] == "STUCK"
        r = await http.post(f"/ops/resolutions/{pending['request_id']}/approve", headers=bob,
                            json={"reason": "checked the MM1 drop copy"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved" and r.json()["order"]["state"] == "FILLED"
        again = await http.post(f"/ops/resolutions/{pending['request_id']}/approve", headers=bob,
                                json={"reason": "twice"})
        assert (again.status_code, again.json()["reason"]) == (409, "not_pending"), again.text
    done = await wait_order(stack, acct, order["id"], {"filled"})
    assert done["filled_qty"] == "100"
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal("20000") - 100 * Decimal("187.45") and not bal.get("cash_held")
    async with stack.router.directory.connect() as conn:
        trail = (await conn.execute(text(
            "SELECT action, actor, reason FROM ops_audit WHERE target = :o ORDER BY id"),
            {"o": order["id"]})).all()
    assert [tuple(t) for t in trail] == [
        ("resolve.request", "alice", "MM1 desk: all 100 filled"),
        ("resolve.approve", "bob", "checked the MM1 drop copy")]


async def test_cli_operators_must_be_configured_and_resolve_with_four_eyes(
    stack: TradingStack,
) -> None:
    assert stack.settings.ops_operators == ["alice", "bob"]
    # a real `python -m sherwood` process: the entry point's exit status (the rest in-process)
    code, out = await sherwood_subprocess(stack, "ops", "halt", "ZCLI", "--operator", "mallory",
                                          "--reason", "x")
    assert code == 2 and "unknown_operator" in out, out
    code, out = await cli(stack, "ops", "halt", "ZCLI", "--operator", "alice")
    assert code == 2 and "--reason" in out, out  # a reason is required
    acct, order = await stuck_order(stack, "20000", "60")
    out = await sherwood_cli(stack, "ops", "resolve", order["id"], "--operator", "alice",
                             "--reason", "venue: 60 filled", "--filled-qty", "60",
                             "--avg-price", "187.45", "--json")
    pending = json.loads(out)
    assert pending["status"] == "pending", pending
    code, out = await cli(stack, "ops", "approve", pending["request_id"], "--operator", "alice",
                          "--reason", "mine")
    assert code == 1 and "same_operator" in out, out
    assert (await wait_order(stack, acct, order["id"], {"pending_cancel"}))["state"] == "STUCK"
    rows = json.loads(await sherwood_cli(stack, "ops", "pending", "--json"))
    assert pending["request_id"] in {r["id"] for r in rows}
    out = await sherwood_cli(stack, "ops", "approve", pending["request_id"], "--operator", "bob",
                             "--reason", "confirmed with MM1", "--json")
    assert json.loads(out)["order"]["state"] == "FILLED", out
    await wait_order(stack, acct, order["id"], {"filled"})


async def test_sherwood_keys_create_rotate_revoke_list_are_audited(stack: TradingStack) -> None:
    made = json.loads(await sherwood_cli(
        stack, "keys", "create", "--holder", "frank", "--scope", "read", "--scope", "halt",
        "--days", "30", "--operator", "alice", "--reason", "new on call", "--json"))
    assert made["scopes"] == ["read", "halt"]
    hdr = {"APCA-API-KEY-ID": made["key_id"], "APCA-API-SECRET-KEY": made["secret_key"]}
    async with stack.http() as http:
        assert (await http.get("/ops/halts", headers=hdr)).status_code == 200
        new = json.loads(await sherwood_cli(stack, "keys", "rotate", made["key_id"],
                                            "--operator", "bob", "--reason", "rotation", "--json"))
        assert (await http.get("/ops/halts", headers=hdr)).status_code == 401
        hdr = {"APCA-API-KEY-ID": new["key_id"], "APCA-API-SECRET-KEY": new["secret_key"]}
        assert (await http.get("/ops/halts", headers=hdr)).status_code == 200
        await sherwood_cli(stack, "keys", "revoke", new["key_id"], "--operator", "alice",
                           "--reason", "left")
        r = await http.get("/ops/halts", headers=hdr)
        assert (r.status_code, r.json()["reason"]) == (401, "key_revoked")
    # a real `python -m sherwood` process: the entry point's exit status (the rest in-process)
    code, out = await sherwood_subprocess(stack, "keys", "create", "--holder", "x", "--scope",
                                          "root", "--operator", "alice", "--reason", "r")
    assert code == 2 and "invalid_scope" in out, out
    listed = {k["key_id"]: k for k in json.loads(await sherwood_cli(stack, "keys", "list", "--json"))}
    assert listed[new["key_id"]]["rotated_from"] == made["key_id"]
    async with stack.router.directory.connect() as conn:
        trail = (await conn.execute(text(
            "SELECT action, actor, key_id, reason FROM ops_audit WHERE target IN (:a, :b) "
            "ORDER BY id"), {"a": made["key_id"], "b": new["key_id"]})).all()
    assert [tuple(t) for t in trail] == [("keys.create", "alice", None, "new on call"),
                                         ("keys.rotate", "bob", None, "rotation"),
                                         ("keys.revoke", "alice", None, "left")]
