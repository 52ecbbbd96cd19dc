"""``Annotated`` dependency aliases shared by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.state import AppState
from db.accounts import ApiKey, authenticate
from db.router import ShardRouter
from marketdata.quotes import LatestQuotes


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.sherwood
    return state


def get_router(state: Annotated[AppState, Depends(get_state)]) -> ShardRouter:
    return state.router


StateDep = Annotated[AppState, Depends(get_state)]
RouterDep = Annotated[ShardRouter, Depends(get_router)]


def get_quotes(state: StateDep) -> LatestQuotes:
    """Latest quotes (advisory: None per symbol when Redis or the feed is down)."""
    return LatestQuotes(state.redis, state.settings.redis_prefix)


QuotesDep = Annotated[LatestQuotes, Depends(get_quotes)]


async def get_api_key(
    router: RouterDep,
    key_id: Annotated[str | None, Header(alias="APCA-API-KEY-ID")] = None,
    secret: Annotated[str | None, Header(alias="APCA-API-SECRET-KEY")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    if (key_id is None or secret is None) and authorization and authorization.startswith("Bearer "):
        key_id, _, secret = authorization.removeprefix("Bearer ").partition(":")
    if not key_id or not secret:
        raise ApiError(401, "unauthorized", "missing APCA-API-KEY-ID / APCA-API-SECRET-KEY headers",
                       code=40110000)
    key = await authenticate(router, key_id, secret)
    if key is None:
        raise ApiError(401, "unauthorized", "invalid API key or secret", code=40110000)
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]


async def get_trader(key: ApiKeyDep) -> ApiKey:
    if key.account_id is None:
        raise ApiError(403, "forbidden", "this key belongs to no trading account", code=40310000)
    return key


TraderDep = Annotated[ApiKey, Depends(get_trader)]
