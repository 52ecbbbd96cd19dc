"""Market-data REST (Alpaca data API v2): latest quote, latest trade, 1-minute bars; plus the
ingest drop/accept counters for operations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from redis.exceptions import RedisError

from api.deps import ApiKeyDep, StateDep
from api.errors import ApiError
from api.services import marketdata
from sherwood.contracts import RedisKeys

router = APIRouter(tags=["market data"])


def _symbol(symbol: str) -> str:
    s = symbol.upper()
    if not 0 < len(s) <= 16 or not s.replace(".", "").isalnum():
        raise ApiError(422, "invalid_request", "invalid symbol", code=42210000)
    return s


@router.get("/v2/stocks/{symbol}/quotes/latest")
async def latest_quote(symbol: str, _key: ApiKeyDep, state: StateDep) -> dict[str, Any]:
    """The latest quote (Alpaca shape, plus ``sq`` is left out)."""
    return await marketdata.latest_quote(state.redis, state.settings.redis_prefix, _symbol(symbol))


@router.get("/v2/stocks/{symbol}/trades/latest")
async def latest_trade(symbol: str, _key: ApiKeyDep, state: StateDep) -> dict[str, Any]:
    return await marketdata.latest_trade(state.redis, state.settings.redis_prefix, _symbol(symbol))


@router.get("/v2/stocks/{symbol}/bars")
async def bars(
    symbol: str, _key: ApiKeyDep, state: StateDep, request: Request,
    timeframe: Annotated[str, Query()] = "1Min",
    start: Annotated[str | None, Query()] = None,
    end: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = 1000,
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """1-minute bars (OHLCV, trade count ``n``, VWAP ``vw``) from the market-data database."""
    engine = getattr(request.app.state, "marketdata_engine", None)
    if engine is None:
        engine = marketdata.marketdata_engine(state.settings.marketdata_db_url_resolved())
        request.app.state.marketdata_engine = engine
    return await marketdata.bars(engine, _symbol(symbol), timeframe=timeframe, start=start, end=end,
                                 limit=limit, page_token=page_token)


@router.get("/ops/marketdata/ingest")
async def ingest_counters(_key: ApiKeyDep, state: StateDep) -> dict[str, Any]:
    """Ticks accepted and dropped by reason (cumulative, from ingest's Redis counters)."""
    if state.redis is None:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable")
    prefix = state.settings.redis_prefix
    try:
        dropped = await state.redis.hgetall(RedisKeys(prefix).md_dropped)
        accepted = await state.redis.hgetall(RedisKeys(prefix).md_accepted)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable") from exc
    def _s(k: bytes | str) -> str:
        return k.decode() if isinstance(k, bytes) else k

    return {"accepted": {_s(k): int(v) for k, v in accepted.items()},
            "dropped": {_s(k): int(v) for k, v in dropped.items()}}
