"""Records back-office workflow histories (deposits, withdrawals, settlement) for the replay
test (``test_recorded_histories.py``), as ``record_histories.py`` does for orders.

Not collected by the suite (its name does not start with ``test_``). Run it explicitly, against
the code whose histories you want to keep::

    .venv/bin/pytest -q tests/workflows/record_backoffice_histories.py

Each scenario writes ``tests/workflows/histories/<name>.json``; commit them: every later version
of these workflows must replay them unchanged. Re-record only the scenarios of the change at hand
(``-k``): the older files are what workflows started under older code look like.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from temporalio.client import Client

from db.accounts import open_account
from db.funding import FundingStore
from db.router import ShardRouter
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from tests.workflows.conftest import Backoffice
from tests.workflows.settlement_helpers import funded, trade
from workflows.settlement import SettlementInput, SettlementWorkflow

HERE = Path(__file__).parent / "histories"


async def save(client: Client, name: str, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    await handle.result()
    history = await handle.fetch_history()
    HERE.mkdir(exist_ok=True)
    (HERE / f"{name}.json").write_text(history.to_json())


@pytest.mark.parametrize("name", ["deposit_settled", "deposit_settled_with_bounded_steps"])
async def test_record_deposit_settled(http: httpx.AsyncClient, router: ShardRouter,
                                      backoffice: Backoffice, name: str) -> None:
    """``deposit_settled`` was recorded before the bounded steps, the other one after (the
    transfer-bounded-failures patch); re-record only the latter."""
    acct = await open_account(router)
    await backoffice.bank.instruct(str(acct.account_id), "settle")
    r = await http.post("/v2/transfers", json={"amount": "250.00", "direction": "INCOMING"}, headers={
        "APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key})
    assert r.status_code == 200, r.text
    await save(backoffice.client, name, f"transfer-{r.json()['id']}")


async def test_record_withdrawal_failed_at_the_bank(http: httpx.AsyncClient, router: ShardRouter,
                                                    backoffice: Backoffice) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"rec:{acct.account_id}:d", acct.account_id, "1000")
    await ledger.settle_deposit(f"rec:{acct.account_id}:s", acct.account_id, "1000")
    await backoffice.bank.instruct(str(acct.account_id), "return")
    r = await http.post("/v2/transfers", json={"amount": "300", "direction": "OUTGOING"}, headers={
        "APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key})
    assert r.status_code == 200, r.text
    await save(backoffice.client, "withdrawal_failed_at_the_bank", f"transfer-{r.json()['id']}")


@pytest.mark.parametrize("name", ["settlement_of_a_day", "settlement_of_a_day_bounded"])
async def test_record_settlement_of_a_day(router: ShardRouter, backoffice: Backoffice,
                                          name: str) -> None:
    """``settlement_of_a_day`` was recorded before the bounded retries, the other after."""
    acct = await funded(router)
    await trade(router, acct, "AAPL", "buy", 4, "100", date(2026, 11, 4))
    wid = f"settle-record-{uuid.uuid4().hex[:6]}"
    await backoffice.client.start_workflow(
        SettlementWorkflow.run, SettlementInput(shards=backoffice.settings.shard_count,
                                                date="2026-11-04", reconcile=True),
        id=wid, task_queue=BACKOFFICE_TASK_QUEUE)
    await save(backoffice.client, name, wid)


async def test_record_deposit_failed_at_start(http: httpx.AsyncClient, router: ShardRouter,
                                              backoffice: Backoffice,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    acct = await open_account(router)

    async def broken(self: FundingStore, *args: object) -> None:
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(FundingStore, "start_deposit", broken)
    r = await http.post("/v2/transfers", json={"amount": "250.00", "direction": "INCOMING"}, headers={
        "APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key})
    assert r.status_code == 500, r.text
    async with router.engine(acct.shard).connect() as conn:
        tid = (await conn.execute(text("SELECT id FROM transfers WHERE account_id = :a"),
                                  {"a": acct.account_id})).scalar_one()
    await save(backoffice.client, "deposit_failed_at_start", f"transfer-{tid}")
