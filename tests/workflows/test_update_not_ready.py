"""A customer's cancel or replace is a workflow update. When the workflow task that carries it
fails (a race the server resolves by failing the task: new events arrived while the order
completed with the replace; or a worker lost mid-task), the server drops the update and answers
``WorkflowNotReady``. The API sends the same update again (the store records a replace once per
replacement id) until it is answered, within its deadline, instead of answering 500 and leaving
the books and the workflow apart (the replace recorded, the workflow never told)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.test_trailing_stop import patch, wait_for
from workflows.order_replace import OrderReplaces


async def test_a_replace_whose_workflow_task_failed_is_sent_again_and_answered(
        stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    await stack.set_quote("GOOGL", "100.00", "100.10")
    acct = await stack.account("2000")
    order = await place(stack, acct, symbol="GOOGL", qty="10", side="buy", type="trailing_stop",
                        time_in_force="day", trail_percent="1")
    oid = order["id"]
    await wait_for(stack, acct, oid, "hwm", lambda o: o["hwm"] == "100.1")
    real = OrderReplaces._record_replace
    failed: list[str] = []

    async def fails_once(self: Any, inp: Any) -> Any:
        if self._inp.order_id == oid and not failed:
            failed.append(inp.new_order_id)
            raise RuntimeError("the workflow task fails here, once")  # not a business error
        return await real(self, inp)

    monkeypatch.setattr(OrderReplaces, "_record_replace", fails_once)
    r = await patch(stack, acct, oid, {"qty": "5"})
    assert r.status_code == 200, r.text
    new = r.json()
    assert failed and new["qty"] == "5" and new["replaces"] == oid
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{new['id']}", headers=headers(acct))).status_code == 204
    await wait_order(stack, acct, new["id"], {"canceled"})
    assert (await wait_order(stack, acct, oid, {"replaced"}))["replaced_by"] == new["id"]
    assert "cash_held" not in await balances(stack, acct)
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)
