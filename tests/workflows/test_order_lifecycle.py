"""The order lifecycle end to end, through HTTP, against the real stack: Temporal dev server,
Postgres shards, the execution gateway, simulated venues over FIX.

Here: market and limit orders filled (at once and in slices) and booked, cancels (resting,
racing partial fills), rejections (ours and the venue's) that change no balance, idempotent
POSTs, another account's orders, sells, day-order expiry. Elsewhere: workflow versions and
replay (test_order_versions.py), the gateway's direct link (test_order_gateway_link.py), venue
faults, stuck orders and crashes (test_order_faults.py); helpers in order_helpers.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from sqlalchemy import text

from domain.ledger import unsettled_cash
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import (
    balances,
    events,
    place,
    wait_order,
)


async def test_uc2_market_buy_filled_and_booked(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with stack.http() as http:
        t0 = time.perf_counter()
        r = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "AAPL", "qty": 10, "side": "buy", "type": "market", "time_in_force": "day"})
        assert r.status_code == 200, r.text
        order = r.json()
    filled = await wait_order(stack, acct, order["id"], {"filled"})
    elapsed = time.perf_counter() - t0
    assert filled["filled_qty"] == "10"
    price = Decimal(filled["filled_avg_price"])
    ledger = stack.router.ledger(acct.shard)
    bal = await ledger.balances(acct.account_id)
    assert bal["cash"] == Decimal("10000") - 10 * price
    assert bal.get("cash_held", 0) == 0
    assert bal["shares_unsettled:AAPL"] == 10
    assert (await ledger.reconcile()).ok
    trail = await events(stack, acct.shard, order["id"])
    states = [t for _, _, t in trail]
    for s in ("PENDING", "VALIDATED", "FUNDS_HELD", "ROUTED", "ACKED", "FILLED"):
        assert s in states, trail
    assert elapsed < 5, elapsed


async def test_uc3_partial_fills_400_300_300_exact_after_each(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    with stack.venues_behave(engine={"fill_slices": [Decimal(400), Decimal(300), Decimal(300)],
                                     "fill_delay": 0.6}):
        order = await place(stack, acct, symbol="F", qty="1000", side="buy", type="limit",
                            limit_price="12.50", time_in_force="day")
        hold = Decimal("12500")
        seen = []
        for expected_qty in ("400", "700", "1000"):
            deadline = time.monotonic() + 10
            while True:
                body = await wait_order(stack, acct, order["id"], {"partially_filled", "filled"})
                if Decimal(body["filled_qty"]) >= Decimal(expected_qty):
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert body["filled_qty"] == expected_qty, body
            bal = await balances(stack, acct)
            value = Decimal(expected_qty) * Decimal(body["filled_avg_price"])
            assert bal["shares_unsettled:F"] == Decimal(expected_qty)
            if expected_qty != "1000":
                assert body["status"] == "partially_filled"
                assert bal["cash"] == Decimal("20000") - hold
                assert bal["cash_held"] == hold - value
            seen.append(body["filled_avg_price"])
    final = await wait_order(stack, acct, order["id"], {"filled"})
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal("20000") - 1000 * Decimal(final["filled_avg_price"])
    assert bal.get("cash_held", 0) == 0
    async with stack.router.engine(acct.shard).connect() as conn:
        fills = (await conn.execute(text(
            "SELECT qty, cum_qty, leaves_qty FROM executions WHERE order_id = :o AND exec_type = 'fill' "
            "ORDER BY cum_qty"), {"o": uuid.UUID(order["id"])})).all()
    assert [(int(q), int(c), int(lv)) for q, c, lv in fills] == [
        (400, 400, 600), (300, 700, 300), (300, 1000, 0)]


async def test_cancel_resting_limit_releases_hold_to_the_cent(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    order = await place(stack, acct, symbol="AAPL", qty="7", side="buy", type="limit",
                        limit_price="150.37", time_in_force="gtc")
    await wait_order(stack, acct, order["id"], {"new"})
    bal = await balances(stack, acct)
    assert bal["cash_held"] == Decimal("1052.59")
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
        assert r.status_code == 204, r.text
    done = await wait_order(stack, acct, order["id"], {"canceled"})
    assert done["filled_qty"] == "0"
    bal = await balances(stack, acct)
    assert bal["cash"] == Decimal("5000") and bal.get("cash_held", 0) == 0
    async with stack.http() as http:  # a second cancel is refused clearly
        r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
        assert r.status_code == 422 and r.json()["reason"] == "not_cancelable"


async def test_cancel_racing_partial_fills_books_fills_and_releases_only_the_rest(
    stack: TradingStack,
) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    with stack.venues_behave(engine={"fill_slices": [Decimal(400), Decimal(300), Decimal(300)],
                                     "fill_delay": 0.5}):
        order = await place(stack, acct, symbol="F", qty="1000", side="buy", type="limit",
                            limit_price="12.50", time_in_force="day")
        await wait_order(stack, acct, order["id"], {"partially_filled"})
        async with stack.http() as http:
            r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
            assert r.status_code == 204, r.text
        done = await wait_order(stack, acct, order["id"], {"canceled", "filled"})
    filled = Decimal(done["filled_qty"])
    assert filled >= 400
    bal = await balances(stack, acct)
    assert bal["shares_unsettled:F"] == filled
    assert bal["cash"] == Decimal("20000") - filled * Decimal(done["filled_avg_price"])
    assert bal.get("cash_held", 0) == 0
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


async def test_rejections_change_no_balance(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("1000")
    before = await balances(stack, acct)
    cases = [
        ({"symbol": "AAPL", "qty": 10, "side": "buy", "type": "market", "time_in_force": "day"},
         403, "insufficient_buying_power"),
        ({"symbol": "AAPL", "qty": 1, "side": "sell", "type": "market", "time_in_force": "day"},
         403, "insufficient_qty"),
        ({"symbol": "ZZZZ", "qty": 1, "side": "buy", "type": "limit", "limit_price": "1",
          "time_in_force": "day"}, 422, "unknown_symbol"),
        ({"symbol": "AAPL", "qty": -1, "side": "buy", "type": "market", "time_in_force": "day"},
         422, "invalid_qty"),
        ({"symbol": "AAPL", "qty": "1.5", "side": "buy", "type": "market", "time_in_force": "gtc"},
         422, "fractional_requires_day"),
        ({"symbol": "AAPL", "qty": 1, "type": "market", "time_in_force": "day"}, 422, "invalid_side"),
        ({"symbol": "AAPL", "notional": "100", "qty": "1", "side": "buy", "type": "market",
          "time_in_force": "day"}, 422, "qty_and_notional"),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day"},
         422, "missing_limit_price"),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "limit_price": "187.123",
          "time_in_force": "day"}, 422, "invalid_price_increment"),
        ({"symbol": "AAPL", "qty": "NaN", "side": "buy", "type": "market", "time_in_force": "day"},
         422, "invalid_qty"),
    ]
    async with stack.http() as http:
        for body, status, reason in cases:
            r = await http.post("/v2/orders", headers=headers(acct), json=body)
            assert r.status_code == status, (body, r.text)
            err = r.json()
            assert err["reason"] == reason and isinstance(err["code"], int), (body, err)
        r = await http.post("/v2/orders", headers=headers(acct), content=b"{not json",
                            )
        assert r.status_code == 422 and set(r.json()) == {"code", "message", "reason"}
    assert await balances(stack, acct) == before


async def test_halted_symbol_rejected_by_the_venue_releases_funds(stack: TradingStack) -> None:
    await stack.set_quote("GME", "22.60", "22.70")
    acct = await stack.account("1000")
    for mm in stack.venues.values():
        mm.halt("GME")
    try:
        order = await place(stack, acct, symbol="GME", qty="5", side="buy", type="limit",
                            limit_price="23", time_in_force="day")
        done = await wait_order(stack, acct, order["id"], {"rejected"})
    finally:
        for mm in stack.venues.values():
            mm.resume("GME")
    assert "halt" in (done["reject_reason"] or "").lower()
    bal = await balances(stack, acct)
    assert bal["cash"] == 1000 and bal.get("cash_held", 0) == 0


async def test_idempotent_post_same_key_one_order_one_hold(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    body = {"symbol": "AAPL", "qty": "2", "side": "buy", "type": "limit", "limit_price": "100",
            "time_in_force": "gtc", "client_order_id": f"idem-{uuid.uuid4().hex[:8]}"}
    async with stack.http() as http:
        results = await asyncio.gather(*(http.post("/v2/orders", headers=headers(acct), json=body)
                                         for _ in range(8)))
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        assert len({r.json()["id"] for r in results}) == 1
        again = await http.post("/v2/orders", headers=headers(acct), json=body)
        assert again.json()["id"] == results[0].json()["id"]
        conflict = await http.post("/v2/orders", headers=headers(acct), json={**body, "qty": "3"})
        assert conflict.status_code == 422 and conflict.json()["reason"] == "idempotency_conflict"
        by_client = await http.get("/v2/orders:by_client_order_id", headers=headers(acct),
                                   params={"client_order_id": body["client_order_id"]})
        assert by_client.json()["id"] == results[0].json()["id"]
    bal = await balances(stack, acct)
    assert bal["cash_held"] == 200
    async with stack.router.engine(acct.shard).connect() as conn:
        holds = (await conn.execute(text(
            "SELECT count(*) FROM ledger_transactions WHERE account_id = :a AND kind = 'hold_cash'"),
            {"a": acct.account_id})).scalar_one()
    assert holds == 1


async def test_another_account_can_neither_see_nor_cancel(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    owner, other = await stack.account("5000"), await stack.account("5000")
    order = await place(stack, owner, symbol="AAPL", qty="1", side="buy", type="limit",
                        limit_price="100", time_in_force="gtc")
    async with stack.http() as http:
        assert (await http.get(f"/v2/orders/{order['id']}", headers=headers(other))).status_code == 404
        assert (await http.delete(f"/v2/orders/{order['id']}", headers=headers(other))).status_code == 404
        listed = (await http.get("/v2/orders", headers=headers(other), params={"status": "all"})).json()
        assert order["id"] not in {o["id"] for o in listed}
        mine = (await http.get("/v2/orders", headers=headers(owner))).json()
        assert order["id"] in {o["id"] for o in mine}
    assert (await wait_order(stack, owner, order["id"], {"new"}))["status"] == "new"


async def test_sell_holds_shares_and_books_proceeds_unsettled(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    ledger = stack.router.ledger(acct.shard)
    a = acct.account_id
    await ledger.hold_cash(f"seed:{a}:h", a, "123.1")
    await ledger.book_fill(f"seed:{a}:f", a, "buy", "F", 10, "12.31")
    await ledger.settle(f"seed:{a}:s", a, shares={"F": 10})
    order = await place(stack, acct, symbol="F", qty="4", side="sell", type="market",
                        time_in_force="day")
    done = await wait_order(stack, acct, order["id"], {"filled"})
    bal = await balances(stack, acct)
    assert bal["shares:F"] == 6 and bal.get("shares_held:F", 0) == 0
    assert unsettled_cash(bal) == 4 * Decimal(done["filled_avg_price"])


async def test_day_order_expires_at_its_close(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    svc_settings = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc_settings.model_copy(
        update={"day_order_ttl_s": 1.0, "day_expiry_grace_s": 0.2})
    try:
        order = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                            limit_price="100", time_in_force="day")
    finally:
        stack.app.state.sherwood.settings = svc_settings
    done = await wait_order(stack, acct, order["id"], {"expired"}, timeout=10)
    assert done["filled_qty"] == "0"
    assert (await balances(stack, acct)) == {"cash": Decimal("5000")}
