from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import QuotesDep, RouterDep, StateDep, TraderDep
from api.schemas import AccountOut, PortfolioHistoryOut
from api.services import accounts, portfolio

router = APIRouter(prefix="/v2", tags=["account"])


@router.get("/account", response_model=AccountOut)
async def get_account(key: TraderDep, router_: RouterDep, quotes: QuotesDep,
                      state: StateDep) -> AccountOut:
    """The authenticated account, read from its shard."""
    assert key.account_id is not None
    return await accounts.get_account(router_, key.account_id, quotes, state.settings.risk_limits())


@router.get("/account/portfolio/history", response_model=PortfolioHistoryOut)
async def portfolio_history(
    key: TraderDep, router_: RouterDep, quotes: QuotesDep, state: StateDep, request: Request,
    period: Annotated[str | None, Query(max_length=8, description="<n>D|W|M|A, default 1M")] = None,
    timeframe: Annotated[str | None, Query(max_length=8, description="1Min|5Min|15Min|1H|1D")] = None,
    date_end: Annotated[str | None, Query(max_length=32, description="YYYY-MM-DD")] = None,
    extended_hours: Annotated[str | None, Query(max_length=8)] = None,
) -> PortfolioHistoryOut:
    """The account's equity over time: daily points from the end-of-day snapshots, intraday
    points replayed from the ledger; profit/loss excludes deposits and withdrawals."""
    assert key.account_id is not None
    md = portfolio.marketdata_engine_of(request.app.state, state.settings.marketdata_db_url_resolved())
    return PortfolioHistoryOut(**await portfolio.history(
        router_, md, key.account_id, quotes, period=period, timeframe=timeframe,
        date_end=date_end, extended_hours=extended_hours))
