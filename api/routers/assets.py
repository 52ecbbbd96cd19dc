from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import RouterDep, TraderDep
from api.schemas import AssetOut
from api.services import assets

router = APIRouter(prefix="/v2", tags=["assets"])


@router.get("/assets", response_model=list[AssetOut])
async def list_assets(
    _: TraderDep, router_: RouterDep,
    status: Annotated[str | None, Query(description="active | inactive")] = None,
    asset_class: Annotated[str | None, Query(description="us_equity")] = None,
    exchange: Annotated[str | None, Query(description="NASDAQ, NYSE, ARCA, ...")] = None,
) -> list[AssetOut]:
    """The tradable universe, by symbol."""
    return await assets.list_assets(router_, status=status, asset_class=asset_class, exchange=exchange)


@router.get("/assets/{symbol_or_id}", response_model=AssetOut)
async def get_asset(symbol_or_id: str, _: TraderDep, router_: RouterDep) -> AssetOut:
    """One asset by symbol or asset id; 404 if unknown."""
    return await assets.get_asset(router_, symbol_or_id)
