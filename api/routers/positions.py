from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from api.deps import QuotesDep, RouterDep, StateDep, TraderDep
from api.schemas import PositionOut
from api.services import close_positions, positions
from api.services.orders import OrderService

router = APIRouter(prefix="/v2", tags=["positions"])


async def order_service(state: StateDep, router_: RouterDep) -> OrderService:
    return OrderService(router_, state.temporal, state.settings, state.admission)


OrdersDep = Annotated[OrderService, Depends(order_service)]


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


@router.delete("/positions")
async def close_all_positions(
    key: TraderDep, service: OrdersDep, state: StateDep,
    cancel_orders: Annotated[bool, Query(description="cancel every open order first")] = False,
) -> JSONResponse:
    """Close every position with a market sell each (through the order workflow); with
    ``cancel_orders`` the open orders are canceled first. 207: ``[{symbol, status, body}]``."""
    assert key.account_id is not None
    await state.limiter.hit(f"orders:{key.account_id}", per_second=state.settings.order_rate_per_s,
                            capacity=state.settings.order_rate_per_s, what="orders for this account")
    return JSONResponse(await close_positions.close_all(service, key.account_id, cancel_orders=cancel_orders),
                        status_code=207)


@router.delete("/positions/{symbol}")
async def close_position(
    symbol: str, key: TraderDep, service: OrdersDep, state: StateDep,
    qty: Annotated[str | None, Query(max_length=64, description="shares to sell")] = None,
    percentage: Annotated[str | None, Query(max_length=64,
                                            description="share of the position to sell, 0-100")] = None,
) -> dict[str, Any]:
    """Sell ``qty`` shares, ``percentage`` of the position, or all of it, with a market day order
    placed like any other (through the order workflow); answers the order. 404 without a
    position, 422 for bad input, 403 ``insufficient_qty`` when open sells hold the shares."""
    assert key.account_id is not None
    await state.limiter.hit(f"orders:{key.account_id}", per_second=state.settings.order_rate_per_s,
                            capacity=state.settings.order_rate_per_s, what="orders for this account")
    return await close_positions.close_position(service, key.account_id, symbol, qty, percentage)
