"""A fill's trade date is when the venue executed it (its TransactTime, New York date), not when
we booked it; its settlement date and its proceeds lot follow from it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from db.accounts import open_account
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.orders import AcceptOrderInput, OrderState, parse_order_request
from tests.venue_reports import fix_report

NY = ZoneInfo("America/New_York")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def _sell_filled(router: ShardRouter, *, executed: datetime, booked: datetime,
                       transact: str | None) -> tuple[dict[str, Decimal], tuple[date, date]]:
    from tests.workflows.settlement_helpers import give_shares

    acct = await open_account(router)
    await give_shares(router, acct, "F", 10)
    clock = Clock(executed)
    store = OrderStore(router.engine(acct.shard), clock=clock)
    oid = str(uuid.uuid4())
    req = {"symbol": "F", "side": "sell", "type": "limit", "time_in_force": "day", "qty": "10",
           "limit_price": "12.00"}
    snap = await store.accept(AcceptOrderInput(oid, str(acct.account_id), req,
                                               parse_order_request(req).hash(), "customer", "0.05"),
                              Quotes(bid=Decimal("12.00")))
    assert snap.state == "FUNDS_HELD", snap
    await store.transition(oid, OrderState.ROUTED, reason="test", venue="MM1")
    clock.at = booked  # the report reaches us later
    await store.apply_report(fix_report("MM1", f"{oid}:E1", "8", oid, oid, "F", "2", last_qty="10",
                                        last_px="12.00", cum_qty="10", avg_px="12.00",
                                        transact_time=transact))
    async with router.engine(acct.shard).connect() as conn:
        from sqlalchemy import text

        row = (await conn.execute(text("SELECT trade_date, settle_date FROM executions WHERE order_id = :o"),
                                  {"o": uuid.UUID(oid)})).one()
    bal = await router.ledger(acct.shard).balances(acct.account_id)
    return {k: v for k, v in bal.items() if v}, (row.trade_date, row.settle_date)


async def test_a_fill_executed_before_midnight_and_booked_after_trades_that_day(router: ShardRouter) -> None:
    executed = datetime(2026, 12, 1, 15, 59, 30, tzinfo=NY).astimezone(UTC)
    booked = datetime(2026, 12, 2, 0, 30, tzinfo=NY).astimezone(UTC)
    bal, dates = await _sell_filled(router, executed=executed, booked=booked,
                                    transact=f"{executed:%Y%m%d-%H:%M:%S}.000")
    assert dates == (date(2026, 12, 1), date(2026, 12, 2))
    assert bal["cash_unsettled@2026-12-02"] == 120


async def test_an_impossible_transact_time_is_not_believed(router: ShardRouter) -> None:
    """A TransactTime before the order existed (or far in the future) is a venue clock gone
    wrong: the fill is dated when we booked it."""
    executed = datetime(2026, 12, 1, 15, 0, tzinfo=NY).astimezone(UTC)
    _, dates = await _sell_filled(router, executed=executed, booked=executed,
                                    transact="20250101-15:00:00.000")
    assert dates == (date(2026, 12, 1), date(2026, 12, 2))
    _, dates = await _sell_filled(router, executed=executed, booked=executed, transact=None)
    assert dates == (date(2026, 12, 1), date(2026, 12, 2))
