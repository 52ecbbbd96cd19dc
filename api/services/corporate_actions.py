"""``GET /v2/corporate_actions/announcements``: the announcements the back office recorded
(shard table ``corporate_actions``, written by the CorporateActions workflow), read from the
account's shard, in Alpaca's shape. Alpaca's parameters: ``ca_types`` (required, comma
separated), ``since`` / ``until`` (dates, at most 90 days apart), ``symbol``, ``date_type``."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text

from api.errors import ApiError
from db.engines import reading
from db.router import ShardRouter
from domain.alpaca import number
from domain.ledger import valid_symbol

ANNOUNCEMENT_NS = uuid.UUID("6f1c0b52-4a8e-4d55-9b8e-0c3f2a7d9e41")
CA_TYPES = ("dividend", "merger", "spinoff", "split")
DATE_TYPES = {"ex_date": "ex_date", "record_date": "record_date", "payable_date": "payable_date",
              "declaration_date": "recorded_at::date"}
MAX_RANGE = timedelta(days=90)


def _date(value: str, name: str) -> date:
    try:
        if len(value) > 32:
            raise ValueError(value)
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ApiError(422, "invalid_date", f"{name} must be a date (YYYY-MM-DD)", code=42210000) from None


async def announcements(router: ShardRouter, account_id: uuid.UUID, *, ca_types: str, since: str,
                        until: str, symbol: str | None, date_type: str | None) -> list[dict[str, Any]]:
    types = [t.strip() for t in ca_types.split(",") if t.strip()]
    if not types or any(t not in CA_TYPES for t in types):
        raise ApiError(422, "invalid_ca_types", f"ca_types must name some of {', '.join(CA_TYPES)}",
                       code=42210000)
    start, end = _date(since, "since"), _date(until, "until")
    if end < start or end - start > MAX_RANGE:
        raise ApiError(422, "invalid_date_range", "until must be on or after since, at most 90 days",
                       code=42210000)
    if symbol is not None and not valid_symbol(symbol.upper()):
        raise ApiError(422, "invalid_symbol", "symbol must be a ticker", code=42210000)
    column = DATE_TYPES.get(date_type or "ex_date")
    if column is None:
        raise ApiError(422, "invalid_date_type", f"date_type must be one of {', '.join(DATE_TYPES)}",
                       code=42210000)
    shard = await router.shard_for(account_id)
    async with reading(router.engine(shard)) as conn:
        rows = (await conn.execute(text(
            f"SELECT * FROM corporate_actions WHERE ca_type = ANY(:t) AND {column} BETWEEN :a AND :b "
            "AND (CAST(:s AS text) IS NULL OR symbol = :s) ORDER BY ex_date, id"),
            {"t": types, "a": start, "b": end, "s": symbol.upper() if symbol else None})).all()
    return [{
        "id": str(uuid.uuid5(ANNOUNCEMENT_NS, r.id)), "corporate_action_id": r.id,
        "ca_type": r.ca_type, "ca_sub_type": r.ca_sub_type, "initiating_symbol": r.symbol,
        "initiating_original_cusip": "", "target_symbol": r.symbol, "target_original_cusip": "",
        "declaration_date": r.recorded_at.date().isoformat(), "ex_date": r.ex_date.isoformat(),
        "record_date": r.record_date.isoformat() if r.record_date else None,
        "payable_date": r.payable_date.isoformat() if r.payable_date else None,
        "cash": number(r.cash) or "0", "old_rate": number(r.old_rate) or "1",
        "new_rate": number(r.new_rate) or "1",
    } for r in rows]
