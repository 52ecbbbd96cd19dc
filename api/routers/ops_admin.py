"""Operations endpoints for STUCK orders, four-eyes approvals, ops keys and the audit trail
(ops keys only, each route its scope; every change needs a ``reason`` and is audited).

``POST /ops/orders/{id}/resolve`` (scope ``resolve``) sends what the venue reports to the order
workflow, or, above ``SHERWOOD_OPS_FOUR_EYES_NOTIONAL``, records it pending; a second operator
(a key of another holder) approves it with ``POST /ops/resolutions/{id}/approve``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field

from api.body import JsonBodyRoute
from api.deps import OpsKeys, OpsRead, OpsResolve, OpsServiceDep, StateDep, actor_of
from api.errors import ApiError
from db import ops as store
from db.ops import OpsCredentials
from domain.ops import MAX_KEY_DAYS, MAX_REASON, SCOPES

router = APIRouter(prefix="/ops", tags=["ops"], route_class=JsonBodyRoute)

Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON,
                              description="Why (recorded in ops_audit).")]


class FillIn(BaseModel):
    exec_id: str = Field(min_length=1, max_length=64)
    qty: str = Field(max_length=32)
    price: str = Field(max_length=32)


class ResolveIn(BaseModel):
    outcome: Literal["filled", "canceled"]
    filled_qty: str = Field(default="0", max_length=32,
                            description="Total quantity the venue filled.")
    avg_price: str | None = Field(default=None, max_length=32)
    fills: list[FillIn] | None = Field(default=None, max_length=100)
    note: str = Field(default="", max_length=MAX_REASON, description="What the venue said.")
    reason: Reason


class ApproveIn(BaseModel):
    reason: Reason


class ResolveOut(BaseModel):
    status: Literal["resolved", "pending"]
    order_id: str
    notional: str
    request_id: str | None = None
    order: dict[str, Any] | None = None


class KeyIn(BaseModel):
    holder: str = Field(min_length=1, max_length=64, description="Who the key is for.")
    scopes: list[Literal["read", "halt", "restrict", "resolve", "settlement", "keys"]] = Field(
        min_length=1, max_length=len(SCOPES))
    days: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS)
    reason: Reason


class RotateIn(BaseModel):
    days: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS)
    reason: Reason


class KeyOut(BaseModel):
    key_id: str
    secret_key: str
    holder: str
    scopes: list[str]
    expires_at: datetime


def _key_out(c: OpsCredentials) -> KeyOut:
    return KeyOut(key_id=c.key_id, secret_key=c.secret_key, holder=c.holder,
                  scopes=list(c.scopes), expires_at=c.expires_at)


async def _send(coro: Any) -> ResolveOut:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    try:
        out = await coro
    except WorkflowUpdateFailedError as exc:
        raise ApiError(409, "resolve_refused", str(exc.cause or exc), code=40910000) from exc
    except RPCError as exc:
        raise ApiError(404, "not_found", f"no running order workflow: {exc}", code=40410000) from exc
    return ResolveOut(**out.__dict__)


@router.post("/orders/{order_id}/resolve", response_model=ResolveOut)
async def resolve(key: OpsResolve, ops: OpsServiceDep, order_id: str,
                  body: Annotated[ResolveIn, Body()]) -> ResolveOut:
    """Resolve a STUCK order with what the venue reports (scope ``resolve``): ``resolved``
    with the order's snapshot, or ``pending`` (a ``request_id``) above the four-eyes notional."""
    from domain.orders import ResolveFill, ResolveInput

    if len(order_id) > 64:
        raise ApiError(422, "invalid_order_id", "order id too long")
    res = ResolveInput(order_id=order_id, outcome=body.outcome, filled_qty=body.filled_qty,
                       avg_price=body.avg_price, note=body.note,
                       fills=[ResolveFill(f.exec_id, f.qty, f.price) for f in body.fills]
                       if body.fills else None)
    return await _send(ops.resolve(actor_of(key), res, body.reason))


@router.post("/resolutions/{request_id}/approve", response_model=ResolveOut)
async def approve(key: OpsResolve, ops: OpsServiceDep, request_id: str,
                  body: Annotated[ApproveIn, Body()]) -> ResolveOut:
    """Approve a pending resolution (scope ``resolve``; never the requester's own): it is sent
    to the order workflow."""
    return await _send(ops.approve(actor_of(key), request_id, body.reason))


@router.get("/resolutions")
async def pending(key: OpsRead, state: StateDep,
                  all_: Annotated[bool, Query(alias="all")] = False) -> list[dict[str, Any]]:
    """Resolutions waiting for a second operator (``?all=true``: approved ones too)."""
    return await store.resolutions(state.router.directory, pending_only=not all_)


@router.get("/audit")
async def audit(key: OpsRead, state: StateDep,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """The latest ``ops_audit`` rows, newest first (scope ``read``)."""
    return await store.audit_rows(state.router.directory, limit)


@router.get("/keys")
async def list_keys(key: OpsKeys, state: StateDep) -> list[dict[str, Any]]:
    """Every ops key (never a secret; scope ``keys``)."""
    return await store.list_keys(state.router.directory)


@router.post("/keys", response_model=KeyOut)
async def create_key(key: OpsKeys, ops: OpsServiceDep, body: Annotated[KeyIn, Body()]) -> KeyOut:
    """Issue an ops key (scope ``keys``); the secret is shown once."""
    return _key_out(await ops.create_key(actor_of(key), body.holder, list(body.scopes), body.days,
                                         body.reason))


@router.post("/keys/{key_id}/rotate", response_model=KeyOut)
async def rotate_key(key: OpsKeys, ops: OpsServiceDep, key_id: str,
                     body: Annotated[RotateIn, Body()]) -> KeyOut:
    """A new key for the same holder and scopes; the old one is revoked at once."""
    return _key_out(await ops.rotate_key(actor_of(key), key_id, body.days, body.reason))


@router.post("/keys/{key_id}/revoke", status_code=204)
async def revoke_key(key: OpsKeys, ops: OpsServiceDep, key_id: str,
                     body: Annotated[ApproveIn, Body()]) -> None:
    """Revoke an ops key: its next request is refused."""
    await ops.revoke_key(actor_of(key), key_id, body.reason)
