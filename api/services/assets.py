"""Reads of the tradable universe (the ``assets`` table, identical on every shard).

Shard 0 is read first; if it is unreachable the next shard answers, so one shard down does not
take the asset list away from everybody.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.schemas import AssetOut
from db.engines import reading
from db.router import ShardRouter

log = logging.getLogger(__name__)

ASSET_STATUSES = ("active", "inactive")
ASSET_CLASSES = ("us_equity",)
_COLUMNS = ("id, symbol, name, exchange, asset_class, status, tradable, marginable, shortable, "
            "easy_to_borrow, fractionable, restriction, restriction_reason")

T = TypeVar("T")


async def _any_shard(router: ShardRouter, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    last: Exception | None = None
    for shard in range(router.shard_count):
        try:
            async with reading(router.engine(shard)) as conn:
                return await fn(conn)
        except (DBAPIError, OSError) as exc:
            log.warning("assets: shard %s unavailable, trying the next: %s", shard, exc)
            last = exc
    raise ApiError(503, "shard_unavailable", f"no shard can serve the asset list: {last}")


def asset_out(row: RowMapping) -> AssetOut:
    return AssetOut.model_validate({
        "id": str(row["id"]), "class": row["asset_class"], "exchange": row["exchange"],
        "symbol": row["symbol"], "name": row["name"], "status": row["status"],
        "tradable": row["tradable"], "marginable": row["marginable"], "shortable": row["shortable"],
        "easy_to_borrow": row["easy_to_borrow"], "fractionable": row["fractionable"],
        "restriction": row["restriction"], "restriction_reason": row["restriction_reason"],
    })


async def list_assets(
    router: ShardRouter, *, status: str | None = None, asset_class: str | None = None,
    exchange: str | None = None,
) -> list[AssetOut]:
    if status is not None and status not in ASSET_STATUSES:
        raise ApiError(422, "invalid_request", f"status must be one of {', '.join(ASSET_STATUSES)}",
                       code=42210000)
    if asset_class is not None and asset_class not in ASSET_CLASSES:
        raise ApiError(422, "invalid_request",
                       f"asset_class must be one of {', '.join(ASSET_CLASSES)}", code=42210000)
    where: list[str] = []
    params: dict[str, object] = {}
    for column, value in (("status", status), ("asset_class", asset_class), ("exchange", exchange)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    sql = f"SELECT {_COLUMNS} FROM assets"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY symbol"

    async def _do(conn: AsyncConnection) -> list[Any]:
        return list((await conn.execute(text(sql), params)).mappings().all())

    return [asset_out(r) for r in await _any_shard(router, _do)]


async def get_asset(router: ShardRouter, symbol_or_id: str) -> AssetOut:
    """One asset by symbol (case-insensitive) or by id; 404 if unknown."""
    try:
        asset_id: uuid.UUID | None = uuid.UUID(symbol_or_id)
    except ValueError:
        asset_id = None

    async def _do(conn: AsyncConnection) -> RowMapping | None:
        column = "id" if asset_id is not None else "symbol"
        value: object = asset_id if asset_id is not None else symbol_or_id.strip().upper()
        return (await conn.execute(text(f"SELECT {_COLUMNS} FROM assets WHERE {column} = :v"),
                                   {"v": value})).mappings().one_or_none()

    row = await _any_shard(router, _do)
    if row is None:
        raise ApiError(404, "not_found", f"asset not found for {symbol_or_id}", code=40410000)
    return asset_out(row)
