"""Helpers shared by the order workflow tests (tests/workflows/test_order_*.py), test_risk.py and
record_histories.py: place an order and wait for a status over HTTP, read balances and the
order's audit events, inspect workflow histories (local activity steps, event types), count the
gateway's sends, the 2-AAPL and 10-F scenarios' common checks, and run the ``temporal`` and
``sherwood`` CLIs without blocking the event loop the workers under test share.

No tests here (not collected: the name does not start with ``test_``), and no fixtures (the
``stack`` fixture is tests/conftest.py's).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from temporalio.service import RPCError, RPCStatusCode

from tests.stack import TradingStack, headers


async def started(stack: TradingStack, workflow_id: str, timeout: float = 10.0) -> None:
    """Wait until Temporal knows the workflow (its start recorded): a workflow another one
    starts once its own step has committed (a rebalance, a replacement) is not there yet when
    that commit is read."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await stack.temporal.get_workflow_handle(workflow_id).describe()
            return
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def wait_order(stack: TradingStack, acct, order_id: str, statuses: set[str],
                     timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    async with stack.http() as http:
        while True:
            r = await http.get(f"/v2/orders/{order_id}", headers=headers(acct))
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"order stayed {body['status']} ({body['state']}): "
                                     f"{body.get('reject_code')} {body.get('reject_reason')}")
            await asyncio.sleep(0.05)


async def post_order(http: Any, url: str, hdrs: dict[str, str], body: dict[str, Any],
                     within_s: float = 100) -> Any:
    """POST an order as Alpaca clients do: a 504 ``order_pending`` (the API's accept deadline
    passed while the order queues behind others on its account, or its worker restarts) is
    retried with the same client_order_id, which makes the retry the same order."""
    body = {"client_order_id": str(uuid.uuid4()), **body}
    give_up = time.monotonic() + within_s
    while True:
        r = await http.post(url, headers=hdrs, json=body)
        if r.status_code != 504 or time.monotonic() > give_up:
            return r
        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))


async def events(stack: TradingStack, shard: int, order_id: str) -> list[tuple[str, str, str]]:
    async with stack.router.engine(shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT event, from_state, to_state FROM order_events WHERE order_id = :o ORDER BY seq"),
            {"o": uuid.UUID(order_id)})).all()
    return [(r.event, r.from_state, r.to_state) for r in rows]


async def place(stack: TradingStack, acct, **body) -> dict:
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def balances(stack: TradingStack, acct) -> dict[str, Decimal]:
    """Non-zero balances (a refused hold may leave a zero-balance ledger account behind)."""
    bal = await stack.router.ledger(acct.shard).balances(acct.account_id)
    return {k: v for k, v in bal.items() if v != 0}


async def assert_ten_f_booked_once_in_four_fills(stack: TradingStack, acct, done: dict) -> None:
    """A 10-share F buy from 20,000 filled in slices of 3 + 3 + 3 + 1: each booked once."""
    bal = await balances(stack, acct)
    assert bal["shares_unsettled:F"] == 10
    assert bal["cash"] == Decimal("20000") - 10 * Decimal(done["filled_avg_price"])
    async with stack.router.engine(acct.shard).connect() as conn:
        n = (await conn.execute(text(
            "SELECT count(*) FROM ledger_transactions WHERE id LIKE :p AND status = 'posted'"),
            {"p": f"order:{done['id']}:fill:%"})).scalar_one()
    assert n == 4


def local_activity(event: Any) -> str:
    """The activity type of a local-activity marker (the marker's name for other markers)."""
    attrs = event.marker_recorded_event_attributes
    data = attrs.details.get("data")
    if attrs.marker_name != "core_local_activity" or data is None:
        return str(attrs.marker_name)
    return str(json.loads(data.payloads[0].data)["activity_type"])


def local_steps(history: Any) -> list[str]:
    """The local activities a history ran, in order (patch markers left out)."""
    return [name for e in history.events if e.HasField("marker_recorded_event_attributes")
            if (name := local_activity(e)) != "core_patch"]


async def buy_two_aapl_filled(stack: TradingStack, acct) -> Any:
    """A market buy of 2 AAPL, waited for until its workflow ends FILLED; its handle."""
    order = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                        time_in_force="day")
    handle = stack.temporal.get_workflow_handle(order["id"])
    assert (await handle.result())["state"] == "FILLED"
    return handle


async def gateway_sends(stack: TradingStack, order_id: str) -> int:
    """How many messages the gateway reserved for the order (NewOrderSingle, cancels, ...)."""
    async with stack.gateway.store.engine.connect() as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM gateway_orders WHERE order_id = :o"), {"o": order_id})).scalar_one())


async def assert_two_aapl_bought(stack: TradingStack, acct, handle: Any, cash: str) -> None:
    """Cash down by exactly 2 x the fill price, 2 shares (unsettled), no hold left."""
    price = Decimal((await handle.result())["filled_avg_price"])
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal(cash) - 2 * price
    assert bal["shares_unsettled:AAPL"] == 2 and "cash_held" not in bal


def event_types(history: Any) -> list[str]:
    from temporalio.api.enums.v1 import EventType

    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]


async def run_cli(*cmd: str, env: dict[str, str] | None = None) -> str:
    """Run a command without blocking the event loop (the workers under test share it)."""
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (err + out).decode()
    return out.decode()


async def temporal_cli(stack: TradingStack, *args: str) -> str:
    from sherwood.embedded import temporal_binary

    return await run_cli(temporal_binary(), *args, "--address", stack.settings.temporal_address or "")


async def sherwood_cli(stack: TradingStack, *args: str) -> str:
    """``sherwood ARGS`` against the stack, in this process (tests/cli.py), its exit status 0;
    its stdout."""
    from tests.cli import sherwood_in_process

    code, out, err = await sherwood_in_process(stack.env(), *args)
    assert code == 0, err + out
    return out


async def sherwood_subprocess(stack: TradingStack, *args: str) -> tuple[int, str]:
    """``python -m sherwood ARGS`` against the stack, a real process (the entry point):
    (exit status, stdout + stderr)."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sherwood", *args, env=stack.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


# `sherwood ops resolve` as a configured operator (tests/conftest.py: SHERWOOD_OPS_OPERATORS)
AS_ALICE = ("--operator", "alice", "--reason", "venue confirmed")
