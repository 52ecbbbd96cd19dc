"""Market-data REST (Alpaca data API v2): latest quotes, trades and minute bars of one symbol or
many (``symbols=A,B``, at most ``marketdata_max_request_symbols``), bars of 1Min, 5Min, 15Min,
1Hour and 1Day and historical trades with ``sort``, ``limit`` and ``page_token``, snapshots; plus the ingest
drop/accept counters for operations. Services: :mod:`api.services.marketdata` (Redis, parsing),
:mod:`api.services.bars` (the market-data database)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.deps import ApiKeyDep, OpsRead, StateDep
from api.errors import ApiError
from api.services import bars as bar_service
from api.services import marketdata
from api.state import AppState
from sherwood.contracts import RedisKeys

router = APIRouter(tags=["market data"])

SymbolsQuery = Annotated[str | None, Query(description="comma separated, e.g. AAPL,MSFT")]
TimeQuery = Annotated[str | None, Query(description="RFC 3339 time, or YYYY-MM-DD (New York day)")]


def _engine(request: Request, state: AppState) -> AsyncEngine:
    engine = getattr(request.app.state, "marketdata_engine", None)
    if engine is None:
        engine = marketdata.marketdata_engine(state.settings.marketdata_db_url_resolved())
        request.app.state.marketdata_engine = engine
    return engine


def _symbols(state: AppState, symbols: str | None) -> list[str]:
    return marketdata.parse_symbols(symbols, state.settings.marketdata_max_request_symbols)


# -- many symbols (alpaca-py's StockHistoricalDataClient uses these, even for one symbol) --------
# (the multi-symbol answers are plain JSON already: returned as a JSONResponse, FastAPI does not
# walk them again with jsonable_encoder, the largest cost of a 100-symbol answer)
@router.get("/v2/stocks/quotes/latest", response_class=JSONResponse)
async def latest_quotes(_key: ApiKeyDep, state: StateDep, symbols: SymbolsQuery = None) -> JSONResponse:
    """``{"quotes": {symbol: quote}}``; symbols with no quote are left out."""
    return JSONResponse(await marketdata.latest_many(state.redis, state.settings.redis_prefix, "quotes",
                                                     _symbols(state, symbols)))


@router.get("/v2/stocks/trades/latest", response_class=JSONResponse)
async def latest_trades(_key: ApiKeyDep, state: StateDep, symbols: SymbolsQuery = None) -> JSONResponse:
    """``{"trades": {symbol: trade}}``; symbols with no trade are left out."""
    return JSONResponse(await marketdata.latest_many(state.redis, state.settings.redis_prefix, "trades",
                                                     _symbols(state, symbols)))


@router.get("/v2/stocks/bars/latest")
async def latest_bars(_key: ApiKeyDep, state: StateDep, request: Request,
                      symbols: SymbolsQuery = None) -> dict[str, Any]:
    """``{"bars": {symbol: the newest minute bar}}``."""
    return await bar_service.latest_bars(_engine(request, state), _symbols(state, symbols))


@router.get("/v2/stocks/bars")
async def bars_many(
    _key: ApiKeyDep, state: StateDep, request: Request,
    symbols: SymbolsQuery = None,
    timeframe: Annotated[str, Query(description="1Min, 5Min, 15Min, 1Hour, 1Day")] = "1Min",
    start: TimeQuery = None, end: TimeQuery = None,
    limit: Annotated[int, Query(description="bars per page (all symbols), at most 10000")] = 1000,
    sort: Annotated[str, Query(description="asc or desc (by time, within each symbol)")] = "asc",
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """``{"bars": {symbol: [bar]}, "next_page_token"}``, by symbol then time."""
    out, token = await bar_service.bars(
        _engine(request, state), _symbols(state, symbols), timeframe=timeframe,
        start=marketdata.parse_time(start, "start"), end=marketdata.parse_time(end, "end", end=True),
        limit=limit, sort=sort, page_token=page_token)
    return {"bars": out, "next_page_token": token}


@router.get("/v2/stocks/trades")
async def trades_many(
    _key: ApiKeyDep, state: StateDep, request: Request,
    symbols: SymbolsQuery = None, start: TimeQuery = None, end: TimeQuery = None,
    limit: Annotated[int, Query(description="trades per page (all symbols), at most 10000")] = 1000,
    sort: Annotated[str, Query(description="asc or desc (by time, within each symbol)")] = "asc",
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """``{"trades": {symbol: [trade]}, "next_page_token"}``: stored trades (kept
    ``marketdata_trade_retention_s``), by symbol then time."""
    out, token = await bar_service.trades(
        _engine(request, state), _symbols(state, symbols), start=marketdata.parse_time(start, "start"),
        end=marketdata.parse_time(end, "end", end=True), limit=limit, sort=sort, page_token=page_token)
    return {"trades": out, "next_page_token": token}


@router.get("/v2/stocks/snapshots", response_class=JSONResponse)
async def snapshots(_key: ApiKeyDep, state: StateDep, request: Request,
                    symbols: SymbolsQuery = None) -> JSONResponse:
    """``{symbol: {latestTrade, latestQuote, minuteBar, dailyBar, prevDailyBar}}``."""
    return JSONResponse(await bar_service.snapshots(
        state.redis, state.settings.redis_prefix, _engine(request, state), _symbols(state, symbols)))


# -- one symbol -----------------------------------------------------------------------------------
@router.get("/v2/stocks/{symbol}/quotes/latest")
async def latest_quote(symbol: str, _key: ApiKeyDep, state: StateDep) -> dict[str, Any]:
    """The latest quote (Alpaca shape, plus ``sq`` is left out)."""
    return await marketdata.latest_quote(state.redis, state.settings.redis_prefix,
                                         marketdata.parse_symbol(symbol))


@router.get("/v2/stocks/{symbol}/trades/latest")
async def latest_trade(symbol: str, _key: ApiKeyDep, state: StateDep) -> dict[str, Any]:
    return await marketdata.latest_trade(state.redis, state.settings.redis_prefix,
                                         marketdata.parse_symbol(symbol))


@router.get("/v2/stocks/{symbol}/snapshot")
async def snapshot(symbol: str, _key: ApiKeyDep, state: StateDep, request: Request) -> dict[str, Any]:
    """``{symbol, latestTrade, latestQuote, minuteBar, dailyBar, prevDailyBar}``; 404 if none."""
    s = marketdata.parse_symbol(symbol)
    got = await bar_service.snapshots(state.redis, state.settings.redis_prefix, _engine(request, state), [s])
    if s not in got:
        raise ApiError(404, "not_found", f"no data for {s}", code=40410000)
    return {"symbol": s, **got[s]}


@router.get("/v2/stocks/{symbol}/bars")
async def bars(
    symbol: str, _key: ApiKeyDep, state: StateDep, request: Request,
    timeframe: Annotated[str, Query(description="1Min, 5Min, 15Min, 1Hour, 1Day")] = "1Min",
    start: TimeQuery = None, end: TimeQuery = None,
    limit: Annotated[int, Query()] = 1000,
    sort: Annotated[str, Query(description="asc or desc")] = "asc",
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """Bars (OHLCV, trade count ``n``, VWAP ``vw``) from the market-data database."""
    s = marketdata.parse_symbol(symbol)
    out, token = await bar_service.bars(
        _engine(request, state), [s], timeframe=timeframe,
        start=marketdata.parse_time(start, "start"), end=marketdata.parse_time(end, "end", end=True),
        limit=limit, sort=sort, page_token=page_token)
    return {"bars": out.get(s, []), "symbol": s, "next_page_token": token}


@router.get("/v2/stocks/{symbol}/trades")
async def trades(
    symbol: str, _key: ApiKeyDep, state: StateDep, request: Request,
    start: TimeQuery = None, end: TimeQuery = None,
    limit: Annotated[int, Query()] = 1000,
    sort: Annotated[str, Query(description="asc or desc")] = "asc",
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """Stored trades of one symbol (kept ``marketdata_trade_retention_s``)."""
    s = marketdata.parse_symbol(symbol)
    out, token = await bar_service.trades(
        _engine(request, state), [s], start=marketdata.parse_time(start, "start"),
        end=marketdata.parse_time(end, "end", end=True), limit=limit, sort=sort, page_token=page_token)
    return {"trades": out.get(s, []), "symbol": s, "next_page_token": token}


@router.get("/ops/marketdata/ingest")
async def ingest_counters(_key: OpsRead, state: StateDep) -> dict[str, Any]:
    """Ticks accepted and dropped by reason (cumulative, from ingest's Redis counters); ops
    keys with scope ``read`` only."""
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
