"""Shared helpers of the settlement tests: funded accounts, orders booked straight through the
order store (dated by the venue's TransactTime), settlement runs, balances."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text
from temporalio.common import WorkflowIDReusePolicy

from db.accounts import OpenedAccount, open_account
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.ledger import Entry, LedgerTxn, customer, house
from domain.orders import AcceptOrderInput, OrderState, parse_order_request
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from tests.venue_reports import fix_report
from tests.workflows.conftest import Backoffice
from workflows.settlement import SettlementInput, SettlementResult, SettlementWorkflow


async def funded(router: ShardRouter, cash: str = "100000", *, shard_not: int | None = None) -> OpenedAccount:
    for _ in range(20):
        acct = await open_account(router)
        if shard_not is None or acct.shard != shard_not:
            break
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"dep:{acct.account_id}", acct.account_id, cash)
    await ledger.settle_deposit(f"dset:{acct.account_id}", acct.account_id, cash)
    return acct


async def give_shares(router: ShardRouter, acct: OpenedAccount, symbol: str, qty: int) -> None:
    """Shares delivered in from custody (an ACATS transfer, say): settled, sellable."""
    txn = LedgerTxn.build(f"acats:{acct.account_id}:{symbol}", "acats_in", [
        Entry.of(house(f"custody:{symbol}"), -qty),
        Entry.of(customer(acct.account_id, f"shares:{symbol}"), qty)],
        account_id=acct.account_id)
    await router.ledger(acct.shard).post(txn)


async def trade(router: ShardRouter, acct: OpenedAccount, symbol: str, side: str, qty: int, px: str,
                trade_date: date, *, venue: str = "MM1") -> list[str]:
    """Book one filled limit order (two fills) directly on the shard, dated ``trade_date``."""
    # the venue executes it on trade_date (its TransactTime, New York afternoon); the order
    # store's clock says it is then
    at = datetime.combine(trade_date, time(15, 0), ZoneInfo("America/New_York")).astimezone(ZoneInfo("UTC"))
    store = OrderStore(router.engine(acct.shard), clock=lambda: at)
    oid = str(uuid.uuid4())
    req = {"symbol": symbol, "side": side, "type": "limit", "time_in_force": "gtc", "qty": str(qty),
           "limit_price": px}
    inp = AcceptOrderInput(oid, str(acct.account_id), req, parse_order_request(req).hash(), "customer",
                           "0.05")
    snap = await store.accept(inp, Quotes(ask=Decimal(px)))
    assert snap.state == "FUNDS_HELD", snap
    await store.transition(oid, OrderState.ROUTED, reason="test", venue=venue)
    first = qty // 2
    execs = []
    for n, (q, cum) in enumerate(((first, first), (qty - first, qty))):
        eid = f"{oid[:8]}F{n}"
        execs.append(eid)
        await store.apply_report(fix_report(
            venue, eid, "8", oid, oid, "F", "2" if cum == qty else "1", last_qty=str(q), last_px=px,
            cum_qty=str(cum), leaves_qty=str(qty - cum), avg_px=px,
            transact_time=f"{at:%Y%m%d-%H:%M:%S}.000"))
    return execs


async def settle(bo: Backoffice, first: str, through: str | None = None,
                 reconcile: bool = False) -> SettlementResult:
    result: SettlementResult = await bo.client.execute_workflow(
        SettlementWorkflow.run, SettlementInput(shards=bo.settings.shard_count, date=first, through=through,
                                                reconcile=reconcile),
        id=f"settle-test-{first}-{uuid.uuid4().hex[:6]}", task_queue=BACKOFFICE_TASK_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    return result


async def nonzero(router: ShardRouter, acct: OpenedAccount) -> dict[str, Decimal]:
    bal = await router.ledger(acct.shard).balances(acct.account_id)
    return {k: v for k, v in bal.items() if v != 0}


async def settled_on(router: ShardRouter, acct: OpenedAccount) -> dict[str, date]:
    async with router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text("SELECT exec_id, settled_on FROM settlements WHERE account_id = :a"),
                                   {"a": acct.account_id})).all()
    return {r.exec_id: r.settled_on for r in rows}
