from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.responses import JSONResponse

from api.body import JsonBodyRoute
from api.deps import RouterDep, StateDep, TraderDep, UnmeteredTraderDep, key_rate
from api.schemas import OrderIn, ReplaceIn, body_schema
from api.services.orders import MAX_LIST_LIMIT, OrderService

ORDER_BODY = body_schema(OrderIn, extra_fields=False)  # unknown fields are refused
REPLACE_BODY = body_schema(ReplaceIn, extra_fields=False)
router = APIRouter(prefix="/v2", tags=["orders"], route_class=JsonBodyRoute)


async def get_service(state: StateDep, router_: RouterDep) -> OrderService:
    return OrderService(router_, state.temporal, state.settings, state.admission)


ServiceDep = Annotated[OrderService, Depends(get_service)]


def _account(key: Any) -> Any:
    assert key.account_id is not None
    return key.account_id


@router.post("/orders")
async def place_order(key: UnmeteredTraderDep, service: ServiceDep, state: StateDep,
                      body: Annotated[dict[str, Any], Body(json_schema_extra=ORDER_BODY)]) -> dict[str, Any]:
    """Place an order (Alpaca shape). Numbers may be JSON numbers or strings; they are parsed
    exactly from their text. 403 when buying power or shares are insufficient, 422 when the
    request is invalid or its client_order_id was used for a different order."""
    # the key's request rate and the account's order rate: one round trip to Redis
    rate = state.settings.order_rate_per_s
    await state.limiter.hit_all([key_rate(state, key),
                                 (f"orders:{key.account_id}", rate, rate, "orders for this account")])
    return await service.place(_account(key), body)


@router.get("/orders")
async def list_orders(
    key: TraderDep, service: ServiceDep,
    status: Annotated[str, Query(pattern="^(open|closed|all)$")] = "open",
    limit: Annotated[int, Query(ge=1, description=f"at most {MAX_LIST_LIMIT} (larger is clamped)")] = 50,
    after: datetime | None = None, until: datetime | None = None,
    direction: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    symbols: str | None = None, side: Annotated[str | None, Query(pattern="^(buy|sell)$")] = None,
    nested: Annotated[bool, Query(description="legs of bracket/oco/oto orders under their parent's "
                                  "legs, not listed on their own")] = False,
) -> list[dict[str, Any]]:
    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    return await service.list_orders(_account(key), status=status, limit=limit, after=after, until=until,
                              direction=direction, symbols=syms, side=side, nested=nested)


@router.get("/orders:by_client_order_id")
async def get_by_client_order_id(key: TraderDep, service: ServiceDep,
                                 client_order_id: str) -> dict[str, Any]:
    return await service.get_by_client_id(_account(key), client_order_id)


@router.get("/orders/{order_id}")
async def get_order(key: TraderDep, service: ServiceDep, order_id: str) -> dict[str, Any]:
    return await service.get(_account(key), order_id)


@router.delete("/orders/{order_id}", status_code=204)
async def cancel_order(key: TraderDep, service: ServiceDep, order_id: str) -> Response:
    """Request a cancel: 204 once the venue was asked (PENDING_CANCEL) or the order ended."""
    await service.cancel(_account(key), order_id)
    return Response(status_code=204)


@router.delete("/orders")
async def cancel_all(key: TraderDep, service: ServiceDep) -> JSONResponse:
    return JSONResponse(await service.cancel_all(_account(key)), status_code=207)


@router.patch("/orders/{order_id}")
async def replace_order(key: TraderDep, service: ServiceDep, state: StateDep, order_id: str,
                        body: Annotated[dict[str, Any], Body(json_schema_extra=REPLACE_BODY)],
                        ) -> dict[str, Any]:
    """Replace a working limit, stop or stop-limit order (Alpaca: qty, limit_price,
    stop_price, time_in_force, client_order_id), or a trailing stop waiting for its trigger
    (trail, qty, time_in_force, client_order_id: replaced here at once, the replacement ``new``
    and watching from the original's hwm, the original ``replaced``): answered with the
    replacement order
    (``replaces`` the original, status ``pending_new``) once the request is recorded; the
    original is ``pending_replace`` until the venue answers, then ``replaced`` (or back to
    working when the venue refuses, the replacement ``rejected``). The new terms pass the
    checks a new order does, with its codes: 422 for bad input, an order that cannot be replaced
    now or a client_order_id of another order (``duplicate_client_order_id``); 403 for what the
    account may not do now (a halted or restricted symbol, buying power or shares)."""
    await state.limiter.hit(f"orders:{key.account_id}", per_second=state.settings.order_rate_per_s,
                            capacity=state.settings.order_rate_per_s, what="orders for this account")
    return await service.replace(_account(key), order_id, body)
