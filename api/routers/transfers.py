"""Funding (Alpaca-style ``/v2/transfers``): ACH deposits (INCOMING) and withdrawals (OUTGOING)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query

from api.body import JsonBodyRoute
from api.deps import RouterDep, StateDep, TraderDep
from api.schemas import TransferIn, body_schema
from api.services.transfers import MAX_LIST_LIMIT, TransferService

router = APIRouter(prefix="/v2", tags=["transfers"], route_class=JsonBodyRoute)


async def get_service(state: StateDep, router_: RouterDep) -> TransferService:
    return TransferService(router_, state.temporal, state.settings)


ServiceDep = Annotated[TransferService, Depends(get_service)]


@router.post("/transfers")
async def create_transfer(
    key: TraderDep, service: ServiceDep,
    body: Annotated[dict[str, Any], Body(json_schema_extra=body_schema(TransferIn, extra_fields=True))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Deposit (INCOMING: credited provisionally at once, settles after the ACH days or bounces)
    or withdraw (OUTGOING: held from withdrawable cash, 403 if not enough). Body: ``amount``
    (string, USD), ``direction``, optional ``transfer_type`` ("ach")."""
    assert key.account_id is not None
    return await service.create(key.account_id, body, idempotency_key)


@router.get("/transfers")
async def list_transfers(key: TraderDep, service: ServiceDep,
                         limit: Annotated[int, Query(ge=1, description=f"at most {MAX_LIST_LIMIT} "
                                                     "(larger is clamped)")] = 100,
                         ) -> list[dict[str, Any]]:
    assert key.account_id is not None
    return await service.list(key.account_id, limit)


@router.get("/transfers/{transfer_id}")
async def get_transfer(key: TraderDep, service: ServiceDep, transfer_id: str) -> dict[str, Any]:
    assert key.account_id is not None
    return await service.get(key.account_id, transfer_id)
