from __future__ import annotations

from fastapi import APIRouter

from api.deps import QuotesDep, RouterDep, TraderDep
from api.schemas import PositionOut
from api.services import positions

router = APIRouter(prefix="/v2", tags=["positions"])


@router.get("/positions", response_model=list[PositionOut])
async def list_positions(key: TraderDep, router_: RouterDep, quotes: QuotesDep) -> list[PositionOut]:
    """Every open position of the account, by symbol (quantities exact from the ledger)."""
    assert key.account_id is not None
    return await positions.list_positions(router_, key.account_id, quotes)


@router.get("/positions/{symbol}", response_model=PositionOut)
async def get_position(symbol: str, key: TraderDep, router_: RouterDep, quotes: QuotesDep) -> PositionOut:
    """One open position; 404 if there is none."""
    assert key.account_id is not None
    return await positions.get_position(router_, key.account_id, symbol, quotes)
