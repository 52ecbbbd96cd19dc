"""Bars, historical trades and snapshots (Alpaca data API v2 shapes) from the market-data
database.

What it does: :func:`bars` reads one or many symbols' bars of a timeframe (1Min, 5Min, 15Min,
1Hour, 1Day: each its own table, aggregated by ingest as trades arrive -- see
:mod:`marketdata.bars`), ordered by symbol then time (``sort`` asc or desc), at most ``limit``
per page (clamped to 10 000, as Alpaca does) with an opaque ``page_token`` (the last symbol and
time served); :func:`trades` the stored trades likewise (kept ``marketdata_trade_retention_s``
by ingest); :func:`latest_bars` the newest minute bar of each symbol; :func:`snapshots` the
latest trade and quote (Redis) with the newest minute bar and the last two daily bars.

What it deliberately does not do: aggregate anything on a request, or read a shard database.
Symbols and times are parsed by :mod:`api.services.marketdata`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError
from api.services.marketdata import latest_many

MAX_LIMIT = 10_000
TIMEFRAMES = {
    "1Min": "bars_1min", "1T": "bars_1min", "1min": "bars_1min",
    "5Min": "bars_5min", "5T": "bars_5min", "5min": "bars_5min",
    "15Min": "bars_15min", "15T": "bars_15min", "15min": "bars_15min",
    "1Hour": "bars_1hour", "1H": "bars_1hour", "1hour": "bars_1hour",
    "1Day": "bars_1day", "1D": "bars_1day", "1day": "bars_1day",
}
_COLS = "t, o, h, l, c, v, n, vw"


def _num(x: Decimal) -> float | int:
    return int(x) if x == x.to_integral_value() else float(x)


def bar_obj(r: Any) -> dict[str, Any]:
    return {"t": r["t"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "o": _num(r["o"]),
            "h": _num(r["h"]), "l": _num(r["l"]), "c": _num(r["c"]), "v": _num(r["v"]), "n": r["n"],
            "vw": float(round(r["vw"], 6))}


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, "marketdata_unavailable", "bars are unavailable")


def _token(*key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps([str(k) for k in key]).encode()).decode()


def _untoken(token: str, n: int = 2) -> list[str]:
    try:
        if len(token) > 300:
            raise ValueError("too long")
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(key, list) or len(key) != n or not all(isinstance(k, str) for k in key):
            raise ValueError("not a token of this endpoint")
        return key
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(422, "invalid_page_token", "bad page_token", code=42210000) from exc


def _page(limit: int, sort: str) -> int:
    if sort not in ("asc", "desc"):
        raise ApiError(422, "invalid_request", "sort: asc or desc", code=42210000)
    if limit < 1:
        raise ApiError(422, "invalid_request", "limit must be at least 1", code=42210000)
    return min(limit, MAX_LIMIT)  # clamped, as Alpaca does


def _window(symbols: list[str], start: datetime | None, end: datetime | None,
            limit: int) -> dict[str, Any]:
    """The query's symbols, time window (the last day by default) and row bound (one more than a
    page, to know whether another page follows)."""
    now = datetime.now(UTC)
    return {"s": symbols, "a": start or now - timedelta(days=1), "b": end or now, "n": limit + 1}


async def _read_page(engine: AsyncEngine, sql: str, params: dict[str, Any], limit: int,
                     obj: Callable[[Any], dict[str, Any]], token_of: Callable[[Any], str]
                     ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Runs a page query (``limit + 1`` rows at most): the page's objects by symbol, and the next
    page's token from its last row when there was one more row. 503 when the database fails."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(sql), params)).mappings().all()
    except (OperationalError, DBAPIError) as exc:
        raise _unavailable(exc) from exc
    more = len(rows) > limit
    rows = rows[:limit]
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["symbol"], []).append(obj(r))
    return out, (token_of(rows[-1]) if more and rows else None)


async def bars(engine: AsyncEngine, symbols: list[str], *, timeframe: str, start: datetime | None,
               end: datetime | None, limit: int, sort: str, page_token: str | None
               ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """The bars of ``symbols`` by symbol, and the next page's token (None: no more)."""
    table = TIMEFRAMES.get(timeframe)
    if table is None:
        raise ApiError(422, "invalid_timeframe", "timeframe: 1Min, 5Min, 15Min, 1Hour or 1Day",
                       code=42210000)
    limit = _page(limit, sort)
    params = _window(symbols, start, end, limit)
    after = ""
    if page_token:
        ps, pt = _untoken(page_token)
        params["ps"], params["pt"] = ps, _time(pt)
        after = f" AND (symbol > :ps OR (symbol = :ps AND t {'>' if sort == 'asc' else '<'} :pt))"
    sql = (f"SELECT symbol, {_COLS} FROM {table} WHERE symbol = ANY(:s) AND t >= :a AND t <= :b"
           f"{after} ORDER BY symbol, t {sort.upper()} LIMIT :n")
    return await _read_page(engine, sql, params, limit, bar_obj,
                            lambda r: _token(r["symbol"], r["t"].isoformat()))


def _time(s: str) -> datetime:
    try:
        return datetime.fromisoformat(s)
    except ValueError as exc:
        raise ApiError(422, "invalid_page_token", "bad page_token", code=42210000) from exc


def trade_obj(r: Any) -> dict[str, Any]:
    return {"t": r["t"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "x": r["x"],
            "p": _num(r["p"]), "s": int(r["s"]), "c": ["@"], "i": int(r["i"]), "z": r["z"]}


async def trades(engine: AsyncEngine, symbols: list[str], *, start: datetime | None,
                 end: datetime | None, limit: int, sort: str, page_token: str | None
                 ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """The stored trades of ``symbols`` by symbol then time (then id), and the next page's token."""
    limit = _page(limit, sort)
    params = _window(symbols, start, end, limit)
    after = ""
    if page_token:
        ps, pt, pi = _untoken(page_token, 3)
        try:
            params["pi"] = int(pi)
        except ValueError as exc:
            raise ApiError(422, "invalid_page_token", "bad page_token", code=42210000) from exc
        params["ps"], params["pt"] = ps, _time(pt)
        op = ">" if sort == "asc" else "<"
        after = f" AND (symbol > :ps OR (symbol = :ps AND (t, i) {op} (:pt, :pi)))"
    order = sort.upper()
    sql = (f"SELECT symbol, t, i, x, p, s, z FROM trades WHERE symbol = ANY(:s) AND t >= :a AND t <= :b"
           f"{after} ORDER BY symbol, t {order}, i {order} LIMIT :n")
    return await _read_page(engine, sql, params, limit, trade_obj,
                            lambda r: _token(r["symbol"], r["t"].isoformat(), r["i"]))


_LAST = """
SELECT s.symbol, b.* FROM unnest(CAST(:s AS text[])) AS s(symbol)
CROSS JOIN LATERAL (SELECT {cols} FROM {table} x WHERE x.symbol = s.symbol ORDER BY t DESC LIMIT {n}) b
"""


async def _last(engine: AsyncEngine, wants: list[tuple[str, int]],
                symbols: list[str]) -> list[dict[str, list[Any]]]:
    """For each (table, n) of ``wants``: the newest ``n`` bars per symbol, on one connection."""
    out: list[dict[str, list[Any]]] = []
    try:
        async with engine.connect() as conn:
            for table, n in wants:
                rows = (await conn.execute(text(_LAST.format(cols=_COLS, table=table, n=n)),
                                           {"s": symbols})).mappings().all()
                got: dict[str, list[Any]] = {}
                for r in rows:
                    got.setdefault(r["symbol"], []).append(r)
                out.append(got)
    except (OperationalError, DBAPIError) as exc:
        raise _unavailable(exc) from exc
    return out


async def latest_bars(engine: AsyncEngine, symbols: list[str]) -> dict[str, Any]:
    """The newest minute bar of each symbol (symbols without one left out)."""
    (last,) = await _last(engine, [("bars_1min", 1)], symbols)
    return {"bars": {s: bar_obj(rs[0]) for s, rs in sorted(last.items())}}


async def snapshots(redis: Redis | None, prefix: str, engine: AsyncEngine,
                    symbols: list[str]) -> dict[str, dict[str, Any]]:
    """Per symbol: ``latestTrade``, ``latestQuote``, ``minuteBar``, ``dailyBar``,
    ``prevDailyBar`` (each null when there is none); symbols with nothing at all left out."""
    q, t, (minute, daily) = await asyncio.gather(
        latest_many(redis, prefix, "quotes", symbols), latest_many(redis, prefix, "trades", symbols),
        _last(engine, [("bars_1min", 1), ("bars_1day", 2)], symbols))
    quotes, trades = q["quotes"], t["trades"]
    out = {}
    for s in symbols:
        d = daily.get(s, [])
        snap = {"latestTrade": trades.get(s), "latestQuote": quotes.get(s),
                "minuteBar": bar_obj(minute[s][0]) if s in minute else None,
                "dailyBar": bar_obj(d[0]) if d else None,
                "prevDailyBar": bar_obj(d[1]) if len(d) > 1 else None}
        if any(v is not None for v in snap.values()):
            out[s] = snap
    return out
