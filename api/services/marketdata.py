"""Market-data REST (Alpaca data API v2 shapes), read from the read path's stores only:
latest quote / trade from Redis (written by marketdata ingest), 1-minute bars from the
market-data database. Never touches a shard database.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from api.errors import ApiError
from db.engines import sqlalchemy_url
from sherwood.contracts import RedisKeys

QUOTE_FIELDS = ("t", "ax", "ap", "as", "bx", "bp", "bs", "c", "z")
TRADE_FIELDS = ("t", "x", "p", "s", "c", "i", "z")
MAX_LIMIT = 10_000


def marketdata_engine(url: str) -> AsyncEngine:
    """Bars are read rarely: no pool to hold connections against the shared server."""
    return create_async_engine(sqlalchemy_url(url), poolclass=NullPool,
                               connect_args={"connect_timeout": 5})


async def _hget(redis: Redis | None, key: str, symbol: str) -> dict[str, Any]:
    if redis is None:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable")
    try:
        raw = await redis.hget(key, symbol)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable") from exc
    if raw is None:
        raise ApiError(404, "not_found", f"no data for {symbol}", code=40410000)
    d: dict[str, Any] = json.loads(raw)
    return d


async def latest_quote(redis: Redis | None, prefix: str, symbol: str) -> dict[str, Any]:
    d = await _hget(redis, RedisKeys(prefix).quotes_latest, symbol)
    quote = {k: d.get(k) for k in QUOTE_FIELDS if k in d}
    for k in ("bp", "ap"):
        v = quote.get(k)
        if isinstance(v, str):
            quote[k] = float(v)
    return {"symbol": symbol, "quote": quote}


async def latest_trade(redis: Redis | None, prefix: str, symbol: str) -> dict[str, Any]:
    d = await _hget(redis, RedisKeys(prefix).trades_latest, symbol)
    return {"symbol": symbol, "trade": {k: d.get(k) for k in TRADE_FIELDS if k in d}}


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        if value.isdigit():
            return datetime.fromisoformat(value)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"{field}: not an RFC 3339 time or date",
                       code=42210000) from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _num(x: Decimal) -> float | int:
    return int(x) if x == x.to_integral_value() else float(x)


async def bars(engine: AsyncEngine, symbol: str, *, timeframe: str, start: str | None, end: str | None,
               limit: int, page_token: str | None) -> dict[str, Any]:
    if timeframe not in ("1Min", "1T", "1min"):
        raise ApiError(422, "invalid_request", "only timeframe=1Min is available", code=42210000)
    if limit < 1:
        raise ApiError(422, "invalid_request", "limit must be at least 1", code=42210000)
    limit = min(limit, MAX_LIMIT)  # clamped, as Alpaca does
    t0 = _parse_time(start, "start") or datetime.now(UTC) - timedelta(days=1)
    t1 = _parse_time(end, "end") or datetime.now(UTC)
    if page_token:
        try:
            t0 = datetime.fromisoformat(base64.urlsafe_b64decode(page_token).decode()) \
                + timedelta(microseconds=1)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", "bad page_token", code=42210000) from exc
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT t, o, h, l, c, v, n, vw FROM bars_1min WHERE symbol = :s AND t >= :a "
                "AND t <= :b ORDER BY t LIMIT :n"),
                {"s": symbol, "a": t0, "b": t1, "n": limit + 1})).mappings().all()
    except (OperationalError, DBAPIError) as exc:
        raise ApiError(503, "marketdata_unavailable", "bars are unavailable") from exc
    more = len(rows) > limit
    rows = rows[:limit]
    out = [{"t": r["t"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "o": _num(r["o"]),
            "h": _num(r["h"]), "l": _num(r["l"]), "c": _num(r["c"]), "v": _num(r["v"]), "n": r["n"],
            "vw": float(round(r["vw"], 6))} for r in rows]
    token = base64.urlsafe_b64encode(rows[-1]["t"].isoformat().encode()).decode() if more else None
    return {"bars": out, "symbol": symbol, "next_page_token": token}
