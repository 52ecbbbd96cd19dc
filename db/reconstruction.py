"""Reads for the audit reconstruction and the daily order-event export, from one shard.

:func:`reconstruct_account` reads, in ONE ``REPEATABLE READ`` read-only snapshot, every fact of
one account recorded up to an instant -- ledger entries (``created_at``), order events
(``created_at``, the state each moved to), executions booked by a ledger transaction posted by
then, corporate-action applications, transfer events -- and hands them to
:func:`domain.reconstruction.reconstruct`, which folds them. :func:`order_events_between` reads
the order events of a time range with their order's columns for ``sherwood audit export``.

What it deliberately does not do: read the current ``orders`` row for anything that changes
(state, filled quantity, hold: those come from the append-only tables; only the request's
columns are taken from the row), read cached ``balances``, or write anything.

A caveat of ``created_at`` (the clock inside the writing transaction): a transaction that was
still open at the instant and committed after it carries times before it. An instant at which
the account was quiet (as a regulator's "as of" usually is, and as the tests take) has none.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.errors import UnknownAccount
from domain.money import plain
from domain.positions import Fill, Split
from domain.reconstruction import (
    EventRow,
    HoldEntry,
    OrderFacts,
    Reconstruction,
    reconstruct,
    utc_micro,
)

_ENTRIES = """
SELECT e.txn_id, la.name, e.amount, e.created_at FROM ledger_entries e
  JOIN ledger_accounts la ON la.id = e.ledger_account_id
 WHERE la.owner_id = :a AND e.created_at <= :t
 ORDER BY e.created_at, e.id
"""

_EVENTS = """
SELECT id, order_id, seq, event, actor, reason, from_state, to_state, ledger_txn_id, data,
       created_at FROM order_events WHERE account_id = :a AND created_at <= :t
 ORDER BY created_at, id
"""

_FACTS = """
SELECT id, client_order_id, symbol, side, order_type, time_in_force, qty, notional, limit_price,
       stop_price, created_at FROM orders
 WHERE id IN (SELECT order_id FROM order_events WHERE account_id = :a AND created_at <= :t)
"""

# what each order had booked: executions whose booking was posted by then
_FILLED = """
SELECT x.order_id, sum(x.qty) AS qty FROM executions x
  JOIN ledger_transactions lt ON lt.id = x.ledger_txn_id
 WHERE x.account_id = :a AND x.qty > 0 AND lt.created_at <= :t
 GROUP BY x.order_id
"""

# the same fills, in the same order, as GET /v2/positions (api/services/positions.py)
_FILLS = """
SELECT x.symbol, x.side, x.qty, x.price, x.raw->>'value' AS value,
       coalesce(lt.created_at, x.received_at) AS at FROM orders o
  JOIN executions x ON x.order_id = o.id
  LEFT JOIN ledger_transactions lt ON lt.id = x.ledger_txn_id
 WHERE o.account_id = :a AND x.qty > 0 AND x.price IS NOT NULL
   AND coalesce(lt.created_at, x.received_at) <= :t
 ORDER BY coalesce(lt.created_at, x.received_at), x.received_at, x.venue, x.exec_id
"""

_RENAMED = """
SELECT a.symbol, c.new_symbol, a.applied_at AS at FROM corporate_action_applications a
  JOIN corporate_actions c ON c.id = a.announcement_id
 WHERE a.account_id = :a AND c.ca_type = 'symbol_change' AND a.applied_at <= :t
"""

_SPLITS = """
SELECT a.symbol, a.applied_at AS at, a.qty, a.new_qty, a.cash, c.new_rate, c.old_rate
  FROM corporate_action_applications a JOIN corporate_actions c ON c.id = a.announcement_id
 WHERE a.account_id = :a AND c.ca_type = 'split' AND a.applied_at <= :t
"""

_TXNS = """
SELECT id, kind, status, error_code, error_detail, memo, created_at FROM ledger_transactions
 WHERE (account_id = :a OR id = ANY(:ids)) AND created_at <= :t
 ORDER BY created_at, id
"""

_TRANSFERS = """
SELECT te.id, te.transfer_id, t.direction, t.transfer_type, t.amount, te.from_status,
       te.to_status, te.reason, te.ledger_txn_id, te.created_at
  FROM transfer_events te JOIN transfers t ON t.id = te.transfer_id
 WHERE te.account_id = :a AND te.created_at <= :t
 ORDER BY te.created_at, te.id
"""


async def _rows(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> list[Any]:
    return list((await conn.execute(text(sql), params)).all())


def _d(v: Any) -> Decimal | None:
    return None if v is None else plain(Decimal(v))


async def reconstruct_account(engine: AsyncEngine, account_id: uuid.UUID,
                              as_of: datetime) -> Reconstruction:
    """The account as it stood at ``as_of`` (see the module docstring); raises
    :class:`UnknownAccount` when the shard has no such account."""
    p: dict[str, Any] = {"a": account_id, "t": as_of}
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            if not await _rows(conn, "SELECT 1 FROM accounts WHERE id = :a", p):
                raise UnknownAccount(f"unknown account {account_id}")
            entries = await _rows(conn, _ENTRIES, p)
            events = await _rows(conn, _EVENTS, p)
            facts = await _rows(conn, _FACTS, p)
            filled = await _rows(conn, _FILLED, p)
            fills = await _rows(conn, _FILLS, p)
            renamed = await _rows(conn, _RENAMED, p)
            splits = await _rows(conn, _SPLITS, p)
            txns = await _rows(conn, _TXNS, {**p, "ids": sorted({e.txn_id for e in entries})})
            transfers = await _rows(conn, _TRANSFERS, p)
    ev = [EventRow(r.id, r.order_id, r.seq, r.event, r.actor, r.reason, r.from_state, r.to_state,
                   r.ledger_txn_id, r.data or {}, r.created_at) for r in events]
    by_txn: dict[str, list[dict[str, str]]] = {}
    for e in entries:
        by_txn.setdefault(e.txn_id, []).append({"account": e.name, "amount": str(plain(e.amount))})
    history: list[tuple[datetime, int, dict[str, Any]]] = []
    for r in ev:
        history.append((r.at, 0, {
            "at": utc_micro(r.at), "type": "order_event", "order_id": str(r.order_id), "seq": r.seq,
            "event": r.event, "actor": r.actor, "reason": r.reason, "from_state": r.from_state,
            "to_state": r.to_state, "ledger_txn_id": r.ledger_txn_id, "data": r.data}))
    for t in txns:
        history.append((t.created_at, 1, {
            "at": utc_micro(t.created_at), "type": "ledger_transaction", "id": t.id, "kind": t.kind,
            "status": t.status, "error_code": t.error_code, "error_detail": t.error_detail,
            "memo": t.memo, "entries": by_txn.get(t.id, [])}))
    for t in transfers:
        history.append((t.created_at, 2, {
            "at": utc_micro(t.created_at), "type": "transfer_event", "transfer_id": str(t.transfer_id),
            "direction": t.direction, "transfer_type": t.transfer_type, "amount": str(plain(t.amount)),
            "from_status": t.from_status, "to_status": t.to_status, "reason": t.reason,
            "ledger_txn_id": t.ledger_txn_id}))
    history.sort(key=lambda h: (h[0], h[1]))
    return reconstruct(
        account_id, as_of,
        entries=[(e.name, Decimal(e.amount)) for e in entries],
        facts=[OrderFacts(r.id, r.client_order_id, r.symbol, r.side, r.order_type, r.time_in_force,
                          _d(r.qty), _d(r.notional), _d(r.limit_price), _d(r.stop_price),
                          r.created_at) for r in facts],
        events=ev,
        filled={r.order_id: Decimal(r.qty) for r in filled},
        hold_entries=[HoldEntry(e.txn_id, e.name, Decimal(e.amount)) for e in entries],
        fills=[(f.at, f.symbol, Fill(f.side, Decimal(f.qty), Decimal(f.price),
                                     None if f.value is None else Decimal(f.value))) for f in fills],
        splits=[(s.at, s.symbol, Split(Decimal(s.new_rate), Decimal(s.old_rate), Decimal(s.qty),
                                       Decimal(s.new_qty), Decimal(s.cash))) for s in splits],
        renamed={r.symbol: (r.new_symbol, r.at) for r in renamed},
        history=[h for _, _, h in history])


_DAY_EVENTS = """
SELECT ev.id, ev.order_id, ev.account_id, ev.seq, ev.event, ev.actor, ev.reason, ev.from_state,
       ev.to_state, ev.data, ev.created_at, o.client_order_id, o.symbol, o.side, o.order_type,
       o.time_in_force, o.qty, o.notional, o.limit_price, o.stop_price, o.venue
  FROM order_events ev JOIN orders o ON o.id = ev.order_id
 WHERE ev.created_at >= :start AND ev.created_at < :end AND ev.id > :after
 ORDER BY ev.id LIMIT :n
"""


async def order_events_between(engine: AsyncEngine, start: datetime, end: datetime,
                               batch: int = 1000) -> AsyncIterator[Any]:
    """Every order event of ``[start, end)`` with its order's columns, by event id, read in
    batches (a day of a busy shard does not sit in memory at once)."""
    after = 0
    while True:
        async with engine.connect() as conn:
            rows = await _rows(conn, _DAY_EVENTS, {"start": start, "end": end, "after": after,
                                                   "n": batch})
        for r in rows:
            yield r
        if len(rows) < batch:
            return
        after = rows[-1].id
