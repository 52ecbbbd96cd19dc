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


async def _deposit_settled(stack: TradingStack, acct, amount: str) -> None:  # type: ignore[no-untyped-def]
    """A deposit through the API that the simulated bank settles within a second."""
    import asyncio
    import time

    from tests.workflows.conftest import FAST_ACH

    svc = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc.model_copy(update=FAST_ACH)
    try:
        async with stack.http() as http:
            r = await http.post("/v2/transfers", headers=headers(acct),
                                json={"amount": amount, "direction": "INCOMING"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 15
            while (await http.get(f"/v2/transfers/{r.json()['id']}", headers=headers(acct))
                   ).json()["status"] != "COMPLETE":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        stack.app.state.sherwood.settings = svc


async def _open_shortfalls(stack: TradingStack, acct) -> list[tuple[str, Decimal]]:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    async with stack.router.engine(acct.shard).connect() as conn:
        rows = (await conn.execute(text(
            "SELECT cause, amount FROM shortfalls WHERE account_id = :a AND covered_at IS NULL"),
            {"a": acct.account_id})).all()
    return [(r.cause, Decimal(r.amount)) for r in rows]


async def _order_status(stack: TradingStack, acct, **body: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json=body)
    return r.status_code, r.json().get("reason") or r.json()["status"]


async def test_a_buy_filled_above_its_hold_records_the_shortfall_and_restricts_to_closing(
    stack: TradingStack, backoffice: Backoffice,
) -> None:
    """The hold is sized from the quote (90 F at 10.00 + 5%: 945.00); the venue fills at 12.00:
    1,080.00. Cash goes 80 below zero: a shortfall, and the account may only sell until settled
    cash covers it; then it may buy again."""
    acct = await stack.account("1000")
    await stack.quotes.put("F", Decimal("9.99"), Decimal("10.00"))  # what the hold is sized from
    for mm in stack.venues.values():
        mm.set_quote("F", Decimal("11.99"), Decimal("12.00"))  # where the venue fills
    try:
        order = await place(stack, acct, symbol="F", qty="90", side="buy", type="market",
                            time_in_force="day")
        await wait_order(stack, acct, order["id"], {"filled"})
    finally:
        await stack.set_quote("F", "12.30", "12.31")
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal(-80) and bal["shares_unsettled:F"] == 90
    assert await _open_shortfalls(stack, acct) == [("fill_above_hold", Decimal(80))]
    assert await _order_status(stack, acct, symbol="F", qty="1", side="buy", type="limit",
                               limit_price="12.00", time_in_force="day") == (403, "account_close_only")
    code, _ = await _order_status(stack, acct, symbol="F", qty="5", side="sell", type="limit",
                                  limit_price="20.00", time_in_force="gtc")  # closing: accepted
    assert code == 200
    await _deposit_settled(stack, acct, "100")  # settled cash: 20 again
    assert await _open_shortfalls(stack, acct) == []
    code, _ = await _order_status(stack, acct, symbol="F", qty="1", side="buy", type="limit",
                                  limit_price="12.00", time_in_force="day")
    assert code == 200
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


async def test_after_an_ach_return_the_account_may_sell_and_trades_again_once_covered(
    stack: TradingStack, backoffice: Backoffice,
) -> None:
    """A deposit spent, then returned by the bank: cash is negative and a shortfall is open. The
    account is not blocked: it may still sell (closing orders), not buy; a settled deposit that
    covers the shortfall lifts the restriction."""
    import asyncio
    import time

    from tests.workflows.conftest import FAST_ACH
    from tests.workflows.settlement_helpers import give_shares

    await stack.set_quote("AAPL", "187.40", "187.50")
    await stack.set_quote("F", "12.30", "12.31")
    acct = await open_account(stack.router, account_type="instant")
    await give_shares(stack.router, acct, "F", 10)
    svc = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc.model_copy(update=FAST_ACH)
    try:
        async with stack.http() as http:
            r = await http.post("/v2/transfers", headers=headers(acct),
                                json={"amount": "1000", "direction": "INCOMING"})
            assert r.status_code == 200, r.text
            tid = r.json()["id"]
            await backoffice.bank.instruct(tid, "return")
    finally:
        stack.app.state.sherwood.settings = svc
    buy = await place(stack, acct, symbol="AAPL", qty="5", side="buy", type="limit",
                      limit_price="150.00", time_in_force="gtc")  # 750 of the $1,000 allowance
    await wait_order(stack, acct, buy["id"], {"new"})
    deadline = time.monotonic() + 15
    async with stack.http() as http:
        while (await http.get(f"/v2/transfers/{tid}", headers=headers(acct))).json()["status"] != "RETURNED":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        account = (await http.get("/v2/account", headers=headers(acct))).json()
    assert (await balances(stack, acct))["cash"] == Decimal(-750)
    assert await _open_shortfalls(stack, acct) == [("ach_return", Decimal(750))]
    assert account["trading_blocked"] is False
    assert await _order_status(stack, acct, symbol="AAPL", qty="1", side="buy", type="limit",
                               limit_price="150.00", time_in_force="gtc") == (403, "account_close_only")
    code, _ = await _order_status(stack, acct, symbol="F", qty="5", side="sell", type="limit",
                                  limit_price="20.00", time_in_force="gtc")
    assert code == 200  # selling is closing: allowed
    await _deposit_settled(stack, acct, "800")  # settled cash -750 + 800 = 50
    assert await _open_shortfalls(stack, acct) == []
    code, _ = await _order_status(stack, acct, symbol="AAPL", qty="1", side="buy", type="limit",
                                  limit_price="10.00", time_in_force="gtc")
    assert code == 200


async def test_a_cash_account_spends_its_unsettled_proceeds_not_its_provisional_credit(
    stack: TradingStack,
) -> None:
    """$5,000 provisional and $2,000 of unsettled proceeds: $2,000 to spend, not $7,000."""
    await stack.set_quote("F", "10.00", "10.01")
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await open_account(stack.router)  # a cash account
    await give_shares(stack.router, acct, "F", 200)
    sold = await place(stack, acct, symbol="F", qty="200", side="sell", type="limit",
                       limit_price="10.00", time_in_force="day")
    sold = await wait_order(stack, acct, sold["id"], {"filled"})
    proceeds = 200 * Decimal(sold["filled_avg_price"])
    await stack.router.ledger(acct.shard).deposit(f"dep:{acct.account_id}", acct.account_id, "5000")
    async with stack.http() as http:
        account = (await http.get("/v2/account", headers=headers(acct))).json()
        assert Decimal(account["buying_power"]) == proceeds
        too_much = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "AAPL", "qty": "20", "side": "buy", "type": "limit", "limit_price": "150.00",
            "time_in_force": "gtc"})  # 3,000
        assert too_much.status_code == 403 and too_much.json()["reason"] == "insufficient_buying_power"
    ok = await place(stack, acct, symbol="AAPL", qty="13", side="buy", type="limit",
                     limit_price="150.00", time_in_force="gtc")  # 1,950: within the proceeds
    await wait_order(stack, acct, ok["id"], {"new"})
    bal = await balances(stack, acct)
    assert bal["cash"] == 5000 and bal["cash_held"] == 1950  # the hold took the proceeds


async def test_a_cancel_with_another_cumulative_quantity_keeps_the_hold_for_an_operator(
    stack: TradingStack,
) -> None:
    """400 filled and booked, then the venue confirms the cancel saying 1,000 were filled: the
    rest of the hold is not released on that word; the order waits for an operator."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    with stack.venues_behave(garble_cancels={"cum_qty": "1000", "leaves_qty": "0"},
                             engine={"fill_slices": [Decimal(400)], "fill_delay": 3600}):
        order = await place(stack, acct, symbol="F", qty="1000", side="buy", type="limit",
                            limit_price="12.50", time_in_force="day")
        part = await wait_order(stack, acct, order["id"], {"partially_filled"})
        async with stack.http() as http:
            assert (await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))).status_code == 204
        import asyncio
        import time

        deadline = time.monotonic() + 15
        while (await wait_order(stack, acct, order["id"], {"pending_cancel", "partially_filled"})
               )["state"] != "STUCK":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    bal = await balances(stack, acct)
    assert bal["cash_held"] == Decimal(12500) - 400 * Decimal(part["filled_avg_price"])
    assert bal["shares_unsettled:F"] == 400
