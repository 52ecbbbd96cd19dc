"""A customer's cancel or replace is a workflow update. When the workflow task that carries it
fails (a race the server resolves by failing the task: new events arrived while the order
completed with the replace; or a worker lost mid-task), the server drops the update and answers
``WorkflowNotReady``. The API sends the same update again (the store records a replace once per
replacement id) until it is answered, within its deadline, instead of answering 500 and leaving
the books and the workflow apart (the replace recorded, the workflow never told)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as Any_
from temporalio.api.common.v1 import GrpcStatus
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from sherwood.faults import update_dropped
from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place, started, wait_order
from tests.workflows.test_trailing_stop import patch, wait_for
from workflows.order_replace import OrderReplaces


async def waiting_trailing_buy(stack: TradingStack) -> tuple[Any, str]:
    """An account's trailing buy of 10 GOOGL, watching (its hwm set)."""
    await stack.set_quote("GOOGL", "100.00", "100.10")
    acct = await stack.account("2000")
    order = await place(stack, acct, symbol="GOOGL", qty="10", side="buy", type="trailing_stop",
                        time_in_force="day", trail_percent="1")
    await wait_for(stack, acct, order["id"], "hwm", lambda o: o["hwm"] == "100.1")
    return acct, order["id"]


async def replaced_then_canceled(stack: TradingStack, acct: Any, oid: str, r: Any) -> None:
    """``r`` answered the replace of ``oid`` by a 5-share order; canceling it leaves the books
    as they were: nothing held, reconciled, no audit finding."""
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["qty"] == "5" and new["replaces"] == oid
    # canceled once its own workflow is started (a cancel whose workflow task was refused after
    # it ran: test_a_cancel_whose_update_was_carried_out_then_dropped_is_answered_canceled)
    await started(stack, new["id"])
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{new['id']}", headers=headers(acct))
    assert r.status_code == 204, r.text
    await wait_order(stack, acct, new["id"], {"canceled"})
    assert (await wait_order(stack, acct, oid, {"replaced"}))["replaced_by"] == new["id"]
    await books_untouched(stack, acct)


async def books_untouched(stack: TradingStack, acct: Any) -> None:
    assert "cash_held" not in await balances(stack, acct)
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)


async def test_a_replace_whose_workflow_task_failed_is_sent_again_and_answered(
        stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    acct, oid = await waiting_trailing_buy(stack)
    real = OrderReplaces._record_replace
    failed: list[str] = []

    async def fails_once(self: Any, inp: Any) -> Any:
        if self._inp.order_id == oid and not failed:
            failed.append(inp.new_order_id)
            raise RuntimeError("the workflow task fails here, once")  # not a business error
        return await real(self, inp)

    monkeypatch.setattr(OrderReplaces, "_record_replace", fails_once)
    await replaced_then_canceled(stack, acct, oid, await patch(stack, acct, oid, {"qty": "5"}))
    assert failed


def not_ready() -> RPCError:
    """What the server answers when it dropped an update with its failed workflow task."""
    detail = Any_(type_url="type.googleapis.com/temporal.api.errordetails.v1.WorkflowNotReadyFailure",
                  value=WorkflowNotReadyFailure().SerializeToString())
    status = GrpcStatus(code=9, message="Unable to perform workflow execution update due to "
                        "unexpected workflow task failure.", details=[detail])
    return RPCError(status.message, RPCStatusCode.FAILED_PRECONDITION, status.SerializeToString())


def test_only_a_dropped_update_is_sent_again() -> None:
    assert update_dropped(not_ready())
    assert not update_dropped(RPCError("gone", RPCStatusCode.NOT_FOUND, b""))
    assert not update_dropped(RPCError("other precondition", RPCStatusCode.FAILED_PRECONDITION,
                                       GrpcStatus(code=9).SerializeToString()))
    assert not update_dropped(RuntimeError("not an RPC error"))


@pytest.mark.parametrize("what", ["replace", "cancel"])
async def test_an_update_the_server_dropped_is_sent_again_and_answered(
        stack: TradingStack, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """The server drops the update the first time (the answer it gives when the workflow task
    carrying it failed on completion: in the wild, new events arrived while it completed). The
    API sends the same update again and answers the customer; before, it answered 500."""
    acct, oid = await waiting_trailing_buy(stack)
    real = WorkflowHandle.execute_update
    dropped: list[str] = []

    async def dropped_once(self: WorkflowHandle[Any, Any], update: Any, *args: Any, **kw: Any) -> Any:
        if self.id == oid and not dropped:
            dropped.append(self.id)
            raise not_ready()
        return await real(self, update, *args, **kw)

    monkeypatch.setattr(WorkflowHandle, "execute_update", dropped_once)
    if what == "cancel":
        async with stack.http() as http:
            r = await http.delete(f"/v2/orders/{oid}", headers=headers(acct))
        assert r.status_code == 204 and dropped, r.text
        await wait_order(stack, acct, oid, {"canceled"})
        await books_untouched(stack, acct)
    else:
        await replaced_then_canceled(stack, acct, oid, await patch(stack, acct, oid, {"qty": "5"}))
    assert dropped


async def test_a_cancel_whose_update_was_carried_out_then_dropped_is_answered_canceled(
        stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workflow task carrying the cancel ran it (the order CANCELED, its hold released, the
    workflow then ending) but its completion was refused, so the server dropped the update; the
    update sent again finds the workflow ended (NOT_FOUND). Seen in CI: a trailing stop's
    replacement, canceled right after its workflow started. The customer asked for a cancel and
    the order is canceled: 204, not 422 "no longer open"."""
    acct, oid = await waiting_trailing_buy(stack)
    real = WorkflowHandle.execute_update
    ran: list[str] = []

    async def carried_out_then_gone(self: WorkflowHandle[Any, Any], update: Any, *args: Any,
                                    **kw: Any) -> Any:
        if self.id == oid and not ran:
            ran.append(self.id)
            await real(self, update, *args, **kw)  # the cancel is carried out ...
            await self.result()  # ... the workflow ends ...
            raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")
        return await real(self, update, *args, **kw)

    monkeypatch.setattr(WorkflowHandle, "execute_update", carried_out_then_gone)
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{oid}", headers=headers(acct))
    assert r.status_code == 204 and ran, r.text
    assert (await wait_order(stack, acct, oid, {"canceled"}))["status"] == "canceled"
    await books_untouched(stack, acct)
