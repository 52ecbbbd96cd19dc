"""Reads of one account from its shard (exact: straight from the ledger's cached balances)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from api.errors import ApiError
from api.schemas import AccountOut
from api.services.positions import long_market_values
from db.engines import reading
from db.equity import last_equity
from db.risk import load_account_risk
from db.router import ShardRouter
from domain.account import account_figures
from domain.alpaca import account_object
from domain.calendar import trade_date
from domain.funding import INCOMING, OUTGOING
from domain.funding import TERMINAL as TRANSFER_TERMINAL
from domain.risk import RiskLimits, buying_power
from marketdata.quotes import LatestQuotes

ZERO = Decimal(0)


async def get_account(router: ShardRouter, account_id: uuid.UUID, quotes: LatestQuotes,
                      limits: RiskLimits) -> AccountOut:
    """The account as the risk engine sees it: buying power by account type, day trades in the
    last 5 business days, flags, the transfers still pending, the last end-of-day equity
    snapshot before today (``last_equity``; the equity itself without one) -- from one
    consistent read of the shard."""
    shard = await router.shard_for(account_id)
    async with reading(router.engine(shard)) as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        row = (await conn.execute(
            text("SELECT id, account_number, created_at FROM accounts WHERE id = :id"),
            {"id": account_id},
        )).one_or_none()
        today = trade_date(datetime.now(UTC))
        risk = await load_account_risk(conn, account_id, today=today)
        closing = await last_equity(conn, account_id, today)  # the previous session's close
        # /v2/transfers still on their way (not COMPLETE, RETURNED, REJECTED, FAILED, CANCELED)
        pending = {r.direction: r.amount for r in (await conn.execute(
            text("SELECT direction, sum(amount) AS amount FROM transfers WHERE account_id = :id "
                 "AND status <> ALL(:terminal) GROUP BY direction"),
            {"id": account_id, "terminal": sorted(TRANSFER_TERMINAL)},
        )).all()}
    if row is None or risk is None:
        raise ApiError(404, "not_found", "account not found", code=40410000)
    fig = account_figures(risk.balances, await long_market_values(router, account_id, quotes))
    bp = buying_power(risk.account_type, risk.balances, risk.provisional, limits,
                      settled_only=risk.settled_cash_only).total
    return AccountOut(**account_object(
        account_id=str(row.id), account_number=row.account_number, created_at=row.created_at,
        state=risk, figures=fig, buying_power=bp, day_trades=risk.day_trade_count, shard=shard,
        pending_in=pending.get(INCOMING, ZERO), pending_out=pending.get(OUTGOING, ZERO),
        last_equity=closing))
