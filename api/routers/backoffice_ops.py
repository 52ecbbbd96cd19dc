"""Ops endpoints of the back office (ops keys, each route its scope): settlement reports, shard
halts, shortfalls (money customers owe: returned ACH deposits, buys filled above their hold)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from api.body import JsonBodyRoute
from api.deps import OpsRead, OpsServiceDep, OpsSettlement, RouterDep, actor_of
from api.errors import ApiError
from db.funding import FundingStore
from db.settlement import load_report
from db.shard_status import halts
from domain.ops import MAX_REASON

router = APIRouter(prefix="/ops", tags=["ops"], route_class=JsonBodyRoute)


class ClearHaltIn(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON,
                        description="Why it is safe to trade again (recorded in ops_audit).")


@router.get("/settlement/{business_date}")
async def settlement_report(key: OpsSettlement, router_: RouterDep,
                            business_date: date) -> dict[str, Any]:
    """The netting report of a business date across all shards, with the clearinghouse breaks
    (scope ``settlement``)."""
    report = await load_report(router_.directory, business_date)
    if report is None:
        raise ApiError(404, "not_found", f"no settlement report for {business_date}", code=40410000)
    return report


@router.get("/shard-halts")
async def list_shard_halts(key: OpsRead, router_: RouterDep) -> list[dict[str, Any]]:
    """Open trading halts on every shard (scope ``read``)."""
    out = []
    for n in range(router_.shard_count):
        out += [{"shard": n, **h} for h in await halts(router_.engine(n))]
    return out


@router.post("/shards/{shard}/clear-halt")
async def clear_halt(key: OpsSettlement, ops: OpsServiceDep, shard: int,
                     body: Annotated[ClearHaltIn, Body()]) -> dict[str, Any]:
    """Clear the trading halt a failed settlement or reconciliation put on a shard (scope
    ``settlement``)."""
    cleared = await ops.clear_shard_halt(actor_of(key), shard, body.reason)
    return {"shard": shard, "cleared": cleared}


async def _shortfalls(router_: RouterDep, open_only: bool) -> list[dict[str, Any]]:
    out = []
    for n in range(router_.shard_count):
        out += [{"shard": n, **r} for r in await FundingStore(router_.engine(n)).shortfalls()
                if not open_only or r["covered_at"] is None]
    return out


@router.get("/shortfalls")
async def shortfalls(key: OpsRead, router_: RouterDep, open_only: bool = False) -> list[dict[str, Any]]:
    """Every shortfall on every shard (``open_only``: those not covered yet): which account owes
    how much, why (``ach_return``: a returned deposit, ``fill_above_hold``: a buy filled above
    its hold), and when it was covered (scope ``read``)."""
    return await _shortfalls(router_, open_only)


@router.get("/ach-shortfalls")
async def ach_shortfalls(key: OpsRead, router_: RouterDep) -> list[dict[str, Any]]:
    """The shortfalls of returned ACH deposits (see ``/ops/shortfalls``; scope ``read``)."""
    return [r for r in await _shortfalls(router_, False) if r["cause"] == "ach_return"]
