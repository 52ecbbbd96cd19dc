"""Settlement at its edges: an account with nothing left to settle on a date, and a date that has
not come yet. Each ends somewhere visible, never in a transaction retried forever."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError

from activities.settlement import PlanInput, SettlementActivities
from db.accounts import open_account
from db.router import ShardRouter
from domain import calendar
from tests.workflows.conftest import Backoffice
from tests.workflows.settlement_helpers import funded, give_shares, nonzero, settle, settled_on, trade

# Mon, Tue, Wed; each test settles dates of its own (a date settles once per shard)
D1, D2, D3 = date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)
S1, S2, S3 = date(2026, 9, 21), date(2026, 9, 22), date(2026, 9, 23)


async def test_shares_sold_before_they_settle_leave_nothing_to_settle(
    backoffice: Backoffice, router: ShardRouter,
) -> None:
    """Buy 10 on D1, sell those 10 on D2 (taken from the unsettled shares): on D2 the buy's
    shares are gone, so the account settles nothing for it; D2 still settles, in one try."""
    acct = await funded(router, "10000")
    buy = await trade(router, acct, "F", "buy", 10, "12.30", D1)
    sell = await trade(router, acct, "F", "sell", 10, "12.40", D2)
    assert "shares_unsettled:F" not in await nonzero(router, acct)
    result = await asyncio.wait_for(settle(backoffice, D2.isoformat()), 30)
    assert [d.business_date for d in result.days] == [D2.isoformat()]
    settled = await settled_on(router, acct)
    assert {settled[e] for e in buy} == {D2}
    assert all(e not in settled for e in sell)  # the sale settles D3
    bal = await nonzero(router, acct)
    assert "shares:F" not in bal and "shares_unsettled:F" not in bal
    await settle(backoffice, D3.isoformat())
    assert {(await settled_on(router, acct))[e] for e in sell} == {D3}
    cash = (await nonzero(router, acct))["cash"]
    assert cash == Decimal("10000") - 10 * Decimal("12.30") + 10 * Decimal("12.40")


async def test_proceeds_spent_before_they_settle_leave_nothing_to_settle(
    backoffice: Backoffice, router: ShardRouter,
) -> None:
    """Sell on S1, spend all the proceeds on S2 (the hold takes the unsettled cash): on S2 the
    sale settles with nothing left to move; S2 settles, in one try."""
    acct = await open_account(router)  # no cash at all
    await give_shares(router, acct, "F", 100)
    sell = await trade(router, acct, "F", "sell", 100, "10.00", S1)
    buy = await trade(router, acct, "AAPL", "buy", 5, "200.00", S2)
    assert (await nonzero(router, acct)).get("cash", Decimal(0)) == 0
    await asyncio.wait_for(settle(backoffice, S2.isoformat()), 30)
    settled = await settled_on(router, acct)
    assert {settled[e] for e in sell} == {S2}
    assert all(e not in settled for e in buy)
    await settle(backoffice, S3.isoformat())
    bal = await nonzero(router, acct)
    assert bal["shares:AAPL"] == 5 and "cash_unsettled" not in bal
    assert (await router.ledger(acct.shard).reconcile()).ok


async def test_a_date_after_today_is_refused_by_the_plan(backoffice: Backoffice) -> None:
    """Settling a future date would settle today's trades early: the plan refuses it, for good
    (not retried)."""
    acts = SettlementActivities(None, [], None)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    tomorrow = calendar.next_session(calendar.trade_date(now))
    with pytest.raises(ApplicationError) as refused:
        await acts.plan_settlement(PlanInput(now=now.isoformat(), date=tomorrow.isoformat()))
    assert refused.value.non_retryable and refused.value.type == "settlement_date_in_future"
    today = calendar.trade_date(now)
    assert await acts.plan_settlement(PlanInput(now=now.isoformat(), date=(today - timedelta(days=7))
                                                .isoformat(), through=today.isoformat()))


async def test_settlement_run_for_a_future_date_exits_non_zero(backoffice: Backoffice) -> None:
    env = _env(backoffice)
    tomorrow = calendar.next_session(calendar.trade_date(datetime.now(UTC)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sherwood", "settlement", "run", tomorrow.isoformat(), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode not in (0, None), (out, err)
    assert b"has not come" in err + out, (out, err)


def _env(bo: Backoffice) -> dict[str, str]:
    import os

    s = bo.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env.update({"SHERWOOD_POSTGRES_URL": s.postgres_url or "", "SHERWOOD_DB_PREFIX": s.db_prefix,
                "SHERWOOD_TEMPORAL_ADDRESS": s.temporal_address or "",
                "SHERWOOD_REDIS_URL": s.redis_url or "", "SHERWOOD_REDIS_PREFIX": s.redis_prefix,
                "SHERWOOD_DATA_DIR": str(s.data_dir), "SHERWOOD_SHARDS": str(s.shard_count)})
    return env


async def test_the_shard_refuses_to_settle_a_date_that_has_not_come(router: ShardRouter) -> None:
    from db.settlement import settle_shard
    from domain.settlement import SettlementDateError

    tomorrow = calendar.next_session(calendar.trade_date(datetime.now(UTC)))
    with pytest.raises(SettlementDateError):
        await settle_shard(router.engine(0), 0, tomorrow)


L1, L2, L3 = date(2026, 9, 28), date(2026, 9, 29), date(2026, 9, 30)


async def test_each_lot_of_proceeds_settles_on_its_own_date(
    backoffice: Backoffice, router: ShardRouter,
) -> None:
    """Proceeds of a sale on L1 settle on L2; those of a sale on L2 settle on L3, not with them."""
    acct = await open_account(router)
    await give_shares(router, acct, "F", 100)
    await trade(router, acct, "F", "sell", 50, "10.00", L1)
    await trade(router, acct, "F", "sell", 50, "11.00", L2)
    assert await nonzero(router, acct) == {"cash_unsettled@2026-09-29": 500, "cash_unsettled@2026-09-30": 550}
    await settle(backoffice, L2.isoformat())
    assert await nonzero(router, acct) == {"cash": 500, "cash_unsettled@2026-09-30": 550}
    await settle(backoffice, L3.isoformat())
    assert await nonzero(router, acct) == {"cash": 1050}
