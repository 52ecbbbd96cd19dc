"""Good-faith violation tracking for cash accounts (rules in :mod:`domain.gfv`).

Detected at sell-fill booking time: the order path calls :func:`record_gfv_if_any` inside the
transaction that books a sell fill. For each recent buy of the same symbol, the buy is "funded with
unsettled funds" when its hold took unsettled sale proceeds (the lots ``cash_unsettled@<date>`` its
hold transaction debited; they settle on the latest of those dates), or when, at the moment its
cash was held, the account's cash minus the ACH deposits still provisional at that moment did not
cover the fill value (those funds settle on the latest expected settle date of the deposits).
Selling such a position before that date is a violation (one row per sale date and buy order, so
a replay records nothing new). Three in 12 months restrict the account to settled cash for 90
days (``account_restrictions``), in force while ``SETTLED_CASH_ONLY_UNTIL`` finds a row (read by
:func:`db.risk.load_account_risk`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import date, timedelta
from decimal import Decimal

from db import sql
from domain.gfv import BuyLot, restriction_until, violating_lots

log = logging.getLogger(__name__)
LOOKBACK = timedelta(days=15)

_BUYS = """
SELECT o.id, min(e.trade_date) AS trade_date, sum(e.qty) AS qty, sum(e.qty * e.price) AS value,
       (SELECT t.created_at FROM ledger_transactions t
         WHERE t.id = 'order:' || o.id || :hold_suffix) AS held_at,
       -- what the hold took from unsettled sale proceeds, and when the latest of them settles
       -- the sum as text: a JSON number would come back a float
       (SELECT json_build_array((-sum(le.amount))::text, max(substr(la.name, 16)))
          FROM ledger_entries le JOIN ledger_accounts la ON la.id = le.ledger_account_id
         WHERE le.txn_id = 'order:' || o.id || :hold_suffix AND la.owner_id = o.account_id
           AND la.name LIKE 'cash_unsettled@%') AS from_proceeds
  FROM orders o JOIN executions e ON e.order_id = o.id AND e.qty > 0
 WHERE o.account_id = :a AND o.symbol = :s AND o.side = 'buy'
   AND e.trade_date BETWEEN :since AND :td
 GROUP BY o.id
"""


async def _lots(conn: sql.Conn, account: uuid.UUID, symbol: str, td: date) -> list[BuyLot]:
    rows = await sql.rows(conn, _BUYS, {"a": account, "s": symbol, "since": td - LOOKBACK,
                                        "td": td, "hold_suffix": ":hold"})
    lots: list[BuyLot] = []
    for r in rows:
        if r["held_at"] is None or r["trade_date"] is None:
            continue
        cash_before = Decimal(await sql.scalar(
            conn, "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN ledger_accounts la "
            "ON la.id = e.ledger_account_id WHERE la.owner_id = :a AND la.name = 'cash' "
            "AND e.created_at < :t", {"a": account, "t": r["held_at"]}))
        pending = await sql.one(
            conn, "SELECT coalesce(sum(amount), 0) AS amount, max(expected_settle_date) AS settles "
            "FROM transfers WHERE account_id = :a AND direction = 'INCOMING' "
            "AND provisional_at < :t AND (settled_at IS NULL OR settled_at > :t) "
            # a returned deposit's credit was reversed (RETURNED is final: updated_at is when)
            "AND NOT (status = 'RETURNED' AND updated_at <= :t)",
            {"a": account, "t": r["held_at"]})
        settled_cash = max(Decimal(0), cash_before - Decimal(pending["amount"]))
        unsettled = (max(Decimal(0), Decimal(r["value"]) - settled_cash) if pending["amount"]
                     else Decimal(0))
        settles = pending["settles"] if unsettled else None
        proceeds, proceeds_settle = r["from_proceeds"] or (None, None)
        if proceeds and proceeds_settle and Decimal(proceeds) > 0:  # paid with unsettled proceeds
            unsettled = min(Decimal(r["value"]), unsettled + Decimal(proceeds))
            lot_day = date.fromisoformat(proceeds_settle)
            settles = max(settles, lot_day) if settles else lot_day
        lots.append(BuyLot(str(r["id"]), r["trade_date"], Decimal(r["qty"]), unsettled, settles))
    return lots


async def record_gfv_if_any(
    conn: sql.Conn, account_id: uuid.UUID, symbol: str, qty: Decimal, trade_date: date
) -> None:
    """Record a good-faith violation if this sale (cash account) sells a position bought with
    funds not settled by ``trade_date``; restrict the account at the third in 12 months.
    Runs in the caller's transaction; idempotent."""
    found = await sql.first(conn, "SELECT account_type FROM accounts WHERE id = :a", {"a": account_id})
    kind = found["account_type"] if found is not None else None
    if kind != "cash":
        return
    bad = violating_lots(trade_date, await _lots(conn, account_id, symbol, trade_date))
    if not bad:
        return
    for lot in bad:
        assert lot.funds_settle_date is not None
        await sql.execute(
            conn, "INSERT INTO gfv_violations (account_id, symbol, sale_trade_date, buy_order_id, qty, "
            "funds_settle_date) VALUES (:a, :s, :td, :o, :q, :fd) ON CONFLICT DO NOTHING",
            {"a": account_id, "s": symbol, "td": trade_date, "o": uuid.UUID(lot.order_id), "q": qty,
             "fd": lot.funds_settle_date})
    log.warning("good-faith violation: account %s sold %s %s on %s before its funds settled",
                account_id, qty, symbol, trade_date)
    dates = [r["sale_trade_date"] for r in await sql.rows(
        conn, "SELECT DISTINCT sale_trade_date FROM gfv_violations WHERE account_id = :a "
        "AND sale_trade_date > :since", {"a": account_id, "since": trade_date - timedelta(days=366)})]
    until = restriction_until(dates, trade_date)
    if until is not None:
        await sql.execute(
            conn, "INSERT INTO account_restrictions (account_id, kind, reason, starts_on, until) "
            "VALUES (:a, 'settled_cash_only', :r, :s, :u) ON CONFLICT DO NOTHING",
            {"a": account_id, "r": f"{len(dates)} good-faith violations in 12 months", "s": trade_date,
             "u": until})


async def violations(conn: sql.Conn, account_id: uuid.UUID) -> list[date]:
    return [r["sale_trade_date"] for r in await sql.rows(
        conn, "SELECT sale_trade_date FROM gfv_violations WHERE account_id = :a "
        "ORDER BY sale_trade_date", {"a": account_id})]


# the end of the settled-cash-only restriction in force on :d for account :a, or NULL
SETTLED_CASH_ONLY_UNTIL = (
    "SELECT max(until) FROM account_restrictions WHERE account_id = :a "
    "AND kind = 'settled_cash_only' AND starts_on <= :d AND until >= :d")
