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
from tests.workflows.order_helpers import AS_ALICE, balances, events, place, sherwood_cli, wait_order


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
    await sherwood_cli(stack, "ops", "resolve", *AS_ALICE, order["id"], "--filled-qty", "0", "--canceled",
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


async def test_a_report_from_another_venue_is_refused_and_the_order_waits_for_an_operator(
    stack: TradingStack,
) -> None:
    """A fill for the order arriving on another venue's session: refused and audited, never
    booked; the order goes STUCK with its hold."""
    from fix.messages import execution_report, parse_inbound

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    order = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")
    body = await wait_order(stack, acct, order["id"], {"new"})
    other = next(v for v in stack.venues if v != body["venue"])
    msg = execution_report(order_id="X1", cl_ord_id=order["id"], exec_id=f"X-{uuid.uuid4().hex[:6]}",
                           exec_type="F", ord_status="2", symbol="AAPL", side="1", order_qty="3",
                           leaves_qty="0", cum_qty="3", avg_px="150", last_qty="3", last_px="150")
    assert parse_inbound(other, msg) is not None
    await stack.gateway.delivery.on_message(other, msg)  # as if it came on that venue's session
    stuck = await wait_stuck(stack, acct, order["id"])
    assert stuck["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert bal["cash_held"] == 450 and "shares_unsettled:AAPL" not in bal
    assert ("refused", 0) in await refused_rows(stack, acct.shard, order["id"])


async def test_a_report_for_an_order_the_gateway_never_sent_is_refused(stack: TradingStack) -> None:
    from fix.messages import execution_report

    unknown = str(uuid.uuid4())
    exec_id = f"U-{uuid.uuid4().hex[:6]}"
    msg = execution_report(order_id="U1", cl_ord_id=unknown, exec_id=exec_id, exec_type="F",
                           ord_status="2", symbol="AAPL", side="1", order_qty="3", leaves_qty="0",
                           cum_qty="3", avg_px="150", last_qty="3", last_px="150")
    await stack.gateway.delivery.on_message("MM1", msg)
    async with stack.gateway.store.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT delivered_at IS NOT NULL AS done, last_error FROM gateway_reports "
            "WHERE venue = 'MM1' AND exec_id = :e"), {"e": exec_id})).one()
    assert row.done and "never sent" in row.last_error  # kept for the audit, delivered to nobody
