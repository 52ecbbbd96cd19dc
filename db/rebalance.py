"""The firm's inventory rebalance on one shard (``domain.fractional``): fund the firm's
brokerage account of a symbol from the inventory before its whole-share order, and give every
balance of that account back to the inventory once the order has ended. Each step is one
transaction; the order itself is an ordinary order workflow of that account (nothing reaches a
venue any other way), which the Rebalance workflow (workflows/rebalance.py) runs between them.

Deliberately no decision here beyond reading balances: the plan and the funding amount are
``domain.fractional``'s; the postings are ``domain.ledger.inventory_transfer``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db import sql
from db.engines import run_in_transaction
from db.errors import LedgerRejected
from db.ledger import post
from domain import fractional
from domain import ledger as rules

_HOUSE_BALANCE = """
SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id
 WHERE la.owner_id IS NULL AND la.name = :n
"""
_ACCOUNT_BALANCES = """
SELECT la.name, sum(b.balance) AS balance FROM ledger_accounts la
  JOIN balances b ON b.ledger_account_id = la.id
 WHERE la.owner_id = :a GROUP BY la.name HAVING sum(b.balance) <> 0
"""


@dataclass
class Funded:
    """A rebalance order ready to be placed: the firm's account, what it trades."""

    account_id: str
    side: str
    qty: str


async def _ensure_account(conn: AsyncConnection, account: uuid.UUID, shard: int, symbol: str) -> None:
    await sql.execute(conn, "INSERT INTO accounts (id, account_number, account_type) "
                            "VALUES (:a, :n, 'cash') ON CONFLICT DO NOTHING",
                      {"a": account, "n": f"FIRM-{shard}-{symbol}"})


async def fund(engine: AsyncEngine, shard: int, symbol: str, order_id: str, *, ask: Decimal | None,
               collar: Decimal, house_stripes: int = 32) -> Funded | None:
    """Plan the rebalance of ``symbol`` from the firm's inventory now and fund the firm's account
    for it (cash for a buy, the shares for a sell), in one transaction serialized with the
    firm's fills of that symbol. None: less than a whole share to rebalance. A retry after the
    commit returns what was funded then."""
    txn_id = f"rebalance:{order_id}:fund"
    account = fractional.firm_account_id(shard, symbol)

    async def _do(conn: AsyncConnection) -> Funded | None:
        done = await sql.first(conn, "SELECT memo FROM ledger_transactions WHERE id = :t", {"t": txn_id})
        if done is not None:
            return Funded(str(account), done["memo"]["side"], done["memo"]["qty"])
        await sql.execute(conn, "SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))",
                          {"k": f"inventory:{symbol}"})
        inventory = Decimal(await sql.scalar(conn, _HOUSE_BALANCE, {"n": f"inventory:{symbol}"}))
        plan = fractional.rebalance_plan(inventory)
        if plan is None:
            return None
        await _ensure_account(conn, account, shard, symbol)
        amount = fractional.rebalance_funding(plan, ask, collar)
        name = "cash" if plan.side == "buy" else f"shares:{symbol}"
        txn = rules.inventory_transfer(txn_id, account, symbol, {name: amount})
        txn = rules.LedgerTxn.build(txn.id, txn.kind, txn.entries, account_id=account,
                                    memo={"side": plan.side, "qty": str(plan.qty)})
        result = await post(conn, txn, house_stripes=house_stripes)
        if not result.ok:
            raise LedgerRejected(f"{txn_id}: {result.error_detail}", code=result.error_code)
        return Funded(str(account), plan.side, str(plan.qty))

    return await run_in_transaction(engine, _do)


async def give_back(engine: AsyncEngine, shard: int, symbol: str, order_id: str, *,
                    house_stripes: int = 32) -> dict[str, str]:
    """Once the rebalance order has ended: every balance of the firm's account (cash, shares
    bought and not settled, proceeds of a sale, shares not sold) goes back to the inventory.
    Returns what moved (account name -> amount given back)."""
    txn_id = f"rebalance:{order_id}:return"
    account = fractional.firm_account_id(shard, symbol)

    async def _do(conn: AsyncConnection) -> dict[str, str]:
        await sql.execute(conn, "SELECT 1 FROM accounts WHERE id = :a FOR NO KEY UPDATE", {"a": account})
        open_orders = await sql.scalar(conn, "SELECT count(*) FROM orders WHERE account_id = :a AND "
                                             "hold_amount <> 0", {"a": account})
        if open_orders:
            raise LedgerRejected(f"the firm's {symbol} account still has an order holding funds",
                                 code="rebalance_order_open")
        rows = await sql.rows(conn, _ACCOUNT_BALANCES, {"a": account})
        back = {r["name"]: -Decimal(r["balance"]) for r in rows}
        if back:
            result = await post(conn, rules.inventory_transfer(txn_id, account, symbol, back,
                                                               kind="inventory_return"),
                                house_stripes=house_stripes)
            if not result.ok:
                raise LedgerRejected(f"{txn_id}: {result.error_detail}", code=result.error_code)
        return {k: str(-v) for k, v in back.items()}

    return await run_in_transaction(engine, _do)
