"""A transfer step that fails for good is not retried forever. Before anything moved (the start
step: the provisional credit of a deposit, the hold of a withdrawal), an unexpected error or
transient failures past the retry maximum end the transfer FAILED with nothing moved, and the
API answers within its deadline with a coded error. After money moved (the bank's answer, the
settle, bounce, complete or release), the failure is recorded on the transfer for an operator
(``transfer_events``), money stays where it is, and the workflow fails (listed by Temporal as
failed) instead of retrying forever; the invariants hold.

The faults are injected into the back-office worker's store and bank (in this process, like the
order fault tests): a bug of ours, a connection that keeps resetting, a step that never returns,
and an amount too large for the books handed straight to the workflow (the API's own bounds
bypassed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy

from db.accounts import OpenedAccount, open_account
from db.funding import FundingStore
from db.router import ShardRouter
from sherwood.contracts import backoffice_shard_queue
from simulators.bank import AchBank
from tests.db.audit_books import audit_rows_about
from tests.workflows.conftest import Backoffice
from tests.workflows.fault_injection import failing as fail_for
from workflows.deposit import DepositWorkflow, TransferFlow, TransferWorkflowInput


@contextlib.contextmanager
def settings(app: FastAPI, **update: Any) -> Iterator[None]:
    svc = app.state.sherwood.settings
    app.state.sherwood.settings = svc.model_copy(update=update)
    try:
        yield
    finally:
        app.state.sherwood.settings = svc


def auth(acct: OpenedAccount, key: str | None = None) -> dict[str, str]:
    h = {"APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key}
    return {**h, "Idempotency-Key": key} if key else h


def failing(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, account_id: str,
            exc: BaseException | None, *, calls: list[int] | None = None) -> None:
    """``cls.<method>`` fails with ``exc`` (``None``: never returns) for one account's transfers;
    the others go through."""
    fail_for(monkeypatch, cls, method, account_id, exc, table="transfers", calls=calls)


async def funded(router: ShardRouter, cash: str) -> OpenedAccount:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"bf:{acct.account_id}:d", acct.account_id, cash)
    await ledger.settle_deposit(f"bf:{acct.account_id}:s", acct.account_id, cash)
    return acct


async def post(http: httpx.AsyncClient, acct: OpenedAccount, amount: str, direction: str,
               key: str | None = None) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = await http.post("/v2/transfers", headers=auth(acct, key),
                        json={"amount": amount, "direction": direction})
    return r, time.monotonic() - started


async def transfers(router: ShardRouter, acct: OpenedAccount) -> list[Any]:
    async with router.engine(acct.shard).connect() as conn:
        return list((await conn.execute(text(
            "SELECT id, status, reason FROM transfers WHERE account_id = :a"),
            {"a": acct.account_id})).mappings().all())


async def events(router: ShardRouter, acct: OpenedAccount) -> list[Any]:
    async with router.engine(acct.shard).connect() as conn:
        return list((await conn.execute(text(
            "SELECT from_status, to_status, reason, ledger_txn_id FROM transfer_events "
            "WHERE account_id = :a ORDER BY id"), {"a": acct.account_id})).mappings().all())


async def balances(router: ShardRouter, acct: OpenedAccount) -> dict[str, Decimal]:
    bal = await router.ledger(acct.shard).balances(acct.account_id)
    return {k: v for k, v in bal.items() if v != 0}


async def wait_transfer(router: ShardRouter, acct: OpenedAccount, statuses: set[str],
                        timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        rows = await transfers(router, acct)
        if rows and rows[0]["status"] in statuses:
            return rows[0]
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.1)


async def closed(bo: Backoffice, workflow_id: str, timeout: float = 10) -> WorkflowExecutionStatus:
    deadline = time.monotonic() + timeout
    while True:
        desc = await bo.client.get_workflow_handle(workflow_id).describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            assert desc.status is not None
            return desc.status
        assert time.monotonic() < deadline, f"{workflow_id} is still running"
        await asyncio.sleep(0.1)


async def untouched_by_audit(router: ShardRouter, acct: OpenedAccount) -> None:
    """The invariants audit finds nothing about this account (the session's shards carry other
    tests' seeds, which it rightly reports: those are not this test's)."""
    mine = await audit_rows_about(router, acct)
    assert not mine, mine


# --- the start step: FAILED with nothing moved ---------------------------------------------------


@pytest.mark.parametrize("direction", ["INCOMING", "OUTGOING"])
async def test_a_start_that_fails_on_a_bug_ends_the_transfer_failed_with_nothing_moved(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
    monkeypatch: pytest.MonkeyPatch, direction: str,
) -> None:
    acct = await funded(router, "1000")
    method = "start_deposit" if direction == "INCOMING" else "start_withdrawal"
    failing(monkeypatch, FundingStore, method, str(acct.account_id), ZeroDivisionError("a bug of ours"))
    r, took = await post(http, acct, "100", direction)
    assert (r.status_code, r.json().get("reason")) == (500, "internal_error"), r.text
    assert "nothing was moved" in r.json()["message"] and "ZeroDivision" not in r.json()["message"]
    assert took < 5, took
    [row] = await transfers(router, acct)
    assert row["status"] == "FAILED" and "ZeroDivisionError" in row["reason"]  # operator's detail
    assert await balances(router, acct) == {"cash": 1000}
    assert [(e["from_status"], e["to_status"], e["ledger_txn_id"]) for e in await events(router, acct)] \
        == [(None, "FAILED", None)]
    assert await closed(backoffice, f"transfer-{row['id']}") == WorkflowExecutionStatus.COMPLETED
    monkeypatch.undo()
    got = (await http.get(f"/v2/transfers/{row['id']}", headers=auth(acct))).json()
    assert got["status"] == "FAILED"
    await untouched_by_audit(router, acct)


async def test_a_start_the_shard_keeps_refusing_ends_failed_after_the_retry_maximum(
    http: httpx.AsyncClient, router: ShardRouter, funding_app: FastAPI, monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = await open_account(router)
    calls: list[int] = []
    failing(monkeypatch, FundingStore, "start_deposit", str(acct.account_id),
            ConnectionResetError("shard went away"), calls=calls)
    with settings(funding_app, transfer_store_retry_s=2.0):
        r, took = await post(http, acct, "100", "INCOMING")
    assert (r.status_code, r.json().get("reason")) == (503, "shard_unavailable"), r.text
    assert took < 5, took
    assert len(calls) > 1  # transient: retried (with backoff) before giving up
    [row] = await transfers(router, acct)
    assert row["status"] == "FAILED"
    assert await balances(router, acct) == {}


async def test_the_api_answers_within_its_deadline_when_the_start_never_returns(
    http: httpx.AsyncClient, router: ShardRouter, funding_app: FastAPI, backoffice: Backoffice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = await open_account(router)
    failing(monkeypatch, FundingStore, "start_deposit", str(acct.account_id), None)
    key = uuid.uuid4().hex
    with settings(funding_app, transfer_accept_timeout_s=1.5, transfer_store_retry_s=4.0):
        r, took = await post(http, acct, "100", "INCOMING", key)
        assert (r.status_code, r.json().get("reason")) == (504, "transfer_pending"), r.text
        assert r.headers.get("Retry-After") and took < 3, took
        # the workflow did not hang either: past the maximum, FAILED with nothing moved
        row = await wait_transfer(router, acct, {"FAILED"})
        # a retry with the same key reaches the same transfer, and says what became of it
        again, _ = await post(http, acct, "100", "INCOMING", key)
    assert (again.status_code, again.json().get("reason")) == (503, "shard_unavailable"), again.text
    assert len(await transfers(router, acct)) == 1 and str(row["id"]) in again.json()["message"]
    assert await balances(router, acct) == {}


async def test_an_amount_too_large_for_the_books_is_refused_at_once_even_past_the_api(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
) -> None:
    acct = await open_account(router)
    # through the API: answered at once, with a code
    r, took = await post(http, acct, "1E+30", "INCOMING")
    assert r.status_code == 422 and r.json().get("reason"), r.text
    assert took < 5, took
    # straight to the workflow (the API's bounds bypassed): the store refuses what it cannot hold
    tid = str(uuid.uuid4())
    inp = TransferWorkflowInput(transfer_id=tid, account_id=str(acct.account_id), shard=acct.shard,
                                direction="INCOMING", amount="1E+30", business_day_s=0.3, poll_s=0.2)
    start = WithStartWorkflowOperation(DepositWorkflow.run, inp, id=f"transfer-{tid}",
                                       task_queue=backoffice_shard_queue(acct.shard),
                                       id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        await asyncio.wait_for(backoffice.client.execute_update_with_start_workflow(
            TransferFlow.accepted, start_workflow_operation=start), 10)
    assert not isinstance(refused.value, TimeoutError), "the deposit hangs"
    cause = getattr(refused.value, "cause", None)
    assert getattr(cause, "type", None) == "amount_out_of_range", refused.value
    assert time.monotonic() - started < 5
    assert await closed(backoffice, f"transfer-{tid}") != WorkflowExecutionStatus.RUNNING
    assert await transfers(router, acct) == [] and await balances(router, acct) == {}


# --- after money moved: recorded for an operator, the workflow fails, money stays ---------------


async def test_a_settlement_that_fails_on_a_bug_leaves_the_credit_and_tells_an_operator(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice, monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = await open_account(router)
    await backoffice.bank.instruct(str(acct.account_id), "settle")
    failing(monkeypatch, FundingStore, "settle_deposit", str(acct.account_id), ValueError("a bug in settle"))
    r, _ = await post(http, acct, "250", "INCOMING")
    assert r.status_code == 200 and r.json()["status"] == "PENDING", r.text
    tid = r.json()["id"]
    assert await closed(backoffice, f"transfer-{tid}") == WorkflowExecutionStatus.FAILED
    [row] = await transfers(router, acct)
    assert row["status"] == "PENDING"  # the provisional credit stays: never dropped on a guess
    assert await balances(router, acct) == {"cash": 250}
    flagged = (await events(router, acct))[-1]
    assert flagged["to_status"] == "PENDING" and "needs an operator" in flagged["reason"]
    assert "settle_deposit" in flagged["reason"] and "ValueError" in flagged["reason"]
    await untouched_by_audit(router, acct)
    # the operator fixes the cause and runs the workflow again from its start (docs/operations.md:
    # `temporal workflow reset --type FirstWorkflowTask`): every step is idempotent, it settles once
    monkeypatch.undo()
    await reset_to_first_task(backoffice, f"transfer-{tid}")
    assert (await wait_transfer(router, acct, {"COMPLETE"}))["status"] == "COMPLETE"
    assert await balances(router, acct) == {"cash": 250}
    async with router.engine(acct.shard).connect() as conn:
        kinds = (await conn.execute(text(
            "SELECT kind FROM ledger_transactions WHERE id LIKE :p ORDER BY created_at"),
            {"p": f"transfer:{tid}:%"})).scalars().all()
    assert kinds == ["deposit", "deposit_settle"]
    await untouched_by_audit(router, acct)


async def reset_to_first_task(bo: Backoffice, workflow_id: str) -> None:
    """What ``temporal workflow reset --workflow-id ID --type FirstWorkflowTask`` does."""
    history = await bo.client.get_workflow_handle(workflow_id).fetch_history()
    first = next(e.event_id for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    await bo.client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=bo.client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        reason="test: fixed the cause", workflow_task_finish_event_id=first,
        request_id=str(uuid.uuid4())))


async def test_a_bank_out_of_reach_past_the_maximum_is_recorded_and_the_hold_kept(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice, funding_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = await funded(router, "1000")
    calls: list[int] = []
    failing(monkeypatch, AchBank, "outcome", str(acct.account_id), ConnectionResetError("bank down"),
            calls=calls)
    with settings(funding_app, transfer_step_retry_s=2.0):
        r, _ = await post(http, acct, "300", "OUTGOING")
    assert r.status_code == 200 and r.json()["status"] == "PENDING", r.text
    tid = r.json()["id"]
    assert await closed(backoffice, f"transfer-{tid}", timeout=20) == WorkflowExecutionStatus.FAILED
    assert len(calls) > 1
    [row] = await transfers(router, acct)
    assert row["status"] == "PENDING"
    assert await balances(router, acct) == {"cash": 700, "cash_held": 300}  # held, not lost
    flagged = (await events(router, acct))[-1]
    assert "bank_outcome" in flagged["reason"] and "needs an operator" in flagged["reason"]
    await untouched_by_audit(router, acct)
