"""Operations endpoints (ops keys only, each route its scope): trading halts and symbol
restrictions. Every change needs a ``reason`` and is recorded in ``ops_audit``
(api/services/ops.py) with the key's id and holder."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from api.body import JsonBodyRoute
from api.deps import OpsHalt, OpsRead, OpsRestrict, OpsServiceDep, StateDep, actor_of
from db.controls import ControlsStore
from domain.ops import MAX_REASON

router = APIRouter(prefix="/ops", tags=["ops"], route_class=JsonBodyRoute)

Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON,
                              description="Why (recorded in ops_audit).")]


class ControlOut(BaseModel):
    symbol: str
    halted: bool
    restriction: str | None
    reason: str


class HaltIn(BaseModel):
    symbol: str = Field(max_length=12)
    reason: Reason


class RestrictionIn(BaseModel):
    symbol: str = Field(max_length=12)
    restriction: Literal["close_only", "blocked"] | None
    reason: Reason


@router.get("/halts", response_model=list[ControlOut])
async def list_controls(key: OpsRead, state: StateDep) -> list[ControlOut]:
    """Every symbol halted or restricted now (scope ``read``)."""
    store = ControlsStore(state.router.directory, state.redis, state.settings.redis_prefix)
    return [ControlOut(symbol=s, halted=c.halted, restriction=c.restriction, reason=c.reason)
            for s, c in sorted((await store.all()).items())]


@router.post("/halts", response_model=ControlOut)
async def halt(key: OpsHalt, ops: OpsServiceDep, body: Annotated[HaltIn, Body()]) -> ControlOut:
    """Halt a symbol (scope ``halt``). When this returns, no new order for it is accepted or
    routed anywhere."""
    c = await ops.halt(actor_of(key), body.symbol, body.reason)
    return ControlOut(symbol=body.symbol.upper(), halted=c.halted, restriction=c.restriction,
                      reason=c.reason)


@router.delete("/halts/{symbol}", status_code=204)
async def resume(key: OpsHalt, ops: OpsServiceDep, symbol: str,
                 reason: Annotated[str, Query(min_length=1, max_length=MAX_REASON)]) -> Response:
    """Lift a halt (scope ``halt``); ``?reason=`` is required."""
    await ops.resume(actor_of(key), symbol, reason)
    return Response(status_code=204)


@router.post("/restrictions", response_model=ControlOut)
async def restrict(key: OpsRestrict, ops: OpsServiceDep,
                   body: Annotated[RestrictionIn, Body()]) -> ControlOut:
    """``close_only`` (buying blocked, selling allowed), ``blocked``, or null to lift it
    (scope ``restrict``)."""
    c = await ops.restrict(actor_of(key), body.symbol, body.restriction, body.reason)
    return ControlOut(symbol=body.symbol.upper(), halted=c.halted, restriction=c.restriction,
                      reason=c.reason)
