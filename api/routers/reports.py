"""Ops reports (ops key with scope ``read``): ``GET /ops/reports/execution-quality`` -- execution
quality per venue and order type, the monthly routing disclosure and the fills per day and venue
(db/execution_quality.py: the quality stored per shard with each fill). Read only."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import OpsRead, RouterDep, StateDep
from api.errors import ApiError
from db.execution_quality import MAX_DAYS, load_report

router = APIRouter(prefix="/ops/reports", tags=["ops"])


class QualityRow(BaseModel):
    orders: int
    shares: str
    executed_shares: str
    notional: str
    avg_price_improvement_per_share: str = Field(description="$ per share vs the far side "
                                                 "of the NBBO at routing (marketable orders)")
    total_price_improvement: str
    pct_orders_improved: str
    avg_effective_spread: str
    avg_quoted_spread: str
    avg_time_to_execution_s: float
    fill_rate: str = Field(description="executed shares / ordered shares, in %")
    reject_rate: str = Field(description="orders the venue rejected / orders routed, in %")
    cancel_rate: str = Field(description="orders canceled at the venue (at the customer's "
                             "request or its own) / orders routed, in %")


class VenueQualityRow(QualityRow):
    venue: str
    order_type: str


class DisclosureVenue(BaseModel):
    venue: str
    orders: int
    pct: str


class Disclosure(BaseModel):
    month: str
    order_type: str
    orders: int
    venues: list[DisclosureVenue]


class DailyFills(BaseModel):
    day: str = Field(description="NY date the orders were routed")
    venue: str
    fills: int
    executed_shares: str
    notional: str
    total_price_improvement: str
    avg_price_improvement_per_share: str


class ExecutionQualityReport(BaseModel):
    from_: str = Field(alias="from")
    to: str
    symbol: str | None = None
    venues: list[str]
    rows: list[VenueQualityRow]
    totals: QualityRow
    routing_disclosure: list[Disclosure]
    daily: list[DailyFills]


@router.get("/execution-quality", response_model=ExecutionQualityReport, response_model_by_alias=True)
async def execution_quality(
    key: OpsRead, state: StateDep, router_: RouterDep,
    start: Annotated[date, Query(alias="from", description="First NY business date")],
    end: Annotated[date, Query(alias="to", description="Last NY business date (included)")],
    symbol: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
) -> ExecutionQualityReport:
    """Per venue and order type (every configured venue has rows): orders, shares, average and
    total price improvement, % improved, effective/quoted spread, time to execution, fill,
    reject and cancel rates; the totals (the fills booked in the ledger); the routing disclosure
    per month; the fills per day and venue."""
    if end < start or (end - start).days > MAX_DAYS:
        raise ApiError(422, "invalid_period",
                       f"'to' must be on or after 'from', at most {MAX_DAYS} days", code=42210000)
    assert state.gateway is not None
    rep = await load_report(state.gateway, router_, [v.name for v in state.settings.venues],
                            start, end, symbol.upper() if symbol else None)
    return ExecutionQualityReport.model_validate(rep)
