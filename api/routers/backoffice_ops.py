"""Ops endpoints of the back office (ops keys only): settlement reports, shard halts,
shortfalls (money customers owe: returned ACH deposits, buys filled above their hold)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body

from api.body import JsonBodyRoute
from api.deps import OpsDep, RouterDep
from api.errors import ApiError
from db.funding import FundingStore
from db.settlement import load_report
from db.shard_status import clear_halts, halts

router = APIRouter(prefix="/ops", tags=["ops"], route_class=JsonBodyRoute)


@router.get("/settlement/{business_date}")
async def settlement_report(key: OpsDep, router_: RouterDep, business_date: date) -> dict[str, Any]:
    """The netting report of a business date across all shards, with the clearinghouse breaks."""
    report = await load_report(router_.directory, business_date)
    if report is None:
        raise ApiError(404, "not_found", f"no settlement report for {business_date}", code=40410000)
    return report


@router.get("/shard-halts")
async def list_shard_halts(key: OpsDep, router_: RouterDep) -> list[dict[str, Any]]:
    out = []
    for n in range(router_.shard_count):
        out += [{"shard": n, **h} for h in await halts(router_.engine(n))]
    return out


@router.post("/shards/{shard}/clear-halt")
async def clear_halt(key: OpsDep, router_: RouterDep, shard: int,
                     body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    if not 0 <= shard < router_.shard_count:
        raise ApiError(404, "not_found", f"no shard {shard}", code=40410000)
    note = str((body or {}).get("note", ""))
    cleared = await clear_halts(router_.engine(shard), operator=f"ops:{key.key_id}", note=note)
    return {"shard": shard, "cleared": cleared}


@router.get("/shortfalls")
async def shortfalls(key: OpsDep, router_: RouterDep, open_only: bool = False) -> list[dict[str, Any]]:
    """Every shortfall on every shard (``open_only``: those not covered yet): which account owes
    how much, why (``ach_return``: a returned deposit, ``fill_above_hold``: a buy filled above
    its hold), and when it was covered."""
    out = []
    for n in range(router_.shard_count):
        out += [{"shard": n, **r} for r in await FundingStore(router_.engine(n)).shortfalls()
                if not open_only or r["covered_at"] is None]
    return out


@router.get("/ach-shortfalls")
async def ach_shortfalls(key: OpsDep, router_: RouterDep) -> list[dict[str, Any]]:
    """The shortfalls of returned ACH deposits (see ``/ops/shortfalls``)."""
    return [r for r in await shortfalls(key, router_) if r["cause"] == "ach_return"]
