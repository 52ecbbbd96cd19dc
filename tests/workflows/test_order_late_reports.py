"""Venue reports after the order's end: booked by a new run of the order's workflow (never
retried forever against a closed one), the order reopened into STUCK when the venue contradicts
its end; operator resolutions that name the venue's own executions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

from sqlalchemy import text

from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import AS_ALICE, balances, place, sherwood_cli, wait_order


async def wait_state(stack: TradingStack, acct, order_id: str, state: str, timeout: float = 20) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    async with stack.http() as http:
        while True:
            body = (await http.get(f"/v2/orders/{order_id}", headers=headers(acct))).json()
            if body["state"] == state:
                return body
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)


async def delivered(stack: TradingStack, order_id: str) -> list[tuple[str, bool]]:
    async with stack.gateway.store.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT exec_id, delivered_at IS NOT NULL AS done FROM gateway_reports WHERE order_id = :o "
            "ORDER BY id"), {"o": order_id})).all()
    return [(r.exec_id, r.done) for r in rows]


async def test_a_fill_after_the_cancel_is_booked_and_reopens_the_order_for_an_operator(
    stack: TradingStack,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    order = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")
    body = await wait_order(stack, acct, order["id"], {"new"})
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))).status_code == 204
    await wait_order(stack, acct, order["id"], {"canceled"})
    handle = stack.temporal.get_workflow_handle(order["id"])
    await handle.result()  # its workflow has ended
    venue = stack.venues[body["venue"]]
    late = venue.send_late_trade(order["id"], Decimal(3), Decimal("150.00"))
    stuck = await wait_state(stack, acct, order["id"], "STUCK")
    assert stuck["filled_qty"] == "3"
    bal = await balances(stack, acct)
    assert bal["shares_unsettled:AAPL"] == 3 and bal["cash"] == Decimal(5000) - 450
    assert "cash_held" not in bal
    for _ in range(50):  # delivered once, by the new run: not retried against the ended one
        if all(done for _, done in await delivered(stack, order["id"])):
            break
        await asyncio.sleep(0.1)
    assert (late, True) in await delivered(stack, order["id"])
    rows = json.loads(await sherwood_cli(stack, "ops", "stuck", "--json"))
    assert order["id"] in {r["order_id"] for r in rows}
    await sherwood_cli(stack, "ops", "resolve", *AS_ALICE, order["id"], "--filled-qty", "3", "--canceled",
                       "--note", "the venue confirms 3 filled after the cancel")
    done = await wait_order(stack, acct, order["id"], {"canceled"})
    assert done["filled_qty"] == "3"
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


async def test_an_operator_books_the_venues_own_executions_under_their_exec_ids(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with stack.venues_behave(never_ack=True):
        order = await place(stack, acct, symbol="AAPL", qty="10", side="buy", type="limit",
                            limit_price="190", time_in_force="day")
        stuck = await wait_state(stack, acct, order["id"], "STUCK")
    e1, e2 = f"V-{uuid.uuid4().hex[:6]}", f"V-{uuid.uuid4().hex[:6]}"
    await sherwood_cli(stack, "ops", "resolve", *AS_ALICE, order["id"], "--filled-qty", "6",
                       "--fill", f"{e1}:4@187.45", "--fill", f"{e2}:2@187.46", "--canceled",
                       "--note", "venue desk: two executions, rest canceled")
    done = await wait_order(stack, acct, order["id"], {"canceled"})
    assert done["filled_qty"] == "6"
    async with stack.router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT venue, exec_id, qty, price FROM executions WHERE order_id = :o AND qty > 0 "
            "ORDER BY exec_id"), {"o": uuid.UUID(order["id"])})).all()
    assert sorted((r.venue, r.exec_id, r.qty, r.price) for r in rows) == sorted([
        (stuck["venue"], e1, 4, Decimal("187.45")), (stuck["venue"], e2, 2, Decimal("187.46"))])
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal(5000) - 4 * Decimal("187.45") - 2 * Decimal("187.46")
    assert "cash_held" not in bal
