"""What the risk rules need to know about one account, read from its shard in the caller's
transaction (optionally locking the account row: every hold of an account is taken under that
lock, so two orders can never spend the same dollar)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from db import sql
from db.gfv import SETTLED_CASH_ONLY_UNTIL
from domain.risk import AccountState, AssetStatus, Fill, pdt_window_start

_ACCOUNT = ("SELECT account_type, status, trading_blocked, blocked_reason, pattern_day_trader "
            "FROM accounts WHERE id = :a")

# the ACH credit of account :a still provisional (deposits credited, not yet settled or returned)
PROVISIONAL_CREDIT = """(SELECT -coalesce(sum(e.amount), 0) FROM ledger_transactions t
     JOIN ledger_entries e ON e.txn_id = t.id
     JOIN ledger_accounts la ON la.id = e.ledger_account_id
     WHERE t.account_id = :a AND t.kind IN ('deposit', 'deposit_settle', 'deposit_bounce')
       AND la.owner_id IS NULL AND la.name = 'ach_provisional')"""

# The fills the day-trade rules need (domain.risk.day_trades, AccountState.bought_today), not
# every fill of the window: of each symbol and trade date, the first buy and the last sell. A day
# is a day trade when a buy came before a sell, i.e. when its first buy came before its last sell;
# a symbol was bought today when today has a first buy. An active account's week of fills would
# otherwise be read, sent and decoded on every order it places.
_PDT_FILLS = """
(SELECT DISTINCT ON (symbol, trade_date) symbol, side, trade_date, received_at, exec_id
   FROM executions WHERE account_id = :a AND qty > 0 AND trade_date >= :since AND side = 'buy'
  ORDER BY symbol, trade_date, received_at, exec_id)
UNION ALL
(SELECT DISTINCT ON (symbol, trade_date) symbol, side, trade_date, received_at, exec_id
   FROM executions WHERE account_id = :a AND qty > 0 AND trade_date >= :since AND side <> 'buy'
  ORDER BY symbol, trade_date, received_at DESC, exec_id DESC)"""

# Everything else in one statement (one round trip on the hot accept path). Taken after the
# account row lock, so in READ COMMITTED it sees every hold committed before the lock was ours.
_STATE = f"""
SELECT
  (SELECT coalesce(json_agg(json_build_array(x.name, x.balance::text)), '[]'::json)
     FROM (SELECT la.name, sum(b.balance) AS balance FROM ledger_accounts la
           JOIN balances b ON b.ledger_account_id = la.id WHERE la.owner_id = :a
           GROUP BY la.name) x) AS balances,
  {PROVISIONAL_CREDIT} AS provisional,
  (SELECT coalesce(json_agg(json_build_array(f.symbol, f.side, f.trade_date)
                            ORDER BY f.received_at, f.exec_id), '[]'::json)
     FROM ({_PDT_FILLS}) f) AS fills,
  ({SETTLED_CASH_ONLY_UNTIL}) AS gfv_until,
  (SELECT json_build_array(tradable, status, fractionable) FROM assets WHERE symbol = :sym) AS asset,
  (SELECT sum(amount)::text FROM shortfalls WHERE account_id = :a AND covered_at IS NULL) AS owed,
  -- the accept path's replay check (an order of that id or client order id), in this round trip
  -- (two probes of their keys: one EXISTS of the OR was planned as a scan of all orders)
  (EXISTS (SELECT 1 FROM orders WHERE id = CAST(:oid AS uuid))
   OR EXISTS (SELECT 1 FROM orders WHERE account_id = :a
                                      AND client_order_id = CAST(:coid AS text))) AS known
"""


async def load_account_risk(conn: sql.Conn, account_id: uuid.UUID, *, today: date,
                            lock: bool = False) -> AccountState | None:
    return (await load_risk_context(conn, account_id, today=today, lock=lock))[0]


async def load_risk_context(conn: sql.Conn, account_id: uuid.UUID, *, today: date,
                            symbol: str = "", lock: bool = False,
                            ) -> tuple[AccountState | None, AssetStatus | None]:
    """The account as the rules see it (None: no such account), and the trading status of
    ``symbol`` (None: unknown), in two statements. ``lock``: take the account row's lock first
    (every hold of the account is taken under it)."""
    account, asset, _ = await load_accept_context(conn, account_id, today=today, symbol=symbol,
                                                  lock=lock)
    return account, asset


async def load_accept_context(conn: sql.Conn, account_id: uuid.UUID, *, today: date,
                              symbol: str = "", lock: bool = False, order_id: uuid.UUID | None = None,
                              client_order_id: str | None = None,
                              ) -> tuple[AccountState | None, AssetStatus | None, bool]:
    """:func:`load_risk_context`, and whether the shard has an order of id ``order_id`` or of
    client order id ``client_order_id`` for the account (read after the lock, as the rest; False
    when there is no such account)."""
    row = await sql.first(conn, _ACCOUNT + (" FOR NO KEY UPDATE" if lock else ""), {"a": account_id})
    if row is None:
        return None, None, False
    state = await sql.one(conn, _STATE, {"a": account_id, "d": today, "since": pdt_window_start(today),
                                         "sym": symbol, "oid": order_id, "coid": client_order_id})
    balances = {name: Decimal(balance) for name, balance in state["balances"]}
    fills = [Fill(symbol, side, date.fromisoformat(day), i)
             for i, (symbol, side, day) in enumerate(state["fills"])]
    account = AccountState(row["account_type"], row["status"], row["trading_blocked"],
                           row["blocked_reason"], row["pattern_day_trader"], balances,
                           Decimal(state["provisional"]), fills, today,
                           settled_cash_only=state["gfv_until"] is not None,
                           shortfall=Decimal(state["owed"] or 0))
    asset = AssetStatus(*state["asset"]) if state["asset"] is not None else None
    return account, asset, state["known"]
