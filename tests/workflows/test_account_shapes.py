"""Alpaca's account shape on the real stack (API + back office): ``pending_transfer_in/out``
are the account's /v2/transfers still on their way; ``last_equity`` is the previous session's
closing equity, snapshotted by the back office (``equity`` until there is one)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from domain import calendar
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from tests.api.test_positions import trade
from tests.stack import served
from tests.workflows.conftest import Backoffice
from tests.workflows.test_funding import auth, wait_status


async def alpaca_py_account(app: FastAPI, acct: OpenedAccount) -> Any:
    """``TradingClient.get_account`` (alpaca-py, unchanged) against ``app`` on a loopback port."""
    from alpaca.trading.client import TradingClient
    from alpaca.trading.models import TradeAccount

    async with served(app) as url:
        tc = TradingClient(acct.credentials.key_id, acct.credentials.secret_key, paper=True,
                           url_override=url)
        account = await asyncio.to_thread(tc.get_account)
    assert isinstance(account, TradeAccount)
    return account


async def test_pending_transfers_show_in_the_account(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice, funding_app: FastAPI,
) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"pt:{acct.account_id}:d", acct.account_id, "1000")
    await ledger.settle_deposit(f"pt:{acct.account_id}:s", acct.account_id, "1000")
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    assert (account["pending_transfer_in"], account["pending_transfer_out"]) == ("0.00", "0.00")

    await backoffice.bank.instruct(str(acct.account_id), "hold")  # the bank keeps them pending
    dep = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "500.25", "direction": "INCOMING"})
    out = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "200", "direction": "OUTGOING"})
    assert dep.status_code == 200 and out.status_code == 200, (dep.text, out.text)
    await wait_status(http, acct, dep.json()["id"], {"PENDING"})
    await wait_status(http, acct, out.json()["id"], {"PENDING"})
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    assert (account["pending_transfer_in"], account["pending_transfer_out"]) == ("500.25", "200.00")
    seen = await alpaca_py_account(funding_app, acct)  # and as the customer's client reads them
    assert (seen.pending_transfer_in, seen.pending_transfer_out) == ("500.25", "200.00")

    await backoffice.bank.instruct(str(acct.account_id), "settle")
    await wait_status(http, acct, dep.json()["id"], {"COMPLETE"})
    await wait_status(http, acct, out.json()["id"], {"COMPLETE"})
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    assert (account["pending_transfer_in"], account["pending_transfer_out"]) == ("0.00", "0.00")


def previous_session(today: date) -> date:
    d = today - timedelta(days=1)
    while not calendar.is_session(d):
        d -= timedelta(days=1)
    return d


async def snapshot(backoffice: Backoffice, business_date: str | None) -> int:
    """Run the back office's EquitySnapshot workflow, its session's close being now (a simulated
    session); how many snapshots it wrote."""
    from workflows.equity import EquityRunInput, EquitySnapshotWorkflow

    result = await backoffice.client.execute_workflow(
        EquitySnapshotWorkflow.run, EquityRunInput(backoffice.settings.shard_count, business_date,
                                                   datetime.now(UTC).isoformat()),
        id=f"equity-test-{uuid.uuid4()}", task_queue=BACKOFFICE_TASK_QUEUE)
    return sum(s.written for s in result.shards)


async def test_last_equity_is_the_previous_sessions_closing_snapshot(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice, funding_app: FastAPI,
) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"le:{acct.account_id}:d", acct.account_id, "5000")
    await ledger.settle_deposit(f"le:{acct.account_id}:s", acct.account_id, "5000")
    await trade(router, acct, "NFLX", "buy", 10, "100.00", [(10, "100.00")])
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    # no snapshot yet: last_equity is the equity
    assert account["last_equity"] == account["equity"]

    prev = previous_session(calendar.trade_date(datetime.now(UTC)))
    assert await snapshot(backoffice, prev.isoformat()) >= 1
    assert await snapshot(backoffice, prev.isoformat()) == 0  # once per date
    # cash 4000 + 10 NFLX at the shard's last fill (100)
    async with router.engine(acct.shard).connect() as conn:
        from db.equity import last_equity

        assert await last_equity(conn, acct.account_id, prev + timedelta(days=1)) == 5000

    await ledger.deposit(f"le:{acct.account_id}:d2", acct.account_id, "250.5")
    await snapshot(backoffice, None)  # today's close (if today is a session) is not "previous"
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    assert account["last_equity"] == "5000.00"
    assert account["equity"] != account["last_equity"]
    seen = await alpaca_py_account(funding_app, acct)
    assert (seen.last_equity, seen.equity) == ("5000.00", account["equity"])
