"""What the risk rules need to know about one account, read from its shard in the caller's
transaction (optionally locking the account row: every hold of an account is taken under that
lock, so two orders can never spend the same dollar)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from db import sql
from db.gfv import SETTLED_CASH_ONLY_UNTIL
from domain.account import share_positions
from domain.risk import Fill, day_trades, pdt_window_start

ZERO = Decimal(0)


@dataclass
class AccountRisk:
    account_type: str
    status: str
    trading_blocked: bool
    blocked_reason: str | None
    pattern_day_trader: bool
    balances: dict[str, Decimal]
    provisional: Decimal
    fills: list[Fill] = field(default_factory=list)
    today: date | None = None
    settled_cash_only: bool = False  # good-faith-violation restriction in force

    @property
    def day_trade_count(self) -> int:
        assert self.today is not None
        return day_trades(self.fills, pdt_window_start(self.today))

    def bought_today(self, symbol: str) -> bool:
        return any(f.symbol == symbol and f.side == "buy" and f.trade_date == self.today
                   for f in self.fills)

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        cash = sum((self.balances.get(n, ZERO) for n in ("cash", "cash_held", "cash_unsettled")), ZERO)
        held = share_positions(self.balances)
        return cash + sum((q * prices.get(s, ZERO) for s, q in held.items()), ZERO)


_ACCOUNT = ("SELECT account_type, status, trading_blocked, blocked_reason, pattern_day_trader "
            "FROM accounts WHERE id = :a")

# Everything else in one statement (one round trip on the hot accept path). Taken after the
# account row lock, so in READ COMMITTED it sees every hold committed before the lock was ours.
_STATE = f"""
SELECT
  (SELECT coalesce(json_agg(json_build_array(x.name, x.balance::text)), '[]'::json)
     FROM (SELECT la.name, sum(b.balance) AS balance FROM ledger_accounts la
           JOIN balances b ON b.ledger_account_id = la.id WHERE la.owner_id = :a
           GROUP BY la.name) x) AS balances,
  (SELECT -coalesce(sum(e.amount), 0) FROM ledger_transactions t
     JOIN ledger_entries e ON e.txn_id = t.id
     JOIN ledger_accounts la ON la.id = e.ledger_account_id
     WHERE t.account_id = :a AND t.kind IN ('deposit', 'deposit_settle', 'deposit_bounce')
       AND la.owner_id IS NULL AND la.name = 'ach_provisional') AS provisional,
  (SELECT coalesce(json_agg(json_build_array(f.symbol, f.side, f.trade_date)
                            ORDER BY f.received_at, f.exec_id), '[]'::json)
     FROM executions f WHERE f.account_id = :a AND f.qty > 0 AND f.trade_date >= :since) AS fills,
  ({SETTLED_CASH_ONLY_UNTIL}) AS gfv_until
"""


async def load_account_risk(conn: AsyncConnection, account_id: uuid.UUID, *, today: date,
                            lock: bool = False) -> AccountRisk | None:
    row = await sql.first(conn, _ACCOUNT + (" FOR NO KEY UPDATE" if lock else ""), {"a": account_id})
    if row is None:
        return None
    state = await sql.one(conn, _STATE, {"a": account_id, "d": today, "since": pdt_window_start(today)})
    balances = {name: Decimal(balance) for name, balance in state["balances"]}
    fills = [Fill(symbol, side, date.fromisoformat(day), i)
             for i, (symbol, side, day) in enumerate(state["fills"])]
    return AccountRisk(row["account_type"], row["status"], row["trading_blocked"],
                       row["blocked_reason"], row["pattern_day_trader"], balances,
                       Decimal(state["provisional"]), fills, today,
                       settled_cash_only=state["gfv_until"] is not None)
