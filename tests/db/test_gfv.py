"""Good-faith violations in cash accounts, booked through the order store: buying with funds that
have not settled (a provisional ACH credit, or unsettled sale proceeds) and selling that position
before those funds settle."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import text

from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from tests.workflows.settlement_helpers import give_shares, trade

D = date(2026, 11, 16)  # a Monday; proceeds of a sale that day settle Tuesday 11-17


async def violations(router: ShardRouter, acct: OpenedAccount) -> list[tuple[str, date, date]]:
    async with router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT symbol, sale_trade_date, funds_settle_date FROM gfv_violations WHERE account_id = :a "
            "ORDER BY id"), {"a": acct.account_id})).all()
    return [(r.symbol, r.sale_trade_date, r.funds_settle_date) for r in rows]


async def test_buying_with_unsettled_proceeds_and_selling_before_they_settle(router: ShardRouter) -> None:
    acct = await open_account(router)
    await give_shares(router, acct, "F", 100)
    await trade(router, acct, "F", "sell", 100, "10.00", D)  # 1,000 of proceeds, settle 11-17
    await trade(router, acct, "KO", "buy", 10, "100.00", D)  # paid with those proceeds
    await trade(router, acct, "KO", "sell", 10, "100.00", D)  # sold before they settle
    assert await violations(router, acct) == [("KO", D, date(2026, 11, 17))]


async def test_selling_after_the_proceeds_settle_is_no_violation(router: ShardRouter) -> None:
    acct = await open_account(router)
    await give_shares(router, acct, "F", 100)
    await trade(router, acct, "F", "sell", 100, "10.00", D)
    await trade(router, acct, "KO", "buy", 10, "100.00", D)
    await trade(router, acct, "KO", "sell", 10, "100.00", date(2026, 11, 17))
    assert await violations(router, acct) == []


async def test_buying_with_settled_cash_is_no_violation(router: ShardRouter) -> None:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"d:{acct.account_id}", acct.account_id, "2000")
    await ledger.settle_deposit(f"s:{acct.account_id}", acct.account_id, "2000")
    await trade(router, acct, "KO", "buy", 10, "100.00", D)
    await trade(router, acct, "KO", "sell", 10, "100.00", D)
    assert await violations(router, acct) == []
    assert uuid.UUID(str(acct.account_id))


async def test_a_returned_deposit_is_not_counted_as_pending_later(router: ShardRouter) -> None:
    """A deposit returned before a buy no longer funds anything: the buy is paid with settled
    cash, and selling it the same day is no violation (the returned deposit was counted as still
    pending, which made the settled cash look unsettled)."""
    from db.funding import FundingStore
    from domain.funding import TransferInput

    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"d:{acct.account_id}", acct.account_id, "2000")
    await ledger.settle_deposit(f"s:{acct.account_id}", acct.account_id, "2000")
    funding = FundingStore(router.engine(acct.shard))
    tid = str(uuid.uuid4())
    await funding.start_deposit(TransferInput(tid, str(acct.account_id), "INCOMING", "5000",
                                              expected_settle_date="2026-11-18"))
    await funding.bounce_deposit(tid, "R01 insufficient funds")
    await trade(router, acct, "KO", "buy", 10, "100.00", D)
    await trade(router, acct, "KO", "sell", 10, "100.00", D)
    assert await violations(router, acct) == []


async def test_what_a_buy_took_from_unsettled_proceeds_is_read_exactly(router: ShardRouter) -> None:
    """The hold's share of unsettled proceeds is read as an exact decimal (it came back through
    JSON as a float: 30.29 read as 30.28999999999999914735...)."""
    from decimal import Decimal

    from db import gfv

    acct = await open_account(router)
    await give_shares(router, acct, "F", 1)
    await trade(router, acct, "F", "sell", 1, "30.29", D)  # 30.29 of proceeds, settle 11-17
    await trade(router, acct, "KO", "buy", 1, "30.29", D)  # paid with those proceeds
    async with router.engine(acct.shard).connect() as conn:
        [lot] = await gfv._lots(conn, acct.account_id, "KO", D)
    assert lot.unsettled_funded == Decimal("30.29") and lot.funds_settle_date == date(2026, 11, 17)
