from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import RouterDep, TraderDep
from api.services import corporate_actions

router = APIRouter(prefix="/v2", tags=["corporate actions"])


@router.get("/corporate_actions/announcements")
async def list_announcements(
    key: TraderDep, router_: RouterDep,
    ca_types: Annotated[str, Query(max_length=64, description="dividend,merger,spinoff,split")],
    since: Annotated[str, Query(max_length=32, description="YYYY-MM-DD")],
    until: Annotated[str, Query(max_length=32, description="YYYY-MM-DD, at most 90 days after since")],
    symbol: Annotated[str | None, Query(max_length=16)] = None,
    cusip: Annotated[str | None, Query(max_length=16)] = None,
    date_type: Annotated[str | None, Query(max_length=20)] = None,
) -> list[dict[str, Any]]:
    """Corporate-action announcements the back office has taken (cash dividends, splits), in
    Alpaca's shape; ``cusip`` is accepted and ignored (no CUSIPs are kept)."""
    assert key.account_id is not None
    return await corporate_actions.announcements(router_, key.account_id, ca_types=ca_types, since=since,
                                                 until=until, symbol=symbol, date_type=date_type)
