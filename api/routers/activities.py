from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import RouterDep, TraderDep
from api.schemas import CashActivityOut, FillActivityOut
from api.services import activities

router = APIRouter(prefix="/v2", tags=["activities"])

Activities = list[FillActivityOut | CashActivityOut]


async def _list(
    key: TraderDep, router_: RouterDep, activity_type: str | None, activity_types: str | None,
    date: str | None, after: str | None, until: str | None, direction: str, page_size: int,
    page_token: str | None,
) -> Activities:
    assert key.account_id is not None
    q = activities.build_query(activity_types=activity_types, activity_type=activity_type, date_=date,
                               after=after, until=until, direction=direction, page_size=page_size,
                               page_token=page_token)
    return await activities.list_activities(router_, key.account_id, q)


ActivityTypes = Annotated[str | None, Query(description="comma-separated, e.g. FILL,CSD")]
Date = Annotated[str | None, Query(description="only this day (New York), YYYY-MM-DD")]
After = Annotated[str | None, Query(description="only activities after this time (RFC 3339 or date)")]
Until = Annotated[str | None, Query(description="only activities before this time (RFC 3339 or date)")]
Direction = Annotated[str, Query(description="desc (newest first, default) or asc")]
PageSize = Annotated[int, Query(ge=1, description=f"at most {activities.MAX_PAGE_SIZE} (larger is clamped)")]
PageToken = Annotated[str | None, Query(description="the id of the last activity of the previous page")]


@router.get("/account/activities", response_model=Activities)
async def list_activities(
    key: TraderDep, router_: RouterDep, activity_types: ActivityTypes = None, date: Date = None,
    after: After = None, until: Until = None, direction: Direction = "desc",
    page_size: PageSize = activities.MAX_PAGE_SIZE, page_token: PageToken = None,
) -> Activities:
    """Fills and cash movements of the account, newest first."""
    return await _list(key, router_, None, activity_types, date, after, until, direction, page_size,
                       page_token)


@router.get("/account/activities/{activity_type}", response_model=Activities)
async def list_activities_of_type(
    activity_type: str, key: TraderDep, router_: RouterDep, date: Date = None, after: After = None,
    until: Until = None, direction: Direction = "desc",
    page_size: PageSize = activities.MAX_PAGE_SIZE, page_token: PageToken = None,
) -> Activities:
    """Activities of one type (FILL, CSD, CSW, ...), newest first."""
    return await _list(key, router_, activity_type, None, date, after, until, direction, page_size,
                       page_token)
