"""The order store's writer (``db.orders``): carries out the decisions of one transaction --
ledger postings, executions, good-faith and shortfall records as each decision comes; the order
rows, audit events, trade updates (outbox) and execution bookings in one statement before the
commit. Also the order row's lock.

Deliberately no decision here (``domain.order_machine`` decides) and no transaction of its own
(the store's ``_tx`` opens it, the caller commits or rolls it back).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from db import sql
from db.errors import LedgerRejected
from db.gfv import record_gfv_if_any
from db.ledger import PostResult, post
from db.shortfalls import cover_if_settled, record_fill_shortfall
from db.sql import Row
from domain import calendar, fractional
from domain.admission import leaves_transit
from domain.alpaca import trade_update
from domain.execution_quality import FillRecord
from domain.ledger import LedgerTxn
from domain.money import plain
from domain.order_decision import Decision, Execution
from domain.order_row import OrderRow
from domain.orders import TERMINAL, OrderError, OrderSnapshot, OrderState


class _Writer:
    """Writes the decisions of one transaction. Ledger transactions, executions and
    good-faith checks go out as each decision comes; the order rows, audit events, trade
    updates and execution bookings are written by ONE statement just before the commit
    (:meth:`flush`): however many steps an order takes in the transaction (a market order's
    ROUTED, ACKED and FILLED in one), its row is inserted or updated once, and events and
    updates cost no round trip of their own. Rolled back with everything else.

    Deliberately, the order row (and an execution's booking) is not in the database until the
    end of the transaction: nothing in a transaction reads back an order row or a booking it
    wrote; decisions are made against the row in memory, which equals the row written."""

    def __init__(self, conn: sql.Conn, house_stripes: int,
                 instant_allowance: Decimal) -> None:
        self.conn = conn
        self.house_stripes = house_stripes
        self.instant_allowance = instant_allowance
        self.events: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self._per_order: dict[str, int] = {}
        self._inserts: dict[str, dict[str, Any]] = {}
        self._sets: dict[str, dict[str, Any]] = {}
        self._booked: list[dict[str, str]] = []
        self.house_filled = False  # the firm filled a fraction in this transaction
        # (state entered, why, the order's acceptance time if it ended): counted after the commit
        self.transitions: list[tuple[str, str | None, datetime | None]] = []
        # orders out of transit (domain.admission): their admission slots go back after the commit
        self.released: list[str] = []

    async def record(self, row: OrderRow, ex: Execution) -> bool:
        """Insert one execution row; False when (venue, exec_id) was recorded before."""
        fresh = await sql.first(self.conn, _INSERT_EXECUTION, {
            "v": ex.venue, "e": ex.exec_id, "o": row.id, "a": row.account_id, "sym": row.symbol,
            "side": row.side, "et": ex.kind, "q": ex.qty, "p": ex.price, "cq": ex.cum_qty,
            "lq": ex.leaves_qty, "ap": ex.avg_px, "tt": ex.transact_time,
            "raw": json.dumps(dict(ex.raw)), **_quality(ex.quality)})
        return fresh is not None

    async def write(self, d: Decision, *, posted: bool = False) -> OrderRow:
        """Carry out one decision (the row and trail at :meth:`flush`); returns the row after.
        ``posted``: its ledger transactions are posted already."""
        order = d.order
        for ex in d.executions:
            await self.record(order, ex)
        for txn in () if posted else d.postings:
            result = await self.post(txn)
            if not result.ok:
                # a decision the ledger refuses is never half written: the caller rolls back
                raise LedgerRejected(f"{txn.id}: {result.error_detail}", code=result.error_code)
        for sold in d.sells:
            await record_gfv_if_any(self.conn, order.account_id, sold.symbol, sold.qty, sold.trade_date)
        for top in d.topups:  # a fill above the hold may have taken cash below zero
            await record_fill_shortfall(self.conn, order.account_id, order.id, top.venue, top.exec_id,
                                        top.amount, self.instant_allowance)
        if d.releases_cash:  # cash back: an open shortfall may be covered now
            await cover_if_settled(self.conn, order.account_id)
        key = str(order.id)
        if d.insert:
            self._inserts[key] = order.columns()
        elif d.changes:
            target = self._inserts[key] if key in self._inserts else self._sets.setdefault(key, {})
            target.update(d.changes)
        for e in d.events:
            order_key = str(e.order_id)
            self._per_order[order_key] = n = self._per_order.get(order_key, 0) + 1
            if e.to_state and e.to_state != e.from_state:  # a change, not a step within the state
                ended = OrderState(e.to_state) in TERMINAL
                rejected = e.to_state == OrderState.REJECTED and order.reject_code
                why = order.reject_code if rejected else e.event
                self.transitions.append((str(e.to_state), why, order.created_at if ended else None))
                if leaves_transit(e.from_state, e.to_state):
                    self.released.append(order_key)
            self.events.append({
                "order_id": order_key, "account_id": str(e.account_id), "n": n, "event": e.event,
                "actor": e.actor, "reason": e.reason, "from_state": e.from_state,
                "to_state": e.to_state, "ledger_txn_id": e.ledger_txn, "data": dict(e.data)})
        for u in d.updates:
            position = (await self._position(u.order.account_id, u.position_of)
                        if u.position_of is not None else None)
            self.updates.append({"n": len(self.updates) + 1, "key": str(u.order.account_id),
                                 "payload": trade_update(u, position_qty=position)})
        for b in d.bookings:
            self._booked.append({"v": b.venue, "e": b.exec_id, "l": b.ledger_txn,
                                 "td": b.trade_date.isoformat(),
                                 "sd": calendar.settle_date(b.trade_date).isoformat()})
        return order

    async def post(self, txn: LedgerTxn) -> PostResult:
        self.house_filled |= txn.kind == "house_fill"
        return await post(self.conn, txn, house_stripes=self.house_stripes)

    async def flag_rebalance(self, snap: OrderSnapshot) -> OrderSnapshot:
        """Mark the snapshot when this transaction's fill by the firm left its inventory of the
        symbol a whole share or more from zero (the workflow then starts the rebalance)."""
        if self.house_filled:
            inventory = Decimal(await sql.scalar(self.conn, _HOUSE_BALANCE,
                                                 {"n": f"inventory:{snap.symbol}"}))
            snap.rebalance = fractional.rebalance_plan(inventory) is not None
        return snap

    async def _position(self, account: uuid.UUID, symbol: str) -> Decimal:
        q = await sql.scalar(self.conn, _POSITION, {
            "a": account, "s1": f"shares:{symbol}", "s2": f"shares_held:{symbol}",
            "s3": f"shares_unsettled:{symbol}"})
        return plain(Decimal(q))

    async def flush(self) -> list[Row]:
        """Write the rows and the trail; returns the outbox rows written (id, key, payload)."""
        if not (self.events or self.updates or self._inserts or self._sets or self._booked):
            return []
        rows: list[str] = []
        params: dict[str, Any] = {"events": json.dumps(self.events, default=str),
                                  "updates": json.dumps(self.updates, default=str)}
        for i, row in enumerate(self._inserts.values()):
            names, marks = ", ".join(row), ", ".join(f":i{i}_{k}" for k in row)
            rows.append(f"i{i} AS (INSERT INTO orders ({names}) VALUES ({marks}))")
            params.update({f"i{i}_{k}": _value(v) for k, v in row.items()})
        for j, (order, changed) in enumerate(self._sets.items()):
            sets = ", ".join(f"{k} = :u{j}_{k}" for k in changed)
            rows.append(f"u{j} AS (UPDATE orders SET {sets} WHERE id = :u{j}__id)")
            params.update({f"u{j}_{k}": _value(v) for k, v in changed.items()})
            params[f"u{j}__id"] = uuid.UUID(order)
        if self._booked:
            rows.append(f"b AS ({BOOK_EXECUTIONS})")
            params.update(booked=json.dumps(self._booked), bv=[b["v"] for b in self._booked],
                          be=[b["e"] for b in self._booked])
        # the rows first: the events' foreign key is checked at the end of the statement
        return await sql.rows(self.conn, "WITH " + "".join(f"{r},\n" for r in rows) + _WRITE_TRAIL,
                              params)


def _quality(q: FillRecord | None) -> dict[str, Any]:
    """The execution row's route and quality columns (shard migration 0016); NULLs without."""
    if q is None:
        return dict.fromkeys(("rv", "ro", "rt", "nb", "na", "age", "ra", "sr", "pi", "es"))
    return {"rv": q.route_venue, "ro": q.route_order_id, "rt": q.route_order_type,
            "nb": q.nbbo_bid, "na": q.nbbo_ask, "age": q.nbbo_age_ms, "ra": q.routed_at,
            "sr": q.since_routed_ms, "pi": q.improvement_per_share, "es": q.effective_spread}


def _value(v: Any) -> Any:
    if isinstance(v, OrderState):
        return v.value
    if isinstance(v, dict):  # hold_sources (jsonb): decimals as strings
        return json.dumps({k: str(x) for k, x in v.items()})
    return v


# The bookings of this transaction's executions. The key lists repeat the join's keys (they
# filter nothing more): without them the planner, expecting 100 rows of jsonb_to_recordset,
# hashed them against a scan of the whole executions table, once per fill booked.
BOOK_EXECUTIONS = """UPDATE executions x SET ledger_txn_id = b.l, trade_date = b.td, settle_date = b.sd
  FROM jsonb_to_recordset(CAST(:booked AS jsonb)) AS b(v text, e text, l text, td date, sd date)
 WHERE x.venue = b.v AND x.exec_id = b.e
   AND x.venue = ANY(CAST(:bv AS text[])) AND x.exec_id = ANY(CAST(:be AS text[]))"""


_INSERT_EXECUTION = """
INSERT INTO executions (venue, exec_id, order_id, account_id, symbol, side, exec_type, qty, price,
                        cum_qty, leaves_qty, avg_px, transact_time, raw,
                        route_venue, route_order_id, route_order_type, nbbo_bid, nbbo_ask,
                        nbbo_age_ms, routed_at, since_routed_ms, improvement_per_share,
                        effective_spread)
VALUES (:v, :e, :o, :a, :sym, :side, :et, :q, :p, :cq, :lq, :ap, :tt, CAST(:raw AS jsonb),
        :rv, :ro, :rt, :nb, :na, :age, :ra, :sr, :pi, :es)
ON CONFLICT (venue, exec_id) DO NOTHING RETURNING exec_id
"""


_POSITION = """
SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la
  JOIN balances b ON b.ledger_account_id = la.id
 WHERE la.owner_id = :a AND la.name IN (:s1, :s2, :s3)
"""


_WRITE_TRAIL = """events AS (
  INSERT INTO order_events (order_id, account_id, seq, event, actor, reason, from_state, to_state,
                            ledger_txn_id, data)
  SELECT e.order_id, e.account_id,
         coalesce((SELECT max(x.seq) FROM order_events x WHERE x.order_id = e.order_id), 0) + e.n,
         e.event, e.actor, e.reason, e.from_state, e.to_state, e.ledger_txn_id, e.data
    FROM jsonb_to_recordset(CAST(:events AS jsonb))
         AS e(order_id uuid, account_id uuid, n int, event text, actor text, reason text,
              from_state text, to_state text, ledger_txn_id text, data jsonb)
   ORDER BY e.order_id, e.n
)
INSERT INTO outbox (topic, key, payload)
SELECT 'trade_updates', u.key, u.payload
  FROM jsonb_to_recordset(CAST(:updates AS jsonb)) AS u(n int, key text, payload jsonb)
 ORDER BY u.n
RETURNING id, key, payload::text AS payload
"""


_HOUSE_BALANCE = """
SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id
 WHERE la.owner_id IS NULL AND la.name = :n
"""


async def _lock(conn: sql.Conn, order_id: str) -> OrderRow:
    row = await sql.first(conn, "SELECT * FROM orders WHERE id = :id FOR UPDATE",
                          {"id": uuid.UUID(order_id)})
    if row is None:
        raise OrderError(f"no order {order_id} on this shard", code="unknown_order")
    return OrderRow.from_mapping(row)
