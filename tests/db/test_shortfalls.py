"""Shortfalls from fills no hold covered, at the store: what the account may spend decides, not
its ledger ``cash`` alone (which includes provisional ACH credit a cash account may not spend)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from db.accounts import OpenedAccount, open_account
from db.funding import FundingStore
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.funding import TransferInput
from domain.orders import AcceptOrderInput, OrderState, parse_order_request
from tests.venue_reports import fix_report

AT = datetime(2026, 11, 16, 20, 0, tzinfo=UTC)  # a Monday, 15:00 New York


async def shortfalls(router: ShardRouter, acct: OpenedAccount) -> list[Decimal]:
    async with router.engine(acct.shard).connect() as conn:
        return [Decimal(a) for a in (await conn.execute(text(
            "SELECT amount FROM shortfalls WHERE account_id = :a AND covered_at IS NULL"),
            {"a": acct.account_id})).scalars()]


async def buy_filled_above_its_hold(router: ShardRouter, kind: str, settled: str,
                                    provisional: str, allowance: str = "1000") -> OpenedAccount:
    """``settled`` cash and a ``provisional`` ACH deposit; a market buy of 90 F held at the
    10.00 quote (+5%: 945.00) fills at 12.00 (1,080.00): 135.00 topped up from cash."""
    acct = await open_account(router, account_type=kind)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"d:{acct.account_id}", acct.account_id, settled)
    await ledger.settle_deposit(f"s:{acct.account_id}", acct.account_id, settled)
    await FundingStore(router.engine(acct.shard)).start_deposit(TransferInput(
        str(uuid.uuid4()), str(acct.account_id), "INCOMING", provisional,
        expected_settle_date="2026-11-18"))
    store = OrderStore(router.engine(acct.shard), clock=lambda: AT,
                       instant_allowance=Decimal(allowance))
    oid = str(uuid.uuid4())
    req = {"symbol": "F", "side": "buy", "type": "market", "time_in_force": "day", "qty": "90"}
    snap = await store.accept(AcceptOrderInput(oid, str(acct.account_id), req,
                                               parse_order_request(req).hash(), "customer", "0.05"),
                              Quotes(ask=Decimal("10.00")))
    assert snap.state == "FUNDS_HELD", snap
    await store.transition(oid, OrderState.ROUTED, reason="test", venue="MM1")
    await store.apply_report(fix_report("MM1", f"{oid[:8]}F", "8", oid, oid, "F", "2", last_qty="90",
                                        last_px="12.00", cum_qty="90", leaves_qty="0",
                                        avg_px="12.00", transact_time=f"{AT:%Y%m%d-%H:%M:%S}.000"))
    return acct


async def test_a_fill_paid_with_provisional_credit_in_a_cash_account_is_a_shortfall(
        router: ShardRouter) -> None:
    """1,000 settled and 2,000 provisional: ``cash`` stays positive (1,920) but settled cash is
    -80: a cash account may not spend provisional credit, so 80 is owed (it was not recorded)."""
    acct = await buy_filled_above_its_hold(router, "cash", "1000", "2000")
    assert await shortfalls(router, acct) == [Decimal(80)]


async def test_an_instant_account_may_spend_its_provisional_allowance(router: ShardRouter) -> None:
    """The same for an instant account: 80 of its 1,000 provisional allowance pays it."""
    acct = await buy_filled_above_its_hold(router, "instant", "1000", "2000")
    assert await shortfalls(router, acct) == []


async def test_a_fill_above_the_allowance_is_a_shortfall(router: ShardRouter) -> None:
    """Instant, 1,000 settled, 50 provisional: settled cash -80, 50 of it covered by the allowance."""
    acct = await buy_filled_above_its_hold(router, "instant", "1000", "50")
    assert await shortfalls(router, acct) == [Decimal(30)]


async def test_the_configured_allowance_is_the_one_that_counts(router: ShardRouter) -> None:
    """The allowance the risk checks were configured with (here 50, not the default 1,000)
    decides: 80 past settled cash, 50 of it allowed, 30 owed."""
    acct = await buy_filled_above_its_hold(router, "instant", "1000", "2000", allowance="50")
    assert await shortfalls(router, acct) == [Decimal(30)]


async def test_a_deposit_smaller_than_the_shortfall_is_credited(router: ShardRouter) -> None:
    """Cash below zero (a shortfall) and a deposit that does not cover it: the ledger refused the
    credit ("cash would go below zero"), though it moves cash toward zero; every credit is taken."""
    acct = await buy_filled_above_its_hold(router, "cash", "1000", "10")  # cash -70
    snap = await FundingStore(router.engine(acct.shard)).start_deposit(TransferInput(
        str(uuid.uuid4()), str(acct.account_id), "INCOMING", "30", expected_settle_date="2026-11-18"))
    assert snap.status == "PENDING", snap
    balances = await router.ledger(acct.shard).balances(acct.account_id)
    assert balances["cash"] == Decimal(-40)
