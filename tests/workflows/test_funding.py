"""ACH funding end to end: POST /v2/transfers -> Deposit/Withdrawal workflows -> simulated bank
(a business day simulated as 0.3 s), on the real Temporal dev server and Postgres shards."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import httpx
from sqlalchemy import text

from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from tests.workflows.conftest import Backoffice
from tests.workflows.settlement_helpers import trade


def auth(acct: OpenedAccount) -> dict[str, str]:
    return {"APCA-API-KEY-ID": acct.credentials.key_id, "APCA-API-SECRET-KEY": acct.credentials.secret_key}


async def wait_status(http: httpx.AsyncClient, acct: OpenedAccount, tid: str, statuses: set[str],
                      timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(f"/v2/transfers/{tid}", headers=auth(acct))
        assert r.status_code == 200, r.text
        if r.json()["status"] in statuses:
            return r.json()
        assert time.monotonic() < deadline, r.json()
        await asyncio.sleep(0.1)


async def balances(router: ShardRouter, acct: OpenedAccount) -> dict[str, Decimal]:
    bal = await router.ledger(acct.shard).balances(acct.account_id)
    return {k: v for k, v in bal.items() if v != 0}


async def test_deposit_credited_at_once_then_settles(http: httpx.AsyncClient, router: ShardRouter) -> None:
    acct = await open_account(router)
    r = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "2500.00", "direction": "INCOMING"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "PENDING" and body["direction"] == "INCOMING" and body["amount"] == "2500"
    assert (await balances(router, acct))["cash"] == 2500  # provisional credit, at once
    done = await wait_status(http, acct, body["id"], {"COMPLETE", "RETURNED"})
    assert done["status"] == "COMPLETE"
    listed = (await http.get("/v2/transfers", headers=auth(acct))).json()
    assert [t["id"] for t in listed] == [body["id"]]
    assert (await router.ledger(acct.shard).reconcile()).ok


async def test_ach_bounce_after_funds_used(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
) -> None:
    acct = await open_account(router, account_type="instant")  # provisional cash is spendable
    await backoffice.bank.instruct(str(acct.account_id), "hold")  # the ACH has not come back yet
    r = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "1000", "direction": "INCOMING"})
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    # the customer spends the provisional money: 5 x 150 bought and filled
    from datetime import date

    await trade(router, acct, "AAPL", "buy", 5, "150", date(2026, 11, 25))
    assert (await balances(router, acct))["cash"] == 250
    await backoffice.bank.instruct(str(acct.account_id), "return")
    done = await wait_status(http, acct, tid, {"RETURNED", "COMPLETE"})
    assert done["status"] == "RETURNED"
    bal = await balances(router, acct)
    assert bal["cash"] == Decimal("-750")  # negative: the customer owes the shortfall
    assert bal["shares_unsettled:AAPL"] == 5
    engine = router.engine(acct.shard)
    async with engine.connect() as conn:
        blocked = (await conn.execute(
            text("SELECT trading_blocked, blocked_reason FROM accounts WHERE id = :a"),
            {"a": acct.account_id})).one()
        shortfall = (await conn.execute(text("SELECT amount FROM shortfalls WHERE transfer_id = :t"),
                                        {"t": uuid.UUID(tid)})).scalar_one()
        kinds = (await conn.execute(text(
            "SELECT kind FROM ledger_transactions WHERE id LIKE :p ORDER BY created_at"),
            {"p": f"transfer:{tid}:%"})).scalars().all()
    # not blocked: an open shortfall restricts the account to closing orders (selling may
    # cover it); see tests/workflows/test_money_across_days.py
    assert not blocked.trading_blocked
    assert shortfall == 750
    assert kinds == ["deposit", "deposit_bounce"]  # the reversal is new entries, never an edit
    ledger = router.ledger(acct.shard)
    assert (await ledger.reconcile()).ok
    assert all(v == 0 for v in (await ledger.totals_by_currency()).values())


async def test_withdrawal_success_failure_and_limits(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"w:{acct.account_id}:d", acct.account_id, "1000")
    await ledger.settle_deposit(f"w:{acct.account_id}:s", acct.account_id, "1000")
    ok = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "300", "direction": "OUTGOING"})
    assert ok.status_code == 200, ok.text
    assert (await balances(router, acct)) == {"cash": 700, "cash_held": 300}
    assert (await wait_status(http, acct, ok.json()["id"], {"COMPLETE", "FAILED"}))["status"] == "COMPLETE"
    assert await balances(router, acct) == {"cash": 700}
    # a provisional (unsettled) deposit is not withdrawable
    await backoffice.bank.instruct(str(acct.account_id), "hold")
    dep = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "500", "direction": "INCOMING"})
    assert dep.status_code == 200
    too_much = await http.post("/v2/transfers", headers=auth(acct),
                               json={"amount": "800", "direction": "OUTGOING"})
    assert too_much.status_code == 403 and too_much.json()["reason"] == "insufficient_withdrawable_cash"
    # the bank fails this one: the hold comes back
    await backoffice.bank.instruct(str(acct.account_id), "return")
    fail = await http.post("/v2/transfers", headers=auth(acct),
                          json={"amount": "200", "direction": "OUTGOING"})
    assert fail.status_code == 200, fail.text
    assert (await wait_status(http, acct, fail.json()["id"], {"COMPLETE", "FAILED"}))["status"] == "FAILED"
    await wait_status(http, acct, dep.json()["id"], {"RETURNED"})
    assert await balances(router, acct) == {"cash": 700}
    assert (await ledger.reconcile()).ok
    # idempotent: the same Idempotency-Key returns the same transfer, a different body is refused
    key = {"Idempotency-Key": uuid.uuid4().hex, **auth(acct)}
    await backoffice.bank.instruct(str(acct.account_id), "settle")
    a = await http.post("/v2/transfers", headers=key, json={"amount": "10", "direction": "OUTGOING"})
    b = await http.post("/v2/transfers", headers=key, json={"amount": "10", "direction": "OUTGOING"})
    assert a.status_code == b.status_code == 200 and a.json()["id"] == b.json()["id"]
    c = await http.post("/v2/transfers", headers=key, json={"amount": "11", "direction": "OUTGOING"})
    assert c.status_code == 422
