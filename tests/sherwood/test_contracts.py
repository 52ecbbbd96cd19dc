"""The names that cross processes (sherwood.contracts) are the ones the workflows declare, and
their strings do not change by accident: a renamed key or queue would split a running stack in
two (old processes on the old name)."""

from __future__ import annotations

from temporalio import workflow

from sherwood import contracts as c
from workflows.deposit import DepositWorkflow
from workflows.order import OrderWorkflow
from workflows.withdrawal import WithdrawalWorkflow


def test_workflow_handlers_carry_the_contract_names() -> None:
    """Callers use typed references (``OrderWorkflow.cancel``); the names they stand for are
    the contract's (what the Temporal CLI or another language would send)."""
    order = workflow._Definition.must_from_class(OrderWorkflow)
    assert {c.ACCEPTED_UPDATE, c.CANCEL_UPDATE, c.RESOLVE_UPDATE} <= set(order.updates)
    assert order.updates[c.CANCEL_UPDATE].fn is OrderWorkflow.cancel
    assert order.updates[c.RESOLVE_UPDATE].fn is OrderWorkflow.resolve
    assert order.updates[c.REPLACE_UPDATE].fn is OrderWorkflow.replace
    assert c.EXECUTION_REPORT_SIGNAL in order.signals
    for flow in (DepositWorkflow, WithdrawalWorkflow):
        assert c.ACCEPTED_UPDATE in workflow._Definition.must_from_class(flow).updates


def test_names_are_stable() -> None:
    assert (c.GATEWAY_TASK_QUEUE, c.BACKOFFICE_TASK_QUEUE) == ("execution-gateway", "backoffice")
    assert (c.shard_task_queue(3), c.backoffice_shard_queue(3)) == ("shard-3", "backoffice-shard-3")
    assert [k.name for k in (c.ORDER_STATE, c.SYMBOL, c.ACCOUNT_ID, c.SHARD_ID)] == list(
        c.ORDER_SEARCH_ATTRIBUTES)
    k = c.RedisKeys("p")
    assert [k.quotes_latest, k.trades_latest, k.md_channel("AAPL"), k.md_dropped, k.md_accepted,
            k.md_seq, k.halts, k.controls, k.controls_events, k.account_shard("a"),
            k.trade_updates("a"), k.ratelimit("b"), k.bank_instruction("t")] == [
        "p:quotes:latest", "p:trades:latest", "p:md:AAPL", "p:md:dropped", "p:md:accepted", "p:md:seq",
        "p:halts", "p:controls", "p:controls:events", "p:account_shard:a", "p:trade_updates:a",
        "p:ratelimit:b", "p:bank:instr:t"]
