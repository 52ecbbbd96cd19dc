"""``Annotated`` dependency aliases shared by every router."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.services.ops import OpsService
from api.state import AppState
from db.accounts import ApiKey, authenticate, hash_secret
from db.ops import Actor, authenticate_ops
from db.router import ShardRouter
from domain.ops import SCOPES, OpsKey, has_scope
from marketdata.quotes import LatestQuotes


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.sherwood
    return state


async def get_router(state: Annotated[AppState, Depends(get_state)]) -> ShardRouter:
    return state.router


StateDep = Annotated[AppState, Depends(get_state)]
RouterDep = Annotated[ShardRouter, Depends(get_router)]


async def get_quotes(state: StateDep) -> LatestQuotes:
    """Latest quotes (advisory: None per symbol when Redis or the feed is down)."""
    return LatestQuotes(state.redis, state.settings.redis_prefix)


QuotesDep = Annotated[LatestQuotes, Depends(get_quotes)]


_AUTH_TTL_S = 5.0  # a revoked key stops working within this long
_auth_cache: dict[tuple[str, str], tuple[float, ApiKey]] = {}


async def authenticate_from(state: AppState, source: str, key_id: str, secret: str) -> ApiKey | None:
    """The key of ``key_id`` + ``secret`` (None when wrong), asked of the directory database only
    while ``source`` (the client's address) is under its failed-login limit.

    Successful authentications are remembered briefly: the directory database is not asked on
    every request (failures are never cached). A source with ``login_failures_per_source``
    failures in ``login_failure_window_s`` gets a 429 ``too_many_failed_logins`` (Retry-After)
    before any lookup, whatever key it sends; other sources are not affected. Shared by every
    API process through Redis; without Redis, not limited.
    """
    now = time.monotonic()
    cache_key = (key_id, hash_secret(secret))
    hit = _auth_cache.get(cache_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    bucket, rate = await _guard_logins(state, source)
    key = await authenticate(state.router, key_id, secret)
    if key is None:
        await state.limiter.spend(bucket, per_second=rate,
                                  capacity=state.settings.login_failures_per_source)
        return None
    if len(_auth_cache) > 10000:
        _auth_cache.clear()
    _auth_cache[cache_key] = (now + _AUTH_TTL_S, key)
    return key


def _credentials(key_id: str | None, secret: str | None,
                 authorization: str | None) -> tuple[str, str] | None:
    if (key_id is None or secret is None) and authorization and authorization.startswith("Bearer "):
        key_id, _, secret = authorization.removeprefix("Bearer ").partition(":")
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        raise ApiError(401, "unauthorized", "missing APCA-API-KEY-ID / APCA-API-SECRET-KEY headers",
                       code=40110000)
    return key_id, secret


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


async def _guard_logins(state: AppState, source: str) -> tuple[str, float]:
    """429 ``too_many_failed_logins`` when ``source`` is past its failed-login limit; returns the
    limit's bucket and rate, for counting a failure."""
    s = state.settings
    bucket = f"login-failures:{source}"
    rate = s.login_failures_per_source / s.login_failure_window_s
    await state.limiter.guard(bucket, per_second=rate, capacity=s.login_failures_per_source,
                              what="failed logins from this address",
                              reason="too_many_failed_logins")
    return bucket, rate


async def _count_request(state: AppState, key_id: str) -> None:
    """The per-key request limit (customer and ops keys alike; 429 past it)."""
    per_min = state.settings.request_rate_per_min
    await state.limiter.hit(f"key:{key_id}", per_second=per_min / 60, capacity=per_min,
                            what="requests for this API key")


def key_rate(state: AppState, key: ApiKey) -> tuple[str, float, float, str]:
    """The request-rate bucket of ``key`` (for :meth:`api.ratelimit.RateLimiter.hit_all`)."""
    per_min = state.settings.request_rate_per_min
    return f"key:{key.key_id}", per_min / 60, per_min, "requests for this API key"


async def get_optional_api_key(
    request: Request,
    key_id: Annotated[str | None, Header(alias="APCA-API-KEY-ID")] = None,
    secret: Annotated[str | None, Header(alias="APCA-API-SECRET-KEY")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey | None:
    """The caller's key, None when the request carries no credentials at all; wrong ones are a
    401 (a 429 past the failed-login limit, or past the key's request rate)."""
    key = await _authenticated(request, key_id, secret, authorization)
    if key is not None:
        state: AppState = request.app.state.sherwood
        await state.limiter.hit_all([key_rate(state, key)])
    return key


async def get_unmetered_trader(
    request: Request,
    key_id: Annotated[str | None, Header(alias="APCA-API-KEY-ID")] = None,
    secret: Annotated[str | None, Header(alias="APCA-API-SECRET-KEY")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """As :data:`TraderDep`, except that the key's request rate is NOT taken: the route takes
    it itself, with its own limits, in one round trip (``hit_all([key_rate(...), ...])``)."""
    return await get_trader(await get_api_key(
        await _authenticated(request, key_id, secret, authorization)))


async def _authenticated(request: Request, key_id: str | None, secret: str | None,
                         authorization: str | None) -> ApiKey | None:
    creds = _credentials(key_id, secret, authorization)
    if creds is None:
        return None
    state: AppState = request.app.state.sherwood
    key = await authenticate_from(state, _source(request), *creds)
    if key is None:
        raise ApiError(401, "unauthorized", "invalid API key or secret", code=40110000)
    return key


OptionalApiKeyDep = Annotated[ApiKey | None, Depends(get_optional_api_key)]


async def get_api_key(key: OptionalApiKeyDep) -> ApiKey:
    if key is None:
        raise ApiError(401, "unauthorized", "missing APCA-API-KEY-ID / APCA-API-SECRET-KEY headers",
                       code=40110000)
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]


async def get_trader(key: ApiKeyDep) -> ApiKey:
    if key.account_id is None:
        raise ApiError(403, "forbidden", "this key belongs to no trading account", code=40310000)
    return key


TraderDep = Annotated[ApiKey, Depends(get_trader)]
# the route takes the key's request rate itself (see get_unmetered_trader)
UnmeteredTraderDep = Annotated[ApiKey, Depends(get_unmetered_trader)]


async def get_optional_ops_key(
    request: Request,
    header_key_id: Annotated[str | None, Header(alias="APCA-API-KEY-ID")] = None,
    header_secret: Annotated[str | None, Header(alias="APCA-API-SECRET-KEY")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> OpsKey | None:
    """The caller's ops key (``ops_keys``, never a customer key), None without credentials.

    Asked of the directory database on every request, with no cache: a revoked or expired key is
    refused (401 ``key_revoked`` / ``key_expired``) from the moment it is revoked or expires. A
    customer key is a 403 ``forbidden``; wrong credentials a 401 and count toward the source's
    failed-login limit (429 past it), like the customer API's.
    """
    creds = _credentials(header_key_id, header_secret, authorization)
    if creds is None:
        return None
    state: AppState = request.app.state.sherwood
    source = _source(request)
    await _guard_logins(state, source)
    key, why = await authenticate_ops(state.router.directory, *creds)
    if key is None and why in ("revoked", "expired"):
        raise ApiError(401, f"key_{why}", f"this ops key is {why}", code=40110000)
    if key is None:
        if await authenticate_from(state, source, *creds) is not None:
            raise ApiError(403, "forbidden", "operations endpoints need an ops key", code=40310000)
        raise ApiError(401, "unauthorized", "invalid API key or secret", code=40110000)
    await _count_request(state, key.key_id)
    return key


OptionalOpsKeyDep = Annotated[OpsKey | None, Depends(get_optional_ops_key)]


def ops_scope(scope: str) -> Callable[[OpsKey | None], Awaitable[OpsKey]]:
    """A dependency: the caller's ops key, which must hold ``scope`` (403
    ``insufficient_scope`` otherwise; 401 without credentials)."""
    assert scope in SCOPES, scope

    async def dep(key: OptionalOpsKeyDep) -> OpsKey:
        if key is None:
            raise ApiError(401, "unauthorized",
                           "missing APCA-API-KEY-ID / APCA-API-SECRET-KEY headers", code=40110000)
        if not has_scope(key, scope):
            raise ApiError(403, "insufficient_scope", f"this ops key lacks the {scope!r} scope",
                           code=40310000)
        return key

    return dep


OpsRead = Annotated[OpsKey, Depends(ops_scope("read"))]
OpsHalt = Annotated[OpsKey, Depends(ops_scope("halt"))]
OpsRestrict = Annotated[OpsKey, Depends(ops_scope("restrict"))]
OpsResolve = Annotated[OpsKey, Depends(ops_scope("resolve"))]
OpsSettlement = Annotated[OpsKey, Depends(ops_scope("settlement"))]
OpsKeys = Annotated[OpsKey, Depends(ops_scope("keys"))]


async def get_ops_service(state: StateDep) -> OpsService:
    return OpsService(state.settings, state.router, state.redis, state.temporal)


OpsServiceDep = Annotated[OpsService, Depends(get_ops_service)]


def actor_of(key: OpsKey) -> Actor:
    """The audited identity of an API caller: its key's holder and the key id."""
    return Actor(key.holder, key.key_id)
