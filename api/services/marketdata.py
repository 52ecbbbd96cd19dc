"""Market-data REST (Alpaca data API v2 shapes), read from the read path's stores only:
latest quotes / trades from Redis (written by marketdata ingest), one symbol or many in one
``HMGET``; the request's symbol list and times are bounded and parsed here (422
``invalid_symbols`` / ``invalid_time``). Bars and snapshots: :mod:`api.services.bars`. Never
touches a shard database.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from api.errors import ApiError
from db.engines import sqlalchemy_url
from sherwood.contracts import RedisKeys

QUOTE_FIELDS = ("t", "ax", "ap", "as", "bx", "bp", "bs", "c", "z")
TRADE_FIELDS = ("t", "x", "p", "s", "c", "i", "z")
NEW_YORK = ZoneInfo("America/New_York")


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


def quote_obj(d: dict[str, Any]) -> dict[str, Any]:
    quote = {k: d.get(k) for k in QUOTE_FIELDS if k in d}
    for k in ("bp", "ap"):
        v = quote.get(k)
        if isinstance(v, str):
            quote[k] = float(v)
    return quote


def trade_obj(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d.get(k) for k in TRADE_FIELDS if k in d}


async def latest_quote(redis: Redis | None, prefix: str, symbol: str) -> dict[str, Any]:
    d = await _hget(redis, RedisKeys(prefix).quotes_latest, symbol)
    return {"symbol": symbol, "quote": quote_obj(d)}


async def latest_trade(redis: Redis | None, prefix: str, symbol: str) -> dict[str, Any]:
    d = await _hget(redis, RedisKeys(prefix).trades_latest, symbol)
    return {"symbol": symbol, "trade": trade_obj(d)}


def parse_symbol(symbol: str) -> str:
    s = symbol.strip().upper()
    if not 0 < len(s) <= 16 or not s.replace(".", "").isalnum() or not s.isascii():
        raise ApiError(422, "invalid_symbols", f"not a symbol: {symbol[:20]!r}", code=42210000)
    return s


def parse_symbols(raw: str | None, max_symbols: int) -> list[str]:
    """``symbols=A,B,C``: at most ``max_symbols``, each a symbol; sorted, without repeats."""
    if not raw:
        raise ApiError(422, "invalid_symbols", "symbols is required (comma separated)", code=42210000)
    parts = raw.split(",", max_symbols + 1)
    if len(parts) > max_symbols:
        raise ApiError(422, "invalid_symbols", f"at most {max_symbols} symbols", code=42210000)
    return sorted({parse_symbol(p) for p in parts})


async def latest_many(redis: Redis | None, prefix: str, kind: str, symbols: list[str]) -> dict[str, Any]:
    """``kind`` "quotes" or "trades" of many symbols in one HMGET; symbols with none left out."""
    if redis is None:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable")
    keys = RedisKeys(prefix)
    key, obj = (keys.quotes_latest, quote_obj) if kind == "quotes" else (keys.trades_latest, trade_obj)
    try:
        raws = await redis.hmget(key, symbols)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "marketdata_unavailable", "market data is unavailable") from exc
    return {kind: {s: obj(json.loads(r)) for s, r in zip(symbols, raws, strict=True) if r is not None}}


def parse_time(value: str | None, field: str, *, end: bool = False) -> datetime | None:
    """Alpaca's times: RFC 3339 (an offset or ``Z`` required), or a date ``YYYY-MM-DD`` -- the
    New York day: its midnight as a start, the end of that day as an ``end``. Else 422
    ``invalid_time``."""
    if value is None:
        return None
    try:
        if len(value) > 40:
            raise ValueError("too long")
        if len(value) == 10:
            d = date.fromisoformat(value)
            if end:
                d += timedelta(days=1)
            t = datetime.combine(d, time(0), NEW_YORK).astimezone(UTC)
            return t - timedelta(microseconds=1) if end else t
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError("no offset")
        return t.astimezone(UTC)
    except ValueError as exc:
        raise ApiError(422, "invalid_time", f"{field}: not an RFC 3339 time or a date (YYYY-MM-DD)",
                       code=42210000) from exc


