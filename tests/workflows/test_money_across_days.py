"""Money across days, through the real stack (API, order workflows, gateway, venues; the back
office's transfer workflows): provisional ACH credit spent once, unsettled sale proceeds that stay
unsettled until their own settlement date, withdrawals of settled cash only."""

from __future__ import annotations

from decimal import Decimal

from db.accounts import open_account
from domain import calendar
from tests.stack import TradingStack, headers
from tests.workflows.conftest import Backoffice
from tests.workflows.order_helpers import balances, place, wait_order
from tests.workflows.settlement_helpers import give_shares


async def test_an_instant_account_spends_its_allowance_of_provisional_credit_once(
    stack: TradingStack,
) -> None:
    """$5,000 deposited (provisional), $1,000 instant allowance: $1,000 of orders in all, however
    many orders it takes."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await open_account(stack.router, account_type="instant")
    await stack.router.ledger(acct.shard).deposit(f"dep:{acct.account_id}", acct.account_id, "5000")
    first = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="150.00", time_in_force="gtc")  # 450, rests
    second = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                         limit_price="150.00", time_in_force="gtc")  # 900 in all
    async with stack.http() as http:
        third = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "150.00",
            "time_in_force": "gtc"})  # 1,050 > 1,000
        assert third.status_code == 403 and third.json()["reason"] == "insufficient_buying_power", third.text
        account = (await http.get("/v2/account", headers=headers(acct))).json()
    assert Decimal(account["buying_power"]) == 100
    for o in (first, second):
        async with stack.http() as http:
            await http.delete(f"/v2/orders/{o['id']}", headers=headers(acct))
        await wait_order(stack, acct, o["id"], {"canceled"})
    assert await balances(stack, acct) == {"cash": Decimal(5000)}


async def test_proceeds_held_and_released_stay_unsettled_and_cannot_be_withdrawn(
    stack: TradingStack, backoffice: Backoffice,
) -> None:
    """Sell $12,300 of F, place and cancel a $12,000 buy, withdraw $12,000 the same day: refused.
    The proceeds went back to their lot (unsettled until their settlement date), not into
    withdrawable cash."""
    await stack.set_quote("F", "12.30", "12.31")
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await open_account(stack.router)
    await give_shares(stack.router, acct, "F", 1000)
    sold = await place(stack, acct, symbol="F", qty="1000", side="sell", type="market",
                       time_in_force="day")
    sold = await wait_order(stack, acct, sold["id"], {"filled"})
    proceeds = 1000 * Decimal(sold["filled_avg_price"])
    lot = f"cash_unsettled@{calendar.settle_date(calendar.trade_date(_now())).isoformat()}"
    assert await balances(stack, acct) == {lot: proceeds}
    buy = await place(stack, acct, symbol="AAPL", qty="80", side="buy", type="limit",
                      limit_price="150.00", time_in_force="gtc")  # 12,000, rests below the ask
    await wait_order(stack, acct, buy["id"], {"new"})
    assert await balances(stack, acct) == {lot: proceeds - 12000, "cash_held": Decimal(12000)}
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{buy['id']}", headers=headers(acct))).status_code == 204
        await wait_order(stack, acct, buy["id"], {"canceled"})
        r = await http.post("/v2/transfers", headers=headers(acct),
                            json={"amount": "12000", "direction": "OUTGOING"})
        assert r.status_code == 403 and r.json()["reason"] == "insufficient_withdrawable_cash", r.text
    assert await balances(stack, acct) == {lot: proceeds}


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
