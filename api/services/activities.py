"""Account activities (Alpaca's ``/v2/account/activities``) read from the account's shard.

- **Trade activities** (``FILL``): one per execution with a quantity (``executions.qty > 0``).
  ``cum_qty`` / ``leaves_qty`` are recomputed from our own booked fills of the order (in booking
  order), so they never depend on what a venue put in its report; ``type`` is ``fill`` when the
  order was complete after that execution, else ``partial_fill``; ``order_status`` likewise.
  ``transaction_time`` is the venue's TransactTime, else when we booked it.
- **Non-trade activities**: every posted ledger transaction of the account that is not part of
  trading (holds, releases, fills, settlement) and changes the customer's USD
  (``cash + cash_held + cash_unsettled``): ``deposit*`` -> ``CSD``, ``withdraw*`` -> ``CSW``,
  ``fee*`` -> ``FEE``, ``dividend`` -> ``DIV`` (symbol, qty, per-share amount), ``split`` ->
  ``SPLIT`` (symbol, the new qty; listed even without cash in lieu), ``symbol_change`` ->
  ``REORG`` (the new symbol and qty), anything else (operator
  corrections, reversals) -> ``JNLC``.
  ``net_amount`` is that signed change (a returned ACH deposit is a negative ``CSD``).

Ids are ``<UTC time, microseconds: YYYYMMDDHHMMSSffffff>::<uuid>`` (Alpaca's shape), the uuid
derived from the event (venue + ExecID, ledger transaction id). The id is the sort key, so it
doubles as ``page_token``: the next page starts strictly after it in the requested direction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from api.errors import ApiError
from api.schemas import CashActivityOut, FillActivityOut
from db.router import ShardRouter
from domain.alpaca import cash_activity, fill_activity

NY = ZoneInfo("America/New_York")
MAX_PAGE_SIZE = 100

# Every activity type Alpaca defines (a type we never produce simply returns nothing).
ACTIVITY_TYPES = frozenset({
    "FILL", "TRANS", "MISC", "ACATC", "ACATS", "CFEE", "CSD", "CSW", "DIV", "DIVCGL", "DIVCGS",
    "DIVFEE", "DIVFT", "DIVNRA", "DIVROC", "DIVTW", "DIVTXEX", "FEE", "INT", "INTNRA", "INTTW",
    "JNL", "JNLC", "JNLS", "MA", "NC", "OPASN", "OPEXP", "OPXRC", "PTC", "PTR", "REORG", "SC",
    "SSO", "SSP", "SPLIT",
})
CASH_TYPES = frozenset({"CSD", "CSW", "FEE", "JNLC", "DIV", "SPLIT", "REORG"})
# Ledger transaction kinds that belong to trading (shown as FILL activities, or not at all).
TRADE_KINDS = ("hold_cash", "release_cash", "hold_shares", "release_shares", "buy_fill",
               "sell_fill", "house_fill", "settle", "clearing_close")
def fill_uuid(venue: str, exec_id: str) -> uuid.UUID:
    """Stable id of one execution (the same as the database computes: md5 as a uuid)."""
    return uuid.UUID(hashlib.md5(f"fill:{venue}:{exec_id}".encode(), usedforsecurity=False).hexdigest())


def cash_uuid(txn_id: str) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"cash:{txn_id}".encode(), usedforsecurity=False).hexdigest())


def parse_activity_id(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        ts, _, aid = token.partition("::")
        if len(ts) != 20 or not ts.isdigit():
            raise ValueError(ts)
        return datetime.strptime(ts, "%Y%m%d%H%M%S%f").replace(tzinfo=UTC), uuid.UUID(aid)
    except ValueError:
        raise ApiError(422, "invalid_request", f"page_token: {token!r} is not an activity id",
                       code=42210000) from None


def parse_time(value: str, field: str) -> datetime:
    """An RFC 3339 time, or a date (midnight New York). Naive times are New York time."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), NY)
        t = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError:
        raise ApiError(422, "invalid_request", f"{field}: {value!r} is not a date or RFC 3339 time",
                       code=42210000) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=NY)


@dataclass(frozen=True)
class ActivityQuery:
    types: frozenset[str]
    after: datetime | None = None  # exclusive
    until: datetime | None = None  # exclusive
    direction: str = "desc"
    page_size: int = MAX_PAGE_SIZE
    cursor: tuple[datetime, uuid.UUID] | None = None


def build_query(
    *, activity_types: str | None = None, activity_type: str | None = None, date_: str | None = None,
    after: str | None = None, until: str | None = None, direction: str = "desc",
    page_size: int = MAX_PAGE_SIZE, page_token: str | None = None,
) -> ActivityQuery:
    """Validate Alpaca's query parameters (422 on anything malformed)."""
    if activity_type is not None:
        wanted = {activity_type.strip().upper()}
    elif activity_types:
        wanted = {t.strip().upper() for t in activity_types.split(",") if t.strip()}
    else:
        wanted = set(ACTIVITY_TYPES)
    unknown = sorted(wanted - ACTIVITY_TYPES)
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown activity type(s): {', '.join(unknown)}",
                       code=42210000)
    if direction not in ("asc", "desc"):
        raise ApiError(422, "invalid_request", "direction must be asc or desc", code=42210000)
    if page_size < 1:
        raise ApiError(422, "invalid_request", "page_size must be at least 1", code=42210000)
    page_size = min(page_size, MAX_PAGE_SIZE)  # clamped, as Alpaca does
    lo = parse_time(after, "after") if after else None
    hi = parse_time(until, "until") if until else None
    if date_:
        start = parse_time(date_[:10], "date")
        lo, hi = start - timedelta(microseconds=1), start + timedelta(days=1)
    cursor = parse_activity_id(page_token) if page_token else None
    return ActivityQuery(frozenset(wanted), lo, hi, direction, page_size, cursor)


_FILLS = """
SELECT * FROM (
  SELECT e.order_id, e.symbol, e.side, e.qty, e.price, o.qty AS order_qty,
         sum(e.qty) OVER (PARTITION BY e.order_id ORDER BY coalesce(lt.created_at, e.received_at),
                          e.received_at, e.venue, e.exec_id) AS cum_qty,
         coalesce(e.transact_time, lt.created_at, e.received_at) AS at,
         md5('fill:' || e.venue || ':' || e.exec_id)::uuid AS aid
    FROM orders o JOIN executions e ON e.order_id = o.id
    LEFT JOIN ledger_transactions lt ON lt.id = e.ledger_txn_id
   WHERE o.account_id = :a AND e.qty > 0 AND e.price IS NOT NULL
) f WHERE true {filters}
ORDER BY at {dir}, aid {dir} LIMIT :n
"""

_CASH = """
SELECT * FROM (
  SELECT lt.id AS txn_id, lt.kind, lt.created_at AS at, md5('cash:' || lt.id)::uuid AS aid,
         CASE WHEN lt.kind LIKE 'deposit%' THEN 'CSD' WHEN lt.kind LIKE 'withdraw%' THEN 'CSW'
              WHEN lt.kind LIKE 'fee%' THEN 'FEE' WHEN lt.kind = 'dividend' THEN 'DIV'
              WHEN lt.kind = 'split' THEN 'SPLIT' WHEN lt.kind = 'symbol_change' THEN 'REORG'
              ELSE 'JNLC' END AS activity_type, lt.memo,
         (SELECT coalesce(sum(en.amount), 0) FROM ledger_entries en
            JOIN ledger_accounts la ON la.id = en.ledger_account_id
           WHERE en.txn_id = lt.id AND la.owner_id = :a AND en.currency = 'USD') AS net
    FROM ledger_transactions lt
   WHERE lt.account_id = :a AND lt.status = 'posted' AND NOT (lt.kind = ANY(:trade_kinds))
) c WHERE (c.net <> 0 OR c.activity_type IN ('SPLIT', 'REORG')) AND c.activity_type = ANY(:types) {filters}
ORDER BY at {dir}, aid {dir} LIMIT :n
"""


def _filters(q: ActivityQuery, params: dict[str, Any]) -> str:
    parts = []
    if q.after is not None:
        parts.append("at > :after")
        params["after"] = q.after
    if q.until is not None:
        parts.append("at < :until")
        params["until"] = q.until
    if q.cursor is not None:
        parts.append(f"(at, aid) {'<' if q.direction == 'desc' else '>'} (:ct, :ca)")
        params["ct"], params["ca"] = q.cursor
    return "".join(f" AND {p}" for p in parts)


def fill_out(r: Any) -> FillActivityOut:
    return FillActivityOut(**fill_activity(
        at=r.at, aid=r.aid, order_id=str(r.order_id), symbol=r.symbol, side=r.side, qty=Decimal(r.qty),
        price=Decimal(r.price), order_qty=None if r.order_qty is None else Decimal(r.order_qty),
        cum_qty=Decimal(r.cum_qty)))


def cash_out(r: Any) -> CashActivityOut:
    return CashActivityOut(**cash_activity(at=r.at, aid=r.aid, activity_type=r.activity_type,
                                           kind=r.kind, net=Decimal(r.net), memo=r.memo))


async def list_activities(
    router: ShardRouter, account_id: uuid.UUID, q: ActivityQuery
) -> list[FillActivityOut | CashActivityOut]:
    """One page of the account's activities, newest first unless ``direction=asc``."""
    shard = await router.shard_for(account_id)
    rows: list[tuple[datetime, str, FillActivityOut | CashActivityOut]] = []
    # its own begin() below ends it with COMMIT (see db.engines.reading)
    async with router.engine(shard).connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            if "FILL" in q.types:
                params: dict[str, Any] = {"a": account_id, "n": q.page_size}
                sql = _FILLS.format(filters=_filters(q, params), dir=q.direction.upper())
                for r in (await conn.execute(text(sql), params)).all():
                    rows.append((r.at, str(r.aid), fill_out(r)))
            cash_types = sorted(q.types & CASH_TYPES)
            if cash_types:
                params = {"a": account_id, "n": q.page_size, "types": cash_types,
                          "trade_kinds": list(TRADE_KINDS)}
                sql = _CASH.format(filters=_filters(q, params), dir=q.direction.upper())
                for r in (await conn.execute(text(sql), params)).all():
                    rows.append((r.at, str(r.aid), cash_out(r)))
    rows.sort(key=lambda x: (x[0], x[1]), reverse=q.direction == "desc")
    return [a for _, _, a in rows[: q.page_size]]
