"""Operations endpoints (ops API keys only): trading halts and symbol restrictions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel

from api.body import JsonBodyRoute
from api.deps import OpsDep, StateDep
from db.controls import ControlsStore

router = APIRouter(prefix="/ops", tags=["ops"], route_class=JsonBodyRoute)


class ControlOut(BaseModel):
    symbol: str
    halted: bool
    restriction: str | None
    reason: str


class HaltIn(BaseModel):
    symbol: str
    reason: str = "halted by operations"


class RestrictionIn(BaseModel):
    symbol: str
    restriction: Literal["close_only", "blocked"] | None
    reason: str = ""


def _store(state: StateDep) -> ControlsStore:
    return ControlsStore(state.router.directory, state.redis, state.settings.redis_prefix)


@router.get("/halts", response_model=list[ControlOut])
async def list_controls(key: OpsDep, state: StateDep) -> list[ControlOut]:
    return [ControlOut(symbol=s, halted=c.halted, restriction=c.restriction, reason=c.reason)
            for s, c in sorted((await _store(state).all()).items())]


@router.post("/halts", response_model=ControlOut)
async def halt(key: OpsDep, state: StateDep, body: Annotated[HaltIn, Body()]) -> ControlOut:
    """Halt a symbol. When this returns, no new order for it is accepted or routed anywhere."""
    c = await _store(state).set(body.symbol, actor=f"ops:{key.key_id}", halted=True, reason=body.reason)
    return ControlOut(symbol=body.symbol.upper(), halted=c.halted, restriction=c.restriction,
                      reason=c.reason)


@router.delete("/halts/{symbol}", status_code=204)
async def resume(key: OpsDep, state: StateDep, symbol: str) -> Response:
    await _store(state).set(symbol, actor=f"ops:{key.key_id}", halted=False, reason="resumed")
    return Response(status_code=204)


@router.post("/restrictions", response_model=ControlOut)
async def restrict(key: OpsDep, state: StateDep, body: Annotated[RestrictionIn, Body()]) -> ControlOut:
    """``close_only`` (buying blocked, selling allowed), ``blocked``, or null to lift it."""
    c = await _store(state).set(body.symbol, actor=f"ops:{key.key_id}", restriction=body.restriction,
                                reason=body.reason)
    return ControlOut(symbol=body.symbol.upper(), halted=c.halted, restriction=c.restriction,
                      reason=c.reason)
