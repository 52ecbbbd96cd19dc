"""Order workflow versions: histories replay deterministically in the sandbox, and orders whose
histories were written by earlier versions of the workflow (before ROUTED was booked with the
venue's first answers, before the gateway's direct link) still finish and replay.

Not here: the lifecycle itself (test_order_lifecycle.py) and the recorded histories every later
version must replay (test_recorded_histories.py).
"""

from __future__ import annotations

from decimal import Decimal

from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import (
    balances,
    buy_two_aapl_filled,
    event_types,
    local_steps,
    place,
    wait_order,
)
from tests.workflows.replay import replay_past_the_import_race


async def test_histories_replay_deterministically_in_the_sandbox(stack: TradingStack) -> None:
    """The shard worker runs order workflows unsandboxed (for speed); the sandboxed replayer
    proves the workflow code is deterministic and sandbox-clean on real histories: a market
    order filled at once, and a resting limit order canceled by the customer."""
    from temporalio.worker import Replayer

    from workflows.order import OrderWorkflow

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    market = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                         time_in_force="day")
    limit = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")
    await wait_order(stack, acct, limit["id"], {"new"})
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{limit['id']}", headers=headers(acct))).status_code == 204
    for order in (market, limit):
        handle = stack.temporal.get_workflow_handle(order["id"])
        await handle.result()
        history = await handle.fetch_history()
        markers = [e.marker_recorded_event_attributes.marker_name for e in history.events
                   if e.HasField("marker_recorded_event_attributes")]
        assert "core_patch" in markers, markers  # the current steps (see the next test)
        result = await replay_past_the_import_race(
            lambda h=history: Replayer(workflows=[OrderWorkflow]).replay_workflow(h))
        assert result.replay_failure is None, result.replay_failure


async def test_orders_of_the_previous_version_finish_and_replay(stack: TradingStack) -> None:
    """An order whose history was written before ROUTED and the venue's first answers were
    booked together (workflow.patched returns False for it) still finishes correctly (the
    answers the gateway returns in the ack are booked like signalled ones) and replays."""
    import temporalio.workflow
    from temporalio.worker import Replayer

    from workflows.order import OrderWorkflow

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    real = temporalio.workflow.patched
    temporalio.workflow.patched = lambda *_a, **_k: False  # type: ignore[assignment]
    try:  # the shard workers run in this process, unsandboxed: they take the old steps
        order = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                            time_in_force="day")
        done = await wait_order(stack, acct, order["id"], {"filled"})
        handle = stack.temporal.get_workflow_handle(order["id"])
        await handle.result()
    finally:
        temporalio.workflow.patched = real
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal("5000") - 2 * Decimal(done["filled_avg_price"])
    assert "cash_held" not in bal and bal["shares_unsettled:AAPL"] == 2
    history = await handle.fetch_history()
    steps = local_steps(history)
    assert steps[:3] == ["accept_order", "transition_order", "apply_reports"], steps  # the old way
    result = await replay_past_the_import_race(
        lambda: Replayer(workflows=[OrderWorkflow]).replay_workflow(history))
    assert result.replay_failure is None, result.replay_failure


async def test_orders_routed_through_the_activity_before_the_link_finish_and_replay(
    stack: TradingStack,
) -> None:
    """Histories written before the direct link (workflow.patched(DIRECT_SEND) is False for
    them: the gateway's activity sent the order) still finish and replay."""
    import temporalio.workflow
    from temporalio.worker import Replayer

    from workflows.order import DIRECT_SEND, OrderWorkflow

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    real = temporalio.workflow.patched
    temporalio.workflow.patched = lambda patch_id: patch_id != DIRECT_SEND and real(patch_id)  # type: ignore[assignment]
    try:
        handle = await buy_two_aapl_filled(stack, acct)
    finally:
        temporalio.workflow.patched = real
    history = await handle.fetch_history()
    assert "ACTIVITY_TASK_COMPLETED" in event_types(history)
    steps = local_steps(history)
    assert steps == ["accept_order", "apply_reports"], steps
    result = await replay_past_the_import_race(
        lambda: Replayer(workflows=[OrderWorkflow]).replay_workflow(history))
    assert result.replay_failure is None, result.replay_failure
