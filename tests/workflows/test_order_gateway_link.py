"""Orders over the execution gateway's direct link: a market order sent, filled and booked in one
workflow task; the fallback to the gateway's Temporal activity when the link is down, its answer
is lost or the direct send fails in the shard worker (nothing sent twice, every fill booked
once); a halt at the gateway refused over the link.

Not here: the link's own protocol (tests/activities/test_gateway_link.py) or the gateway's FIX
side (tests/workers/test_gateway.py).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from db.orders import OrderStore
from sherwood.contracts import ORDER_STATE
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import (
    assert_ten_f_booked_once_in_four_fills,
    assert_two_aapl_bought,
    balances,
    buy_two_aapl_filled,
    event_types,
    gateway_sends,
    local_steps,
    place,
    wait_order,
)


async def test_market_order_goes_over_the_gateway_link_in_one_workflow_task(
    stack: TradingStack,
) -> None:
    """Accepted, sent over the gateway's direct link, filled and booked in the workflow's first
    (and only) workflow task: no activity, no signal, no second task; the send and the booking
    of its answers are one local activity."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    handle = await buy_two_aapl_filled(stack, acct)
    history = await handle.fetch_history()
    types = event_types(history)
    assert types.count("WORKFLOW_TASK_COMPLETED") == 1, types
    assert not [t for t in types if t.startswith("ACTIVITY_TASK") or t.endswith("SIGNALED")], types
    steps = local_steps(history)
    assert steps == ["accept_order", "send_new_order_direct"], steps
    assert types.count("UPSERT_WORKFLOW_SEARCH_ATTRIBUTES") <= 2, types  # one OrderState, one patch
    assert (await handle.describe()).typed_search_attributes.get(ORDER_STATE) == "FILLED"
    # a resting order: its OrderState is current once its workflow waits
    limit = await place(stack, acct, symbol="AAPL", qty="1", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")
    resting = await wait_order(stack, acct, limit["id"], {"new"})
    for _ in range(50):  # the row commits inside the workflow task; the upsert comes at its end
        desc = await stack.temporal.get_workflow_handle(limit["id"]).describe()
        if desc.typed_search_attributes.get(ORDER_STATE) == resting["state"]:
            break
        await asyncio.sleep(0.1)
    assert desc.typed_search_attributes.get(ORDER_STATE) == resting["state"]
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{limit['id']}", headers=headers(acct))).status_code == 204
    await wait_order(stack, acct, limit["id"], {"canceled"})
    await assert_two_aapl_bought(stack, acct, handle, "5000")


async def test_a_booking_that_fails_after_the_direct_send_is_booked_by_the_next_step(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order goes over the link, but booking its answers in the same local activity fails
    (our own error): the send is not hidden or repeated; the workflow books the ack's reports
    with its apply_reports step, once."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    real = OrderStore.apply_reports
    failed: list[str] = []

    async def fails_once(self: OrderStore, order_id: str, reports: Any, **kw: Any) -> Any:
        if not failed and (await self.snapshot(order_id)).account_id == str(acct.account_id):
            failed.append(order_id)
            raise RuntimeError("injected: the booking after the send fails once")
        return await real(self, order_id, reports, **kw)

    monkeypatch.setattr(OrderStore, "apply_reports", fails_once)
    handle = await buy_two_aapl_filled(stack, acct)
    monkeypatch.undo()
    assert failed == [handle.id]
    history = await handle.fetch_history()
    assert local_steps(history) == ["accept_order", "send_new_order_direct", "apply_reports"]
    assert await gateway_sends(stack, handle.id) == 1
    await assert_two_aapl_bought(stack, acct, handle, "5000")


async def test_link_down_the_gateway_activity_sends_the_order(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    link = stack.gateway.link
    assert link is not None
    await link.stop()
    try:
        handle = await buy_two_aapl_filled(stack, acct)
    finally:
        await link.start()
    types = event_types(await handle.fetch_history())
    assert types.count("ACTIVITY_TASK_COMPLETED") == 1, types  # send_new_order, the activity
    await assert_two_aapl_bought(stack, acct, handle, "5000")


async def test_link_answer_lost_after_the_send_books_the_fills_once(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway sends the order over the link but its answer comes too late: the workflow
    falls back to the activity, which finds the order sent (nothing is sent twice) and returns
    every report recorded for it; each fill is booked once."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    link = stack.gateway.link
    assert link is not None
    real = link.send

    async def late(o: Any) -> Any:
        ack = await real(o)
        await asyncio.sleep(stack.settings.gateway_link_timeout_s + 0.5)
        return ack

    monkeypatch.setattr(link, "send", late)
    with stack.venues_behave(engine={"fill_slices": [Decimal(3), Decimal(3)]}):
        order = await place(stack, acct, symbol="F", qty="10", side="buy", type="market",
                            time_in_force="day")
        handle = stack.temporal.get_workflow_handle(order["id"])
        assert (await handle.result())["state"] == "FILLED"
    monkeypatch.undo()
    types = event_types(await handle.fetch_history())
    assert types.count("ACTIVITY_TASK_COMPLETED") == 1, types
    done = await wait_order(stack, acct, order["id"], {"filled"})
    await assert_ten_f_booked_once_in_four_fills(stack, acct, done)
    assert await gateway_sends(stack, order["id"]) == 1  # one NewOrderSingle, nothing else
    assert stack.venues[done["venue"]].engine.order(order["id"]).cum_qty == 10


async def test_halt_at_the_gateway_refuses_over_the_link_and_releases_funds(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("5000")

    async def halted(symbol: str) -> bool:
        return True

    monkeypatch.setattr(stack.gateway.activities, "_halted", halted)
    order = await place(stack, acct, symbol="F", qty="2", side="buy", type="market",
                        time_in_force="day")
    snap = await stack.temporal.get_workflow_handle(order["id"]).result()
    monkeypatch.undo()
    assert (snap["state"], snap["reject_code"]) == ("REJECTED", "symbol_halted"), snap
    assert await balances(stack, acct) == {"cash": Decimal("5000")}
    assert await gateway_sends(stack, order["id"]) == 0


async def test_direct_send_failing_in_the_shard_worker_falls_back_to_the_activity(
    stack: TradingStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    link = stack.workers._gateway
    assert link is not None

    async def broken(order: Any) -> Any:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(link, "send_new_order", broken)
    handle = await buy_two_aapl_filled(stack, acct)
    monkeypatch.undo()
    assert "ACTIVITY_TASK_COMPLETED" in event_types(await handle.fetch_history())
    await assert_two_aapl_bought(stack, acct, handle, "5000")


async def test_the_gateway_task_queue_setting_moves_the_orders_sends(stack: TradingStack) -> None:
    """SHERWOOD_GATEWAY_TASK_QUEUE moves the gateway's worker, so the order workflow sends to
    that queue too (here the link is down: the send goes through the gateway's activity)."""
    import uuid

    from temporalio.worker import Worker

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    queue = f"gateway-moved-{uuid.uuid4().hex[:8]}"
    acts = stack.gateway.activities
    link = stack.gateway.link
    assert link is not None
    svc = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc.model_copy(update={"gateway_task_queue": queue})
    await link.stop()
    try:
        async with Worker(stack.temporal, task_queue=queue,
                          activities=[acts.send_new_order, acts.send_cancel, acts.send_status]):
            handle = await buy_two_aapl_filled(stack, acct)
    finally:
        stack.app.state.sherwood.settings = svc
        await link.start()
    history = await handle.fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert [(a.activity_type.name, a.task_queue.name) for a in scheduled] == [("send_new_order", queue)]
    await assert_two_aapl_bought(stack, acct, handle, "5000")
