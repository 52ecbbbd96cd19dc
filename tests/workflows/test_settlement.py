"""T+1 settlement, netting, clearinghouse breaks and end-of-day ledger reconciliation, against the
real Temporal dev server and Postgres shards (back-office workers from ``backoffice``)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

from sqlalchemy import text

from db.router import ShardRouter
from domain import calendar
from sherwood.contracts import BACKOFFICE_TASK_QUEUE
from simulators.clearinghouse import InjectedBreak
from tests.stack import ops_headers
from tests.workflows.conftest import Backoffice
from tests.workflows.settlement_helpers import (
    funded,
    give_shares,
    nonzero,
    settle,
    settled_on,
    trade,
)
from workflows.settlement import (
    LedgerReconciliationWorkflow,
)


async def test_thanksgiving_trade_settles_friday(backoffice: Backoffice, router: ShardRouter) -> None:
    acct = await funded(router)
    wed = date(2026, 11, 25)
    assert calendar.settle_date(wed) == date(2026, 11, 27)
    await trade(router, acct, "AAPL", "buy", 10, "100", wed)
    before = await nonzero(router, acct)
    assert before["shares_unsettled:AAPL"] == 10
    thanksgiving = await settle(backoffice, "2026-11-26")
    assert thanksgiving.days == []  # not a session: nothing settles
    assert await nonzero(router, acct) == before
    friday = await settle(backoffice, "2026-11-27")
    assert friday.days[0].business_date == "2026-11-27"
    after = await nonzero(router, acct)
    assert after["shares:AAPL"] == 10 and "shares_unsettled:AAPL" not in after
    assert set((await settled_on(router, acct)).values()) == {date(2026, 11, 27)}
    assert (await router.ledger(acct.shard).reconcile()).ok


async def test_friday_settles_monday_and_day_before_holiday_next_open_day(
    backoffice: Backoffice, router: ShardRouter,
) -> None:
    acct = await funded(router)
    await trade(router, acct, "MSFT", "buy", 4, "300", date(2026, 11, 20))  # Friday -> Monday 11-23
    await trade(router, acct, "MSFT", "buy", 6, "310", date(2025, 12, 24))  # Christmas Eve -> Fri 12-26
    await trade(router, acct, "MSFT", "buy", 2, "320", date(2026, 7, 2))  # July 3 observed -> Mon 07-06
    assert calendar.settle_date(date(2026, 11, 20)) == date(2026, 11, 23)
    assert calendar.settle_date(date(2025, 12, 24)) == date(2025, 12, 26)
    assert calendar.settle_date(date(2026, 7, 2)) == date(2026, 7, 6)
    await settle(backoffice, "2025-12-24", through="2025-12-26")
    assert (await nonzero(router, acct))["shares:MSFT"] == 6
    await settle(backoffice, "2026-07-03")  # holiday: nothing
    assert (await nonzero(router, acct))["shares_unsettled:MSFT"] == 6
    await settle(backoffice, "2026-07-06")
    assert (await nonzero(router, acct))["shares:MSFT"] == 8
    await settle(backoffice, "2026-11-23")
    bal = await nonzero(router, acct)
    assert bal["shares:MSFT"] == 12 and "shares_unsettled:MSFT" not in bal
    days = sorted(set((await settled_on(router, acct)).values()))
    assert days == [date(2025, 12, 26), date(2026, 7, 6), date(2026, 11, 23)]


async def test_settling_a_day_twice_changes_nothing(backoffice: Backoffice, router: ShardRouter) -> None:
    buyer, seller = await funded(router), await funded(router)
    d = date(2026, 10, 7)
    await give_shares(router, seller, "KO", 20)
    await trade(router, buyer, "KO", "buy", 20, "60.25", d)
    await trade(router, seller, "KO", "sell", 20, "60.25", d)
    first = await settle(backoffice, "2026-10-08", reconcile=True)
    assert first.days[0].executions >= 4 and not first.days[0].replayed
    assert (await nonzero(router, seller))["cash"] == Decimal("100000") + Decimal("1205")
    assert all(r.ok for r in first.reconciliation)

    async def ledger_counts() -> list[int]:
        out = []
        for n in range(router.shard_count):
            async with router.engine(n).connect() as conn:
                out.append((await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one())
        return out

    before, counts = await nonzero(router, buyer), await ledger_counts()
    second = await settle(backoffice, "2026-10-08")
    assert second.days[0].replayed
    assert second.days[0].executions == first.days[0].executions
    assert await nonzero(router, buyer) == before
    assert await ledger_counts() == counts


async def test_skipped_days_caught_up_each_once_in_order(backoffice: Backoffice, router: ShardRouter) -> None:
    acct = await funded(router)
    trades = {date(2026, 10, 12): "10", date(2026, 10, 13): "11", date(2026, 10, 14): "12"}
    execs: dict[str, date] = {}
    for td, px in trades.items():
        for e in await trade(router, acct, "PEP", "buy", 2, px, td):
            execs[e] = calendar.settle_date(td)
    # settlement did not run on 10-13 and 10-14; on 10-15 the operator catches up
    result = await settle(backoffice, "2026-10-13", through="2026-10-15")
    assert [d.business_date for d in result.days] == ["2026-10-13", "2026-10-14", "2026-10-15"]
    assert await settled_on(router, acct) == execs  # each on its own settle date
    async with router.engine(acct.shard).connect() as conn:
        runs = (await conn.execute(text(
            "SELECT business_date FROM settlement_runs WHERE business_date BETWEEN '2026-10-13' AND "
            "'2026-10-15' ORDER BY started_at"))).scalars().all()
    assert runs == [date(2026, 10, 13), date(2026, 10, 14), date(2026, 10, 15)]
    again = await settle(backoffice, "2026-10-13", through="2026-10-15")
    assert all(d.replayed for d in again.days)
    assert (await nonzero(router, acct))["shares:PEP"] == 6


async def test_netting_equals_fills_and_injected_break_reported(
    backoffice: Backoffice, router: ShardRouter, stack: object,
) -> None:
    a = await funded(router)
    b = await funded(router, shard_not=a.shard)
    td = date(2026, 9, 14)
    ea = await trade(router, a, "NVDA", "buy", 10, "120.5", td)
    eb = await trade(router, b, "NVDA", "buy", 6, "121", td, venue="MM2")
    await give_shares(router, b, "NVDA", 4)
    es = await trade(router, b, "NVDA", "sell", 4, "122", td, venue="MM2")
    ch = backoffice.clearinghouse
    ch.inject(InjectedBreak("MM1", ea[0], "drop"))
    ch.inject(InjectedBreak("MM2", eb[1], "qty", qty=Decimal(2)))
    ch.inject(InjectedBreak("MM2", es[0], "price", price=Decimal("122.01")))
    try:
        result = await settle(backoffice, "2026-09-15")
    finally:
        ch.clear_breaks()
    assert result.days[0].report.breaks == 3
    # netting totals = the sum of the fills settled that day, over every shard
    bought = sold = bv = sv = Decimal(0)
    for n in range(router.shard_count):
        async with router.engine(n).connect() as conn:
            for r in (await conn.execute(text(
                    "SELECT e.side, e.qty, e.price FROM settlements s "
                    "JOIN executions e USING (venue, exec_id) "
                    "WHERE s.settled_on = '2026-09-15' AND e.symbol = 'NVDA'"))).all():
                if r.side == "buy":
                    bought, bv = bought + r.qty, bv + r.qty * r.price
                else:
                    sold, sv = sold + r.qty, sv + r.qty * r.price
    assert (bought, sold) == (16, 4)
    from tests.stack import TradingStack

    assert isinstance(stack, TradingStack)
    hdr = await ops_headers(router, "settlement")
    async with stack.http() as http:
        r = await http.get("/ops/settlement/2026-09-15", headers=hdr)
        assert r.status_code == 200, r.text
        report = r.json()
        trader = await http.get("/ops/settlement/2026-09-15", headers={
            "APCA-API-KEY-ID": a.credentials.key_id, "APCA-API-SECRET-KEY": a.credentials.secret_key})
        assert trader.status_code == 403
    nvda = next(n for n in report["netting"] if n["symbol"] == "NVDA")
    assert Decimal(nvda["bought"]) == bought and Decimal(nvda["sold"]) == sold
    assert Decimal(nvda["net_shares"]) == bought - sold
    assert Decimal(nvda["net_cash"]) == sv - bv
    kinds = {(x["kind"], x["exec_id"]) for x in report["breaks"]}
    assert kinds == {("missing_at_street", ea[0]), ("qty_mismatch", eb[1]), ("price_mismatch", es[0])}


async def test_corrupt_balance_halts_only_that_shard_until_cleared(
    backoffice: Backoffice, router: ShardRouter, stack: object,
) -> None:
    from db import shard_status
    from tests.stack import TradingStack, headers

    assert isinstance(stack, TradingStack)
    await stack.set_quote("AAPL", "187.40", "187.50")
    victim = await stack.account("10000")
    other = await funded(router, "10000", shard_not=victim.shard)
    engine = router.engine(victim.shard)
    async with engine.begin() as conn:  # corrupt one cached balance behind the ledger's back
        la = (await conn.execute(text("SELECT id FROM ledger_accounts WHERE owner_id = :a AND name = 'cash'"),
                                 {"a": victim.account_id})).scalar_one()
        await conn.execute(text("UPDATE balances SET balance = balance + 1 WHERE ledger_account_id = :l"),
                           {"l": la})
    try:
        results = await backoffice.client.execute_workflow(
            LedgerReconciliationWorkflow.run, router.shard_count, id=f"recon-{uuid.uuid4().hex[:6]}",
            task_queue=BACKOFFICE_TASK_QUEUE)
        bad = {r.shard for r in results if not r.ok}
        assert bad == {victim.shard}
        assert shard_status.METRICS[shard_status.RECONCILIATION_FAILURES] >= 1
        order = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "190",
                 "time_in_force": "day"}
        async with stack.http() as http:
            r = await http.post("/v2/orders", headers=headers(victim), json=order)
            assert r.status_code == 403, r.text
            assert r.json()["reason"] == "shard_halted"
            ok = await http.post("/v2/orders", headers=headers(other), json=order)
            assert ok.status_code == 200, ok.text
            hdr = await ops_headers(router, "read", "settlement")
            listed = (await http.get("/ops/shard-halts", headers=hdr)).json()
            assert any(h["shard"] == victim.shard for h in listed)
    finally:
        async with engine.begin() as conn:  # the operator repairs the cache ...
            await conn.execute(text("UPDATE balances SET balance = balance - 1 WHERE ledger_account_id = :l"),
                               {"l": la})
    async with stack.http() as http:  # ... and clears the halt
        r = await http.post(f"/ops/shards/{victim.shard}/clear-halt", headers=hdr,
                            json={"reason": "repaired"})
        assert r.status_code == 200 and r.json()["cleared"] == 1
        again = await http.post("/v2/orders", headers=headers(victim), json=order)
        assert again.status_code == 200, again.text
    assert (await router.ledger(victim.shard).reconcile()).ok


async def test_fractions_settle_t_plus_one_and_the_street_sees_only_whole_shares(
    backoffice: Backoffice, router: ShardRouter,
) -> None:
    """2.5 shares bought (2 at the venue, 0.5 from the firm) and 0.5 sold to the firm on one day
    settle the next: 2 shares and the proceeds settled; the clearinghouse's comparison, which
    knows only the venue's 2 shares, finds no break."""
    from zoneinfo import ZoneInfo

    from db.orders import OrderStore, Quotes
    from domain.orders import AcceptOrderInput, OrderState, parse_order_request
    from tests.venue_reports import fix_report

    acct = await funded(router)
    d = date(2026, 9, 16)
    at = datetime.combine(d, time(15, 0), ZoneInfo("America/New_York")).astimezone(UTC)
    store = OrderStore(router.engine(acct.shard), clock=lambda: at)

    async def accept(req: dict[str, str], bid: str, ask: str) -> str:
        oid = str(uuid.uuid4())
        snap = await store.accept(AcceptOrderInput(oid, str(acct.account_id), req,
                                                   parse_order_request(req).hash(), "customer", "0.05"),
                                  Quotes(ask=Decimal(ask), bid=Decimal(bid)))
        assert snap.state == "FUNDS_HELD", snap
        return oid

    buy = await accept({"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day",
                        "qty": "2.5"}, "99.90", "100")
    await store.transition(buy, OrderState.ROUTED, reason="test", venue="MM1")
    snap = await store.apply_report(fix_report(
        "MM1", f"{buy[:8]}F1", "8", buy, buy, "F", "2", last_qty="2", last_px="100", cum_qty="2",
        leaves_qty="0", avg_px="100", transact_time=f"{at:%Y%m%d-%H:%M:%S}.000"))
    assert snap.state == "FILLED" and snap.filled_qty == "2.5"
    sell = await accept({"symbol": "AAPL", "side": "sell", "type": "limit", "time_in_force": "day",
                         "qty": "0.5", "limit_price": "100"}, "100.10", "100.20")
    snap = await store.house_fill(sell, bid=Decimal("100.10"), ask=Decimal("100.20"),
                                  max_inventory=Decimal(100))
    assert snap.state == "FILLED", snap
    before = await nonzero(router, acct)
    assert before["shares_unsettled:AAPL"] == 2 and before["cash"] == Decimal("100000") - Decimal("250.00")
    result = await settle(backoffice, "2026-09-17", reconcile=True)
    assert all(r.ok for r in result.reconciliation), result.reconciliation
    after = await nonzero(router, acct)
    assert after["shares:AAPL"] == 2 and "shares_unsettled:AAPL" not in after
    assert after["cash"] == Decimal("100000") - Decimal("250.00") + Decimal("50.05")
    assert set((await settled_on(router, acct)).values()) == {date(2026, 9, 17)}
    assert (await router.ledger(acct.shard).reconcile()).ok
