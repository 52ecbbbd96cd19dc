"""The books' invariants on one shard, checked in ONE consistent snapshot.

:func:`audit_shard` runs every :data:`INVARIANTS` query inside one ``REPEATABLE READ``, read-only
transaction on the shard, so every query sees the same moment of the books. Each query returns
rows ONLY when something is wrong: a clean shard returns no row at all. What it returns,
:class:`AuditReport`, keeps the first :data:`ROWS_KEPT` rows of each violated invariant and how
many there are.

Balances are computed from ``ledger_entries`` (the ledger of record); that the cached
``balances`` agree with them is an invariant of its own (``cached_balances``), so a corrupted cache
is reported once, by that invariant, and not again by every check that reads a balance.

Used by ``sherwood audit invariants`` (sherwood/cli_audit.py) and by the end-of-day
reconciliation (:func:`db.shard_status.reconcile_and_record`), which halts a shard whose audit
finds anything. It changes nothing: what to do about a violation is an operator's decision
(docs/operations.md, "A failed reconciliation").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.money import plain

ROWS_KEPT = 20  # rows kept per violated invariant (the count says how many there are)

# The order states in which an order holds nothing (domain.orders.TERMINAL).
_TERMINAL = "('FILLED', 'REJECTED', 'CANCELED', 'EXPIRED', 'FAILED', 'REPLACED')"


@dataclass(frozen=True)
class Invariant:
    name: str
    description: str
    sql: str  # returns rows only when the invariant is violated, each row one offence


UNBALANCED_TRANSACTIONS = r"""
-- Wrong: a ledger transaction's entries do not sum to zero in one of its currencies, or a
-- transaction that is not posted carries entries. The database's commit trigger refuses both;
-- only a write with triggers disabled (or a broken trigger) gets here.
SELECT e.txn_id, t.kind, t.status, t.account_id, e.currency, sum(e.amount) AS total
  FROM ledger_entries e
  JOIN ledger_transactions t ON t.id = e.txn_id
 GROUP BY e.txn_id, t.kind, t.status, t.account_id, e.currency
HAVING sum(e.amount) <> 0 OR t.status <> 'posted'
 ORDER BY e.txn_id, e.currency
"""

CACHED_BALANCES = r"""
-- Wrong: a cached balance differs from the sum of its ledger account's entries. House accounts
-- are striped (several balance rows): their cached balance is the sum of the stripes.
SELECT la.id AS ledger_account_id, la.owner_id AS account_id, la.name,
       coalesce(e.total, 0) AS from_entries, coalesce(b.total, 0) AS cached
  FROM ledger_accounts la
  LEFT JOIN (SELECT ledger_account_id, sum(amount) AS total
               FROM ledger_entries GROUP BY ledger_account_id) e ON e.ledger_account_id = la.id
  LEFT JOIN (SELECT ledger_account_id, sum(balance) AS total
               FROM balances GROUP BY ledger_account_id) b ON b.ledger_account_id = la.id
 WHERE coalesce(e.total, 0) <> coalesce(b.total, 0)
 ORDER BY la.id
"""

NEGATIVE_WITHOUT_CAUSE = r"""
-- Wrong: a customer's ledger account is below zero without a recorded cause. The one cause the
-- books record is an open shortfall (shortfalls.covered_at IS NULL: an ACH deposit returned after
-- its money was used, a buy filled above its hold), and it explains negative `cash` only; any
-- other customer account (cash_held, cash_unsettled, shares*) below zero is always wrong.
WITH balance AS (
    SELECT la.owner_id AS account_id, la.name, sum(e.amount) AS balance
      FROM ledger_accounts la
      JOIN ledger_entries e ON e.ledger_account_id = la.id
     WHERE la.owner_id IS NOT NULL
     GROUP BY la.id
), open_shortfall AS (
    SELECT account_id, sum(amount) AS amount
      FROM shortfalls WHERE covered_at IS NULL GROUP BY account_id
)
SELECT b.account_id, b.name, b.balance, s.amount AS open_shortfalls
  FROM balance b
  LEFT JOIN open_shortfall s ON s.account_id = b.account_id
 WHERE b.balance < 0
   AND NOT (b.name = 'cash' AND s.account_id IS NOT NULL)
 ORDER BY b.account_id, b.name
"""

FILL_BOOKINGS = r"""
-- Wrong: a fill (an execution with qty > 0) without exactly one posted booking of its shape, or a
-- posted fill transaction that no fill points at. The shape is domain.ledger's buy_fill /
-- sell_fill: kind buy_fill for a buy, sell_fill for a sell (the only kinds a fill was ever
-- booked with, operator resolutions included), posted for the execution's account, and moving
--   buy:  shares_unsettled:SYM +qty, the customer's cash -value (cash_held -value; a top-up above
--         the hold moves cash -> cash_held inside it), clearing_cash +value, clearing_shares:SYM -qty
--   sell: shares_held:SYM -qty, the proceeds lot of its settlement date cash_unsettled@<date>
--         +value (the undated pool cash_unsettled for sales booked before lots existed),
--         clearing_cash -value, clearing_shares:SYM +qty
-- (value = qty x price) and nothing else. A fill by the firm (venue 'house', domain.fractional)
-- has kind house_fill, its value as booked (raw.value: a fraction to the cent, a notional order
-- its notional) and the firm's inventory_cash / inventory:SYM in place of the clearing accounts.
WITH fill AS (
    SELECT x.venue, x.exec_id, x.order_id, x.account_id, x.side, x.symbol, x.qty, x.price,
           CASE WHEN x.venue = 'house' THEN (x.raw->>'value')::numeric ELSE x.qty * x.price END
             AS value, x.ledger_txn_id, x.settle_date,
           CASE x.side WHEN 'buy' THEN 1 ELSE -1 END AS sign,
           CASE WHEN x.venue = 'house' THEN 'inventory_cash' ELSE 'clearing_cash' END AS street_cash,
           CASE WHEN x.venue = 'house' THEN 'inventory:' ELSE 'clearing_shares:' END || x.symbol
             AS street_shares,
           CASE WHEN x.venue = 'house' THEN 'house_fill' ELSE x.side || '_fill' END AS fill_kind
      FROM executions x
     WHERE x.qty > 0
), leg AS (  -- each entry of a fill's booking, named by the part of the shape it is
    SELECT f.venue, f.exec_id, e.amount,
           CASE
             WHEN la.owner_id = f.account_id AND la.name = CASE f.side
                      WHEN 'buy' THEN 'shares_unsettled:' ELSE 'shares_held:' END || f.symbol
               THEN 'customer_shares'
             WHEN la.owner_id = f.account_id AND f.side = 'buy' AND la.name IN ('cash', 'cash_held')
               THEN 'customer_cash'
             WHEN la.owner_id = f.account_id AND f.side = 'sell'
                  AND la.name IN ('cash_unsettled', 'cash_unsettled@' || f.settle_date::text)
               THEN 'customer_cash'
             WHEN la.owner_id IS NULL AND la.name = f.street_cash THEN 'clearing_cash'
             WHEN la.owner_id IS NULL AND la.name = f.street_shares THEN 'clearing_shares'
             ELSE 'other'
           END AS part
      FROM fill f
      JOIN ledger_entries e ON e.txn_id = f.ledger_txn_id
      JOIN ledger_accounts la ON la.id = e.ledger_account_id
), shape AS (
    SELECT venue, exec_id,
           coalesce(sum(amount) FILTER (WHERE part = 'customer_shares'), 0) AS customer_shares,
           coalesce(sum(amount) FILTER (WHERE part = 'customer_cash'), 0) AS customer_cash,
           coalesce(sum(amount) FILTER (WHERE part = 'clearing_cash'), 0) AS clearing_cash,
           coalesce(sum(amount) FILTER (WHERE part = 'clearing_shares'), 0) AS clearing_shares,
           count(*) FILTER (WHERE part = 'other') AS other_entries
      FROM leg GROUP BY venue, exec_id
), sharing AS (  -- bookings that more than one fill points at
    SELECT ledger_txn_id FROM executions
     WHERE qty > 0 AND ledger_txn_id IS NOT NULL
     GROUP BY ledger_txn_id HAVING count(*) > 1
), checked AS (
    SELECT f.venue, f.exec_id, f.order_id, f.account_id, f.side, f.symbol, f.qty, f.price,
           f.ledger_txn_id, t.kind, t.status, s.customer_shares, s.customer_cash,
           s.clearing_cash, s.clearing_shares, s.other_entries,
           CASE
             WHEN f.ledger_txn_id IS NULL THEN 'not booked'
             WHEN t.status <> 'posted' THEN 'booking not posted'
             WHEN f.ledger_txn_id IN (SELECT ledger_txn_id FROM sharing)
               THEN 'booking shared with another fill'
             WHEN t.kind <> f.fill_kind THEN 'booked with the wrong kind'
             WHEN t.account_id IS DISTINCT FROM f.account_id THEN 'booked for another account'
             WHEN s.customer_shares <> f.sign * f.qty OR s.customer_cash <> -f.sign * f.value
               OR s.clearing_cash <> f.sign * f.value OR s.clearing_shares <> -f.sign * f.qty
               OR s.other_entries <> 0
               THEN 'entries do not match the fill'
           END AS problem
      FROM fill f
      LEFT JOIN ledger_transactions t ON t.id = f.ledger_txn_id
      LEFT JOIN shape s ON s.venue = f.venue AND s.exec_id = f.exec_id
)
SELECT * FROM checked WHERE problem IS NOT NULL
UNION ALL
SELECT NULL, NULL, NULL, t.account_id, NULL, NULL, NULL, NULL, t.id, t.kind, t.status,
       NULL, NULL, NULL, NULL, NULL, 'no fill points at this booking'
  FROM ledger_transactions t
 WHERE t.kind IN ('buy_fill', 'sell_fill', 'house_fill') AND t.status = 'posted'
   AND NOT EXISTS (SELECT 1 FROM executions x WHERE x.ledger_txn_id = t.id AND x.qty > 0)
 ORDER BY venue NULLS LAST, exec_id, ledger_txn_id
"""

ORDER_FILLS = r"""
-- Wrong: an order's filled quantity is not the sum of its executions' quantities (refused and
-- non-fill reports are recorded with quantity 0, so they count nothing).
SELECT o.id AS order_id, o.account_id, o.symbol, o.side, o.state, o.filled_qty,
       coalesce(x.qty, 0) AS executions_qty
  FROM orders o
  LEFT JOIN (SELECT order_id, sum(qty) AS qty FROM executions GROUP BY order_id) x
         ON x.order_id = o.id
 WHERE o.filled_qty <> coalesce(x.qty, 0)
 ORDER BY o.id
"""

TERMINAL_HOLDS = rf"""
-- Wrong: an order that has ended (FILLED, REJECTED, CANCELED, EXPIRED, FAILED) still records a
-- hold: whatever an order holds is released when it ends.
SELECT o.id AS order_id, o.account_id, o.symbol, o.side, o.state, o.hold_amount
  FROM orders o
 WHERE o.state IN {_TERMINAL} AND o.hold_amount <> 0
 ORDER BY o.id
"""

HELD_BALANCES = rf"""
-- Wrong: what the ledger holds for a customer is not what its open orders and pending withdrawals
-- hold: per account, cash_held == the holds of its open (not ended) BUY orders + the amounts of its
-- PENDING OUTGOING transfers; per account and symbol, shares_held:SYM == the holds of its open
-- SELL orders of that symbol.
WITH ledger AS (
    SELECT la.owner_id AS account_id,
           CASE WHEN la.name = 'cash_held' THEN 'USD' ELSE substr(la.name, 13) END AS currency,
           sum(e.amount) AS held
      FROM ledger_accounts la
      JOIN ledger_entries e ON e.ledger_account_id = la.id
     WHERE la.owner_id IS NOT NULL
       AND (la.name = 'cash_held' OR la.name LIKE 'shares\_held:%')
     GROUP BY la.owner_id, la.name
), holds AS (
    SELECT account_id, CASE side WHEN 'buy' THEN 'USD' ELSE symbol END AS currency,
           hold_amount AS orders, 0 AS withdrawals
      FROM orders WHERE state NOT IN {_TERMINAL}
    UNION ALL
    SELECT account_id, 'USD', 0, amount
      FROM transfers WHERE direction = 'OUTGOING' AND status = 'PENDING'
), expected AS (
    SELECT account_id, currency, sum(orders) AS orders, sum(withdrawals) AS withdrawals
      FROM holds GROUP BY account_id, currency
)
SELECT account_id, currency, coalesce(l.held, 0) AS held,
       coalesce(x.orders, 0) AS open_orders, coalesce(x.withdrawals, 0) AS pending_withdrawals
  FROM ledger l
  FULL JOIN expected x USING (account_id, currency)
 WHERE coalesce(l.held, 0) <> coalesce(x.orders, 0) + coalesce(x.withdrawals, 0)
 ORDER BY account_id, currency
"""

CLEARING_ACCOUNTS = r"""
-- Wrong: a house clearing account does not stand at what the booked, unsettled fills put there.
-- A fill (qty > 0, its booking posted) puts value into clearing_cash for a buy and takes it out
-- for a sell, takes shares out of clearing_shares:SYM for a buy and puts them in for a sell;
-- settlement closes exactly the fills it records in `settlements` against bank and custody. So
-- clearing_cash == sum(buy values) - sum(sell values) and clearing_shares:SYM == sold - bought,
-- over the fills with no row in `settlements`. The firm's own fills (venue 'house') never touch
-- clearing.
WITH open_fill AS (
    SELECT x.side, x.symbol, x.qty, x.qty * x.price AS value
      FROM executions x
      JOIN ledger_transactions t ON t.id = x.ledger_txn_id AND t.status = 'posted'
     WHERE x.qty > 0 AND x.venue <> 'house'
       AND NOT EXISTS (SELECT 1 FROM settlements s
                        WHERE s.venue = x.venue AND s.exec_id = x.exec_id)
), expected AS (
    SELECT 'clearing_cash' AS name,
           sum(CASE side WHEN 'buy' THEN value ELSE -value END) AS from_fills
      FROM open_fill
    UNION ALL
    SELECT 'clearing_shares:' || symbol, sum(CASE side WHEN 'buy' THEN -qty ELSE qty END)
      FROM open_fill GROUP BY symbol
), ledger AS (
    SELECT la.name, coalesce(sum(e.amount), 0) AS balance
      FROM ledger_accounts la
      LEFT JOIN ledger_entries e ON e.ledger_account_id = la.id
     WHERE la.owner_id IS NULL
       AND (la.name = 'clearing_cash' OR la.name LIKE 'clearing\_shares:%')
     GROUP BY la.name
)
SELECT name AS ledger_account, coalesce(l.balance, 0) AS balance,
       coalesce(x.from_fills, 0) AS from_fills
  FROM ledger l
  FULL JOIN expected x USING (name)
 WHERE coalesce(l.balance, 0) <> coalesce(x.from_fills, 0)
 ORDER BY name
"""

PROVISIONAL_ACH = r"""
-- Wrong: house ach_provisional does not stand at minus the deposits credited provisionally and
-- not yet settled or returned (PENDING INCOMING transfers). The provisional credit moves
-- ach_provisional -> cash; the bank's settlement (bank -> ach_provisional) or the return
-- (cash -> ach_provisional) brings it back.
WITH ledger AS (
    SELECT coalesce(sum(e.amount), 0) AS balance
      FROM ledger_accounts la
      JOIN ledger_entries e ON e.ledger_account_id = la.id
     WHERE la.owner_id IS NULL AND la.name = 'ach_provisional'
), pending AS (
    SELECT coalesce(sum(amount), 0) AS amount, count(*) AS transfers
      FROM transfers WHERE direction = 'INCOMING' AND status = 'PENDING'
)
SELECT l.balance, -p.amount AS from_transfers, p.transfers AS pending_deposits
  FROM ledger l, pending p
 WHERE l.balance <> -p.amount
"""

UNSETTLED_EXECUTIONS = r"""
-- Wrong: a fill due on or before the last settled business date (the latest settlement run
-- that is done) has no row in `settlements`: settlement skipped it.
WITH last AS (
    SELECT max(business_date) AS settled FROM settlement_runs WHERE status = 'done'
)
SELECT x.venue, x.exec_id, x.order_id, x.account_id, x.symbol, x.side, x.qty,
       x.trade_date, x.settle_date, last.settled AS last_settled
  FROM executions x, last
 WHERE x.qty > 0 AND x.settle_date <= last.settled
   AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.venue = x.venue AND s.exec_id = x.exec_id)
 ORDER BY x.settle_date, x.venue, x.exec_id
"""

INVARIANTS: tuple[Invariant, ...] = (
    Invariant("unbalanced_transactions",
              "every ledger transaction sums to zero per currency", UNBALANCED_TRANSACTIONS),
    Invariant("cached_balances",
              "every cached balance (sum of its stripes) equals the sum of its entries",
              CACHED_BALANCES),
    Invariant("negative_without_cause",
              "no customer account below zero, except cash with an open shortfall",
              NEGATIVE_WITHOUT_CAUSE),
    Invariant("fill_bookings",
              "every fill has exactly one posted booking of its shape, every fill booking a fill",
              FILL_BOOKINGS),
    Invariant("order_fills",
              "every order's filled quantity equals the sum of its executions", ORDER_FILLS),
    Invariant("terminal_holds", "no order that has ended still holds anything", TERMINAL_HOLDS),
    Invariant("held_balances",
              "cash_held and shares_held equal the open orders' holds plus pending withdrawals",
              HELD_BALANCES),
    Invariant("clearing_accounts",
              "clearing_cash and clearing_shares equal the booked, unsettled fills",
              CLEARING_ACCOUNTS),
    Invariant("provisional_ach",
              "ach_provisional equals minus the pending (provisionally credited) deposits",
              PROVISIONAL_ACH),
    Invariant("unsettled_executions",
              "every fill due by the last settled business date is settled", UNSETTLED_EXECUTIONS),
)

BY_NAME = {i.name: i for i in INVARIANTS}


@dataclass(frozen=True)
class Violation:
    """One violated invariant: how many offending rows, and the first of them."""

    invariant: str
    description: str
    count: int
    rows: list[dict[str, str | None]]

    def to_json(self) -> dict[str, Any]:
        return {"description": self.description, "count": self.count, "rows": self.rows}


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit_shard` found on one shard: ``checked`` every invariant it ran, in order;
    ``violations`` those with rows."""

    shard: int
    checked: tuple[str, ...]
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violated(self) -> list[str]:
        return [v.invariant for v in self.violations]

    def to_json(self) -> dict[str, Any]:
        """``{"shard", "ok", "invariants": {name: {"ok", "description", "count", "rows"}}}``,
        every invariant checked (a clean one with count 0 and no rows)."""
        found = {v.invariant: v for v in self.violations}
        out: dict[str, Any] = {}
        for name in self.checked:
            v = found.get(name)
            body = v.to_json() if v else {"description": BY_NAME[name].description, "count": 0,
                                          "rows": []}
            out[name] = {"ok": v is None, **body}
        return {"shard": self.shard, "ok": self.ok, "invariants": out}


def _wire(value: Any) -> str | None:
    """A row value as JSON-safe text (decimals without trailing zeros, ISO dates, uuids)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(plain(value), "f")
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | int | str):
        return str(value)
    return str(value)


def _limited(sql: str) -> str:
    # the count of every offending row, and only the first ROWS_KEPT of them
    return f"SELECT q.*, count(*) OVER () AS audit_total FROM ({sql}) q LIMIT :keep"


async def audit_shard(
    engine: AsyncEngine, shard: int, *, invariants: tuple[Invariant, ...] = INVARIANTS,
    keep: int = ROWS_KEPT,
) -> AuditReport:
    """Check every invariant on the shard of ``engine`` in one REPEATABLE READ, read-only
    transaction (one snapshot for all of them). Changes nothing."""
    violations: list[Violation] = []
    async with engine.connect() as raw:
        conn = await raw.execution_options(isolation_level="REPEATABLE READ",
                                           postgresql_readonly=True)
        async with conn.begin():
            for inv in invariants:
                rows = (await conn.execute(text(_limited(inv.sql)), {"keep": keep})).mappings().all()
                if not rows:
                    continue
                total = int(rows[0]["audit_total"])
                kept = [{k: _wire(v) for k, v in r.items() if k != "audit_total"} for r in rows]
                violations.append(Violation(inv.name, inv.description, total, kept))
    return AuditReport(shard, tuple(i.name for i in invariants), violations)
