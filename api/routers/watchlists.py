"""Watchlists (Alpaca's ``/v2/watchlists``): list, create, and by id or by name
(``/v2/watchlists:by_name?name=``) get, update (PUT), add an asset (POST ``{symbol}``), delete;
remove an asset (``DELETE /v2/watchlists/{id}/{symbol}``). Writes go through
:class:`api.services.watchlists.WatchlistService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response

from api.body import JsonBodyRoute
from api.deps import RouterDep, StateDep, TraderDep
from api.schemas import (
    WatchlistAssetIn,
    WatchlistIn,
    WatchlistOut,
    WatchlistSummaryOut,
    WatchlistUpdateIn,
)
from api.services.watchlists import WatchlistService, ref_by_id
from db.watchlists import Ref

router = APIRouter(prefix="/v2", tags=["watchlists"], route_class=JsonBodyRoute)


async def watchlist_service(key: TraderDep, router_: RouterDep, state: StateDep) -> WatchlistService:
    assert key.account_id is not None
    return WatchlistService(router_, state.settings, key.account_id)


ServiceDep = Annotated[WatchlistService, Depends(watchlist_service)]
NameQuery = Annotated[str, Query(max_length=64, description="the watchlist's name")]


@router.get("/watchlists", response_model=list[WatchlistSummaryOut])
async def list_watchlists(service: ServiceDep) -> list[WatchlistSummaryOut]:
    """The account's watchlists, oldest first (without their assets)."""
    return await service.all_lists()


@router.post("/watchlists", response_model=WatchlistOut)
async def create_watchlist(service: ServiceDep, body: Annotated[WatchlistIn, Body()]) -> WatchlistOut:
    """A new watchlist (``name`` unique per account, ``symbols`` known assets)."""
    return await service.create(body.name, body.symbols)


# ":by_name" routes first: "/watchlists/{id}" must not take them
@router.get("/watchlists:by_name", response_model=WatchlistOut)
async def get_by_name(service: ServiceDep, name: NameQuery) -> WatchlistOut:
    return await service.get(Ref(name=name))


@router.put("/watchlists:by_name", response_model=WatchlistOut)
async def update_by_name(service: ServiceDep, name: NameQuery,
                         body: Annotated[WatchlistUpdateIn, Body()]) -> WatchlistOut:
    return await service.update(Ref(name=name), body.name, body.symbols)


@router.post("/watchlists:by_name", response_model=WatchlistOut)
async def add_by_name(service: ServiceDep, name: NameQuery,
                      body: Annotated[WatchlistAssetIn, Body()]) -> WatchlistOut:
    return await service.add(Ref(name=name), body.symbol)


@router.delete("/watchlists:by_name", status_code=204, response_class=Response)
async def delete_by_name(service: ServiceDep, name: NameQuery) -> None:
    await service.delete(Ref(name=name))


@router.get("/watchlists/{watchlist_id}", response_model=WatchlistOut)
async def get_watchlist(service: ServiceDep, watchlist_id: str) -> WatchlistOut:
    return await service.get(ref_by_id(watchlist_id))


@router.put("/watchlists/{watchlist_id}", response_model=WatchlistOut)
async def update_watchlist(service: ServiceDep, watchlist_id: str,
                           body: Annotated[WatchlistUpdateIn, Body()]) -> WatchlistOut:
    """Rename and/or replace the symbols (at least one of the two)."""
    return await service.update(ref_by_id(watchlist_id), body.name, body.symbols)


@router.post("/watchlists/{watchlist_id}", response_model=WatchlistOut)
async def add_asset(service: ServiceDep, watchlist_id: str,
                    body: Annotated[WatchlistAssetIn, Body()]) -> WatchlistOut:
    """Append a symbol."""
    return await service.add(ref_by_id(watchlist_id), body.symbol)


@router.delete("/watchlists/{watchlist_id}", status_code=204, response_class=Response)
async def delete_watchlist(service: ServiceDep, watchlist_id: str) -> None:
    await service.delete(ref_by_id(watchlist_id))


@router.delete("/watchlists/{watchlist_id}/{symbol}", response_model=WatchlistOut)
async def remove_asset(service: ServiceDep, watchlist_id: str, symbol: str) -> WatchlistOut:
    """The watchlist without ``symbol`` (404 ``symbol_not_in_watchlist`` if it was not in it)."""
    return await service.remove(ref_by_id(watchlist_id), symbol)
