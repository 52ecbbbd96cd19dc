"""Reads of one account from its shard (exact: straight from the ledger's cached balances)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from api.errors import ApiError
from api.schemas import AccountOut
from api.services.positions import long_market_values
from db.router import ShardRouter
from domain.account import account_figures
from domain.money import money_str
from marketdata.quotes import LatestQuotes


async def get_account(router: ShardRouter, account_id: uuid.UUID, quotes: LatestQuotes) -> AccountOut:
    shard = await router.shard_for(account_id)
    async with router.engine(shard).connect() as conn:
        row = (await conn.execute(
            text("SELECT id, account_number, account_type, status, trading_blocked, "
                 "pattern_day_trader, created_at FROM accounts WHERE id = :id"),
            {"id": account_id},
        )).one_or_none()
    if row is None:
        raise ApiError(404, "not_found", "account not found", code=40410000)
    balances = await router.ledger(shard).balances(account_id)
    fig = account_figures(balances, await long_market_values(router, account_id, quotes))
    bp = money_str(fig.buying_power)
    return AccountOut(
        id=str(row.id),
        account_number=row.account_number,
        status=row.status,
        cash=money_str(fig.cash),
        buying_power=bp,
        regt_buying_power=bp,
        daytrading_buying_power="0",
        non_marginable_buying_power=bp,
        portfolio_value=money_str(fig.equity),
        equity=money_str(fig.equity),
        last_equity=money_str(fig.equity),
        long_market_value=money_str(fig.long_market_value),
        pattern_day_trader=row.pattern_day_trader,
        trading_blocked=row.trading_blocked,
        created_at=row.created_at.isoformat(),
        account_type=row.account_type,
        shard=shard,
        cash_held=money_str(fig.cash_held),
        cash_unsettled=money_str(fig.cash_unsettled),
    )
