"""Alpaca's account shape on the real stack (API + back office): ``pending_transfer_in/out``
are the account's /v2/transfers still on their way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from db.accounts import open_account
from db.router import ShardRouter
from tests.workflows.conftest import Backoffice
from tests.workflows.test_funding import auth, wait_status


@pytest.fixture(scope="module")
async def app(backoffice: Backoffice) -> AsyncIterator[FastAPI]:
    application = create_app(backoffice.settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sherwood.test", timeout=30) as c:
        yield c


async def test_pending_transfers_show_in_the_account(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
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

    await backoffice.bank.instruct(str(acct.account_id), "settle")
    await wait_status(http, acct, dep.json()["id"], {"COMPLETE"})
    await wait_status(http, acct, out.json()["id"], {"COMPLETE"})
    account = (await http.get("/v2/account", headers=auth(acct))).json()
    assert (account["pending_transfer_in"], account["pending_transfer_out"]) == ("0.00", "0.00")
