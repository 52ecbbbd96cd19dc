"""Corporate actions on the real stack (back office + API): the announcements feed (the
simulator's file), the CorporateActions workflow, the ledger, positions and activities.

Must hold: a dividend credits exactly qty x rate to holders at the entitlement instant and
nobody else, once even when the workflow runs again; a 2:1 split doubles the quantity, halves the
average price, keeps cost basis and market value, leaves the books balanced; a 1-for-3 reverse
split of 10 shares pays cash in lieu for the third of a share (one old share at the close)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
from fastapi import FastAPI

from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from simulators.announcements import FileAnnouncements
from tests.api.test_positions import settle_shares, trade
from tests.db.audit_books import audit_rows_about
from tests.stack import served
from tests.workflows.conftest import Backoffice
from tests.workflows.test_funding import auth


async def run(backoffice: Backoffice, day: date, entitled_at: datetime | None = None) -> object:
    from workflows.corporate_actions import CorporateActionsInput, CorporateActionsWorkflow

    return await backoffice.client.execute_workflow(
        CorporateActionsWorkflow.run, CorporateActionsInput(
            backoffice.settings.shard_count, day.isoformat(),
            entitled_at.isoformat() if entitled_at else None, split_wait_s=30),
        id=f"ca-test-{uuid.uuid4()}", task_queue=BACKOFFICE_TASK_QUEUE)


async def holder(router: ShardRouter, symbol: str, qty: int, price: str) -> OpenedAccount:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"ca:{acct.account_id}:d", acct.account_id, "100000")
    await ledger.settle_deposit(f"ca:{acct.account_id}:s", acct.account_id, "100000")
    await trade(router, acct, symbol, "buy", qty, price, [(qty, price)])
    await settle_shares(router, acct, symbol, qty)
    return acct


async def cash(http: httpx.AsyncClient, acct: OpenedAccount) -> Decimal:
    return Decimal((await http.get("/v2/account", headers=auth(acct))).json()["cash"])


async def test_a_dividend_pays_holders_at_the_entitlement_once(
    http: httpx.AsyncClient, funding_app: FastAPI, router: ShardRouter, backoffice: Backoffice,
) -> None:
    pay = date(2031, 3, 14)  # a date no other test runs (the feed file is the session's)
    a = await holder(router, "COST", 10, "100.00")
    late = await open_account(router)  # buys after the entitlement instant: not entitled
    entitled_at = datetime.now(UTC)
    ledger = router.ledger(late.shard)
    await ledger.deposit(f"ca:{late.account_id}:d", late.account_id, "5000")
    await ledger.settle_deposit(f"ca:{late.account_id}:s", late.account_id, "5000")
    await trade(router, late, "COST", "buy", 5, "100.00", [(5, "100.00")])
    feed = FileAnnouncements(backoffice.settings.announcements_file_resolved())
    aid = f"div-COST-{uuid.uuid4().hex[:8]}"
    feed.add({"id": aid, "ca_type": "dividend", "symbol": "COST", "ex_date": "2031-03-10",
              "record_date": "2031-03-10", "payable_date": pay.isoformat(), "cash": Decimal("0.24")})
    feed.add({"id": "bad-one", "ca_type": "merger", "symbol": "COST", "ex_date": pay.isoformat()})
    before_a, before_late = await cash(http, a), await cash(http, late)

    result = await run(backoffice, pay, entitled_at)
    assert any("bad-one" in r and "unsupported_corporate_action" in r
               for r in result.refused)  # type: ignore[attr-defined]
    assert await cash(http, a) == before_a + Decimal("2.40")
    assert await cash(http, late) == before_late
    await run(backoffice, pay, entitled_at)  # again (a rerun, or a replay): nobody paid twice
    await run(backoffice, pay, entitled_at)
    assert await cash(http, a) == before_a + Decimal("2.40")

    acts = (await http.get("/v2/account/activities", headers=auth(a),
                           params={"activity_types": "DIV"})).json()
    assert [(x["activity_type"], x["net_amount"], x["symbol"], x["qty"], x["per_share_amount"])
            for x in acts] == [("DIV", "2.40", "COST", "10", "0.24")]
    got = (await http.get("/v2/corporate_actions/announcements", headers=auth(a), params={
        "ca_types": "dividend", "since": "2031-03-01", "until": "2031-03-31", "symbol": "COST"})).json()
    assert [(g["corporate_action_id"], g["ca_sub_type"], g["cash"]) for g in got] == [(aid, "cash", "0.24")]
    # alpaca-py reads the announcements unchanged
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import CorporateActionType
    from alpaca.trading.requests import GetCorporateAnnouncementsRequest

    async with served(funding_app) as url:
        tc = TradingClient(a.credentials.key_id, a.credentials.secret_key, url_override=url)
        anns = await asyncio.to_thread(tc.get_corporate_announcements, GetCorporateAnnouncementsRequest(
            ca_types=[CorporateActionType.DIVIDEND], since=date(2031, 3, 1), until=date(2031, 3, 31),
            symbol="COST"))
    assert [(x.corporate_action_id, x.cash) for x in anns] == [(aid, 0.24)]  # type: ignore[union-attr]
    assert await audit_rows_about(router, a) == []


async def test_forward_and_reverse_splits(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
) -> None:
    ex = date(2031, 4, 15)
    fwd = await holder(router, "SBUX", 10, "100.00")
    rev = await holder(router, "CSCO", 10, "90.00")
    feed = FileAnnouncements(backoffice.settings.announcements_file_resolved())
    feed.add({"id": f"split-SBUX-{uuid.uuid4().hex[:8]}", "ca_type": "split", "symbol": "SBUX",
              "ex_date": ex.isoformat(), "old_rate": "1", "new_rate": "2"})
    feed.add({"id": f"rsplit-CSCO-{uuid.uuid4().hex[:8]}", "ca_type": "split", "symbol": "CSCO",
              "ex_date": ex.isoformat(), "old_rate": "3", "new_rate": "1"})
    before = (await http.get("/v2/positions/SBUX", headers=auth(fwd))).json()
    cash_before = await cash(http, rev)

    await run(backoffice, ex)
    after = (await http.get("/v2/positions/SBUX", headers=auth(fwd))).json()
    assert (before["qty"], before["avg_entry_price"], before["cost_basis"]) == ("10", "100", "1000")
    assert (after["qty"], after["avg_entry_price"], after["cost_basis"]) == ("20", "50", "1000")
    if before["price_source"] == after["price_source"] == "last_fill":
        assert after["market_value"] == before["market_value"] == "1000"

    r = (await http.get("/v2/positions/CSCO", headers=auth(rev))).json()
    # the last close the shard knows is its last fill of CSCO (90, no bars): one old share's worth
    assert (r["qty"], r["avg_entry_price"], r["cost_basis"]) == ("3", "270", "810")
    assert await cash(http, rev) == cash_before + Decimal("90.00")
    await run(backoffice, ex)  # once
    assert (await http.get("/v2/positions/CSCO", headers=auth(rev))).json()["qty"] == "3"
    acts = (await http.get("/v2/account/activities", headers=auth(rev),
                           params={"activity_types": "SPLIT"})).json()
    assert [(x["symbol"], x["qty"], x["net_amount"]) for x in acts] == [("CSCO", "3", "90.00")]
    assert await audit_rows_about(router, fwd) == []
    assert await audit_rows_about(router, rev) == []


async def test_a_symbol_change_moves_the_position_with_its_cost_basis(
    http: httpx.AsyncClient, router: ShardRouter, backoffice: Backoffice,
) -> None:
    ex = date(2031, 5, 20)
    acct = await holder(router, "PYPL", 10, "50.00")
    feed = FileAnnouncements(backoffice.settings.announcements_file_resolved())
    feed.add({"id": f"symchg-PYPL-{uuid.uuid4().hex[:8]}", "ca_type": "symbol_change",
              "symbol": "PYPL", "new_symbol": "PYPL.B", "ex_date": ex.isoformat()})
    await run(backoffice, ex)
    await run(backoffice, ex)  # once
    assert (await http.get("/v2/positions/PYPL", headers=auth(acct))).status_code == 404
    pos = (await http.get("/v2/positions/PYPL.B", headers=auth(acct))).json()
    assert (pos["symbol"], pos["qty"], pos["avg_entry_price"], pos["cost_basis"]) == (
        "PYPL.B", "10", "50", "500")
    listed = (await http.get("/v2/positions", headers=auth(acct))).json()
    assert [p["symbol"] for p in listed] == ["PYPL.B"]
    acts = (await http.get("/v2/account/activities", headers=auth(acct),
                           params={"activity_types": "REORG"})).json()
    assert [(x["symbol"], x["qty"], x["net_amount"]) for x in acts] == [("PYPL.B", "10", "0.00")]
    assert await audit_rows_about(router, acct) == []
