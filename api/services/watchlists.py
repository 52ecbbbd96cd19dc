"""Watchlists of one account (``/v2/watchlists``): the store on its shard, answers in Alpaca's
shape (each list with its asset objects, in the customer's order). Not found (another account's
list included) is 404 ``watchlist_not_found``; a rule refusal is the domain's 422."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from api.errors import ApiError
from api.schemas import WatchlistOut, WatchlistSummaryOut
from api.services.assets import asset_out
from db.engines import reading
from db.router import ShardRouter
from db.watchlists import Ref, WatchlistRow, WatchlistStore
from domain.watchlists import WatchlistLimits
from sherwood.settings import Settings


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def not_found(what: str) -> ApiError:
    return ApiError(404, "watchlist_not_found", f"watchlist not found: {what[:80]}", code=40410000)


def ref_by_id(watchlist_id: str) -> Ref:
    try:
        return Ref(id=uuid.UUID(watchlist_id))
    except ValueError as exc:
        raise not_found(watchlist_id) from exc


class WatchlistService:
    def __init__(self, router: ShardRouter, settings: Settings, account_id: uuid.UUID) -> None:
        self.router = router
        self.account_id = account_id
        self.limits = WatchlistLimits(settings.watchlist_max_per_account, settings.watchlist_max_symbols)

    async def _store(self) -> WatchlistStore:
        shard = await self.router.shard_for(self.account_id)
        return WatchlistStore(self.router.engine(shard), self.account_id, self.limits)

    @staticmethod
    def _summary(w: WatchlistRow) -> dict[str, str]:
        return {"id": str(w.id), "account_id": str(w.account_id), "name": w.name,
                "created_at": _ts(w.created_at), "updated_at": _ts(w.updated_at)}

    async def _out(self, store: WatchlistStore, w: WatchlistRow | None, what: str) -> WatchlistOut:
        if w is None:
            raise not_found(what)
        async with reading(store.engine) as conn:
            rows = await store.assets(conn, w.symbols)
        return WatchlistOut(**self._summary(w), assets=[asset_out(rows[s]) for s in w.symbols if s in rows])

    async def all_lists(self) -> list[WatchlistSummaryOut]:
        return [WatchlistSummaryOut(**self._summary(w)) for w in await (await self._store()).all()]

    async def get(self, ref: Ref) -> WatchlistOut:
        store = await self._store()
        return await self._out(store, await store.get(ref), str(ref.id or ref.name))

    async def create(self, name: str, symbols: list[str] | None) -> WatchlistOut:
        store = await self._store()
        return await self._out(store, await store.create(name, symbols or []), name)

    async def update(self, ref: Ref, name: str | None, symbols: list[str] | None) -> WatchlistOut:
        if name is None and symbols is None:
            raise ApiError(422, "invalid_request", "name or symbols is required", code=42210000)
        store = await self._store()
        return await self._out(store, await store.update(ref, name, symbols), str(ref.id or ref.name))

    async def add(self, ref: Ref, symbol: str) -> WatchlistOut:
        store = await self._store()
        return await self._out(store, await store.add(ref, symbol), str(ref.id or ref.name))

    async def remove(self, ref: Ref, symbol: str) -> WatchlistOut:
        store = await self._store()
        try:
            w = await store.remove(ref, symbol)
        except LookupError as exc:
            raise ApiError(404, "symbol_not_in_watchlist", f"{symbol[:20]} is not in the watchlist",
                           code=40410000) from exc
        return await self._out(store, w, str(ref.id or ref.name))

    async def delete(self, ref: Ref) -> None:
        if not await (await self._store()).delete(ref):
            raise not_found(str(ref.id or ref.name))
