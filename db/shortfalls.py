"""Shortfalls: cash a customer owes, recorded where it arises, covered when settled cash is back.

Two causes: an ACH deposit returned after its money was used (``db.funding``), and a buy fill
no hold covered (above its hold, or late on an ended order), whose top-up took the account below
what it may spend: settled cash, plus an instant account's provisional allowance (``db.orders``). An open
shortfall whose account's settled cash (``cash`` less provisional ACH credit) is below zero
restricts the account to closing orders (``domain.risk.AccountState.close_only``); once settled
cash is back to zero or more (a settled deposit, sale proceeds that settle, a hold released) the
shortfall is covered and the restriction lifts. ``GET /ops/shortfalls`` lists them.

Every function runs in the caller's transaction, under the account's lock where money moves.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from db import sql
from db.risk import PROVISIONAL_CREDIT

# settled cash of account :a: its `cash` less the ACH credit still provisional
SETTLED_CASH = f"""(
  (SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id
    WHERE la.owner_id = :a AND la.name = 'cash')
  - {PROVISIONAL_CREDIT})"""

# what the fill took beyond what the account may spend: settled cash, plus (instant accounts)
# provisional credit up to the allowance -- not `cash` alone, which holds provisional credit a
# cash account may not spend (a late fill on an ended order, or one above its hold, paid with it)
_RECORD_FILL = f"""
INSERT INTO shortfalls (account_id, cause, order_id, venue, exec_id, amount)
SELECT :a, 'fill_above_hold', :o, :v, :e, least(:topup, -spendable)
  FROM (SELECT {SETTLED_CASH} + CASE WHEN (SELECT account_type FROM accounts WHERE id = :a) = 'instant'
                                     THEN least({PROVISIONAL_CREDIT}, :allowance) ELSE 0 END AS spendable) s
 WHERE spendable < 0
ON CONFLICT (venue, exec_id) DO NOTHING
"""

_COVER = f"""
UPDATE shortfalls SET covered_at = clock_timestamp()
 WHERE account_id = :a AND covered_at IS NULL AND {SETTLED_CASH} >= 0
"""


async def record_fill_shortfall(conn: sql.Conn, account: uuid.UUID, order: uuid.UUID, venue: str,
                                exec_id: str, topup: Decimal, instant_allowance: Decimal) -> None:
    """After a buy fill topped its hold up from ``cash``: if that took the account below what it
    may spend (settled cash, plus provisional credit up to ``instant_allowance`` for an instant
    account), the part of it this fill caused is a shortfall (once per execution)."""
    await sql.execute(conn, _RECORD_FILL, {"a": account, "o": order, "v": venue, "e": exec_id,
                                           "topup": topup, "allowance": instant_allowance})


async def cover_if_settled(conn: sql.Conn, account: uuid.UUID) -> int:
    """Mark the account's open shortfalls covered if its settled cash is no longer negative;
    returns how many were."""
    return await sql.execute(conn, _COVER, {"a": account})


async def open_shortfalls(conn: sql.Conn) -> list[dict[str, Any]]:
    return await sql.rows(conn, "SELECT * FROM shortfalls WHERE covered_at IS NULL ORDER BY id")
