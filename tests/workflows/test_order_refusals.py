"""Venue reports the books cannot take: every one is a refusal, never a failed workflow. The
report is kept (quantity 0, audited with its reason), the order goes STUCK with its hold, and an
operator resolves it. Includes fills the ledger itself refuses."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowExecutionStatus

from tests.stack import TradingStack
from tests.workflows.order_helpers import balances, events, place, sherwood_cli, wait_order


async def wait_stuck(stack: TradingStack, acct, order_id: str) -> dict:  # type: ignore[no-untyped-def]
    import asyncio
    import time

    deadline = time.monotonic() + 20
    while True:
        body = await wait_order(stack, acct, order_id, {"pending_cancel", "filled", "canceled",
                                                        "rejected", "partially_filled", "new"})
        if body["state"] == "STUCK":
            return body
        handle = stack.temporal.get_workflow_handle(order_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING, body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def refused_rows(stack: TradingStack, shard: int, order_id: str) -> list[tuple[str, Decimal]]:
    async with stack.router.engine(shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT exec_type, qty FROM executions WHERE order_id = :o ORDER BY received_at"),
            {"o": uuid.UUID(order_id)})).all()
    return [(r.exec_type, r.qty) for r in rows]


@pytest.mark.parametrize("garble", [
    {"last_px": "12.30125"},  # five decimals: a USD amount with more than 4 is never rounded
    {"last_qty": "2.5"},  # a fractional share on a whole-share order
    {"last_px": "Infinity"},
    {"last_qty": "1E+50"},  # beyond any column: an overflow if it were written
    {"last_px": "-12.30"},
    {"last_qty": "abc"},
], ids=["px-5-decimals", "fractional-qty", "px-infinity", "qty-overflow", "px-negative", "qty-garbage"])
async def test_a_fill_the_books_cannot_take_leaves_the_order_stuck_with_its_hold(
    stack: TradingStack, garble: dict[str, str],
) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    with stack.venues_behave(garble_trades=garble):
        order = await place(stack, acct, symbol="F", qty="10", side="buy", type="limit",
                            limit_price="12.50", time_in_force="day")
        stuck = await wait_stuck(stack, acct, order["id"])
    assert stuck["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert bal["cash_held"] == 125 and bal["cash"] == 875  # the hold stays, nothing was booked
    rows = await refused_rows(stack, acct.shard, order["id"])
    assert ("refused", 0) in rows and all(q == 0 for _, q in rows), rows
    trail = await events(stack, acct.shard, order["id"])
    assert any(e == "report_refused" for e, _, _ in trail), trail
    await sherwood_cli(stack, "ops", "resolve", order["id"], "--filled-qty", "0", "--canceled",
                       "--note", "venue: its report was garbled, nothing filled")
    await wait_order(stack, acct, order["id"], {"canceled"})
    assert await balances(stack, acct) == {"cash": Decimal("1000")}
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


async def test_a_fill_the_ledger_refuses_is_a_refusal_too(stack: TradingStack) -> None:
    """A sell whose held shares are no longer there when the venue fills it (an inconsistency
    elsewhere): the ledger refuses the booking, so the report is refused and the order goes STUCK
    instead of pointing an execution at a rejected transaction."""
    from domain.ledger import Entry, LedgerTxn, customer

    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    ledger = stack.router.ledger(acct.shard)
    a = acct.account_id
    await ledger.hold_cash(f"seed:{a}:h", a, "123.1")
    await ledger.book_fill(f"seed:{a}:f", a, "buy", "F", 10, "12.31")
    await ledger.settle(f"seed:{a}:s", a, shares={"F": 10})
    order = await place(stack, acct, symbol="F", qty="4", side="sell", type="limit",
                        limit_price="12.50", time_in_force="gtc")  # above the bid: it rests
    await wait_order(stack, acct, order["id"], {"new"})
    # the held shares disappear behind the order's back
    await ledger.post(LedgerTxn.build(f"tamper:{a}", "tamper", [
        Entry.of(customer(a, "shares_held:F"), -4), Entry.of(customer(a, "shares:F"), 4)], account_id=a))
    await stack.set_quote("F", "12.60", "12.61")  # the venue now fills it
    stuck = await wait_stuck(stack, acct, order["id"])
    assert stuck["filled_qty"] == "0"
    async with stack.router.engine(acct.shard).connect() as conn:
        pointing = (await conn.execute(text(
            "SELECT count(*) FROM executions e JOIN ledger_transactions t ON t.id = e.ledger_txn_id "
            "WHERE e.order_id = :o AND t.status <> 'posted'"), {"o": uuid.UUID(order["id"])})).scalar_one()
    assert pointing == 0
    assert ("refused", 0) in await refused_rows(stack, acct.shard, order["id"])
