"""A shard's settlement or reconciliation that fails for good is not retried forever: an
unexpected (deterministic) error halts the shard for an operator at once and the run fails; a
transient one is retried with backoff up to the run's maximum, then the same. Only that shard is
halted.

The faults are injected into the back-office worker's activities (in this process): a bug of
ours, a connection that keeps resetting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy

import activities.settlement as settlement_activities
from db import shard_status
from db.router import ShardRouter
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from tests.workflows.conftest import Backoffice
from workflows.settlement import LedgerReconciliationWorkflow, SettlementInput, SettlementWorkflow

BROKEN = 1  # the shard whose activities fail
DAY = "2025-06-02"  # a Monday long settled-or-empty: settling it again changes nothing


@pytest.fixture
async def halts_cleared(router: ShardRouter) -> AsyncIterator[None]:
    """Every shard's halts cleared after the test (a halt refuses the other tests' orders)."""
    yield
    for n in range(router.shard_count):
        await shard_status.clear_halts(router.engine(n), operator="test", note="test cleanup")


def failing(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException,
            calls: list[int] | None = None) -> None:
    """``activities.settlement.<name>`` (the store function an activity calls) fails with
    ``exc`` on shard :data:`BROKEN`; the other shards go through."""
    real = getattr(settlement_activities, name)

    async def broken(engine: Any, shard: int, *args: Any, **kwargs: Any) -> Any:
        if shard != BROKEN:
            return await real(engine, shard, *args, **kwargs)
        if calls is not None:
            calls.append(1)
        raise exc

    monkeypatch.setattr(settlement_activities, name, broken)


async def open_halts(router: ShardRouter) -> dict[int, list[dict[str, Any]]]:
    return {n: await shard_status.halts(router.engine(n)) for n in range(router.shard_count)}


async def settle(bo: Backoffice, retry_s: float) -> Any:
    return await asyncio.wait_for(bo.client.execute_workflow(
        SettlementWorkflow.run, SettlementInput(shards=bo.settings.shard_count, date=DAY,
                                                reconcile=False, retry_s=retry_s),
        id=f"settle-bounded-{uuid.uuid4().hex[:6]}", task_queue=BACKOFFICE_TASK_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE), 30)


async def test_a_settlement_that_fails_on_a_bug_halts_its_shard_and_the_run_fails(
    router: ShardRouter, backoffice: Backoffice, monkeypatch: pytest.MonkeyPatch, halts_cleared: None,
) -> None:
    calls: list[int] = []
    failing(monkeypatch, "settle_shard", ZeroDivisionError("a bug of ours"), calls)
    with pytest.raises(WorkflowFailureError) as failed:
        await settle(backoffice, retry_s=600)
    cause = failed.value.cause.cause  # the activity's error, in the workflow's ActivityError
    assert getattr(cause, "type", None) == "internal_error", cause
    assert len(calls) == 1  # deterministic: not retried
    halted = await open_halts(router)
    assert [n for n, h in halted.items() if h] == [BROKEN]  # only that shard
    [halt] = halted[BROKEN]
    assert f"settlement of {DAY} failed" in halt["reason"] and "ZeroDivisionError" in halt["reason"]


async def test_a_settlement_the_shard_keeps_refusing_halts_it_after_the_retry_maximum(
    router: ShardRouter, backoffice: Backoffice, monkeypatch: pytest.MonkeyPatch, halts_cleared: None,
) -> None:
    calls: list[int] = []
    failing(monkeypatch, "settle_shard", ConnectionResetError("shard went away"), calls)
    with pytest.raises(WorkflowFailureError):
        await settle(backoffice, retry_s=2.5)  # attempts at 0, 1, 3 s: then it gives up
    assert len(calls) > 1  # transient: retried with backoff before giving up
    halted = await open_halts(router)
    assert [n for n, h in halted.items() if h] == [BROKEN]
    assert "ConnectionResetError" in halted[BROKEN][0]["reason"]
    assert "retries exhausted" in halted[BROKEN][0]["reason"]


async def test_a_reconciliation_that_fails_on_a_bug_halts_its_shard_and_the_run_fails(
    router: ShardRouter, backoffice: Backoffice, monkeypatch: pytest.MonkeyPatch, halts_cleared: None,
) -> None:
    calls: list[int] = []
    failing(monkeypatch, "reconcile_and_record", ValueError("a bug in reconcile"), calls)
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(backoffice.client.execute_workflow(
            LedgerReconciliationWorkflow.run, backoffice.settings.shard_count,
            id=f"reconcile-bounded-{uuid.uuid4().hex[:6]}", task_queue=BACKOFFICE_TASK_QUEUE), 30)
    assert len(calls) == 1
    halted = await open_halts(router)
    assert [n for n, h in halted.items() if h] == [BROKEN]
    assert "reconciliation of today failed: ValueError" in halted[BROKEN][0]["reason"]
