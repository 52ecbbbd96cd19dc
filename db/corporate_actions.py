"""Corporate actions on one shard (shard migration 0015): record announcements, pay cash
dividends, apply splits. The rules are :mod:`domain.corporate_actions`; this loads positions,
calls them, and writes each account's ledger transaction with its application row in one
transaction (a rerun skips the accounts that have one: once per account, ever).

A split needs the symbol's positions at rest: no open order of the symbol on the shard (their
holds would change meaning) and no unsettled or held shares of it (settlement moves the
pre-split quantity). :func:`split_blockers` says what is in the way; the activity cancels the
open orders through their workflows and retries until settlement has run. Does not cancel
anything itself, nor decide when an action is due.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.equity import balances_as_of, closing_prices_before, last_fills
from db.ledger import post
from domain import corporate_actions as ca
from domain.account import share_positions
from domain.orders import TERMINAL

ZERO = Decimal(0)


async def record(engine: AsyncEngine, ann: ca.Announcement) -> None:
    """Record the announcement (once; the first record stands)."""
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO corporate_actions (id, ca_type, ca_sub_type, symbol, ex_date, record_date, "
            "payable_date, cash, old_rate, new_rate, new_symbol) VALUES (:id, :t, :st, :s, :ex, :rec, "
            ":pay, :cash, :old, :new, :ns) ON CONFLICT (id) DO NOTHING"),
            {"id": ann.id, "t": ann.ca_type, "st": ann.sub_type, "s": ann.symbol, "ex": ann.ex_date,
             "rec": ann.record_date, "pay": ann.payable_date, "cash": ann.cash, "old": ann.old_rate,
             "new": ann.new_rate, "ns": ann.new_symbol})


async def _settled_positions(conn: AsyncConnection, symbol: str) -> Sequence[Row[Any]]:
    """Every customer's settled shares of ``symbol`` (``account_id``, ``qty``)."""
    return (await conn.execute(text(
        "SELECT la.owner_id AS account_id, coalesce(sum(b.balance), 0) AS qty "
        "FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id "
        "WHERE la.owner_id IS NOT NULL AND la.name = :n GROUP BY la.owner_id"),
        {"n": f"shares:{symbol}"})).all()


async def _applied(engine: AsyncEngine, ann: ca.Announcement) -> set[uuid.UUID]:
    async with engine.connect() as conn:
        return set((await conn.execute(text(
            "SELECT account_id FROM corporate_action_applications WHERE announcement_id = :id"),
            {"id": ann.id})).scalars())


async def pay_dividend(engine: AsyncEngine, ann: ca.Announcement, entitled_at: datetime,
                       house_stripes: int = 32) -> int:
    """Credit every holder of the symbol at ``entitled_at`` (shares owned then: available, held
    and unsettled); returns how many accounts were credited by this call."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            balances = await balances_as_of(conn, entitled_at)
    done = await _applied(engine, ann)
    paid = 0
    for account_id, bal in sorted(balances.items()):
        qty = share_positions(bal).get(ann.symbol, ZERO)
        if qty <= 0 or account_id in done:
            continue
        txn = ca.dividend_txn(ann, account_id, qty)
        async with engine.begin() as conn:
            if txn is not None:
                (await post(conn, txn, house_stripes=house_stripes)).raise_for_status()
            await conn.execute(text(
                "INSERT INTO corporate_action_applications (announcement_id, account_id, symbol, qty, "
                "cash, ledger_txn_id) VALUES (:id, :a, :s, :q, :c, :t)"),
                {"id": ann.id, "a": account_id, "s": ann.symbol, "q": qty,
                 "c": ca.dividend_credit(qty, ann.cash or ZERO), "t": txn.id if txn else None})
        paid += 1
    return paid


@dataclass
class SplitBlockers:
    open_orders: list[str] = field(default_factory=list)  # order ids to cancel first
    unsettled: bool = False  # shares of the symbol still held by orders or unsettled

    @property
    def clear(self) -> bool:
        return not self.open_orders and not self.unsettled


async def split_blockers(engine: AsyncEngine, symbol: str) -> SplitBlockers:
    async with engine.connect() as conn:
        orders = list((await conn.execute(text(
            "SELECT id::text FROM orders WHERE symbol = :s AND NOT (state = ANY(:t)) ORDER BY id"),
            {"s": symbol, "t": sorted(TERMINAL)})).scalars())
        busy = (await conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id "
            "WHERE la.owner_id IS NOT NULL AND la.name = ANY(:n) AND b.balance <> 0)"),
            {"n": [f"shares_held:{symbol}", f"shares_unsettled:{symbol}"]})).scalar_one()
    return SplitBlockers(orders, bool(busy))


async def apply_split(engine: AsyncEngine, ann: ca.Announcement, house_stripes: int = 32) -> int:
    """Split every settled position of the symbol (the caller made sure nothing blocks it:
    :func:`split_blockers`); cash in lieu at the close of the last session before the ex-date
    (the shard's last fill when it has none). Returns how many accounts this call changed."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            rows = await _settled_positions(conn, ann.symbol)
            close = (await closing_prices_before(conn, [ann.symbol], ann.ex_date)).get(ann.symbol)
            if close is None:
                close = (await last_fills(conn, [ann.symbol], datetime.now().astimezone())).get(ann.symbol)
    done = await _applied(engine, ann)
    changed = 0
    for r in sorted(rows, key=lambda r: str(r.account_id)):
        qty = Decimal(r.qty)
        if qty <= 0 or r.account_id in done:
            continue
        result = ca.split_position(ann, qty, close)
        txn = ca.split_txn(ann, r.account_id, result)
        async with engine.begin() as conn:
            if txn is not None:
                (await post(conn, txn, house_stripes=house_stripes)).raise_for_status()
            await conn.execute(text(
                "INSERT INTO corporate_action_applications (announcement_id, account_id, symbol, qty, "
                "new_qty, in_lieu_old, close_price, cash, ledger_txn_id) "
                "VALUES (:id, :a, :s, :q, :nq, :lo, :cp, :c, :t)"),
                {"id": ann.id, "a": r.account_id, "s": ann.symbol, "q": qty, "nq": result.new_qty,
                 "lo": result.in_lieu_old, "cp": close if result.in_lieu_old else None,
                 "c": result.cash_in_lieu, "t": txn.id if txn else None})
        changed += 1
    return changed


async def apply_symbol_change(engine: AsyncEngine, ann: ca.Announcement, house_stripes: int = 32) -> int:
    """Move every settled position of the old symbol to the new one (the caller made sure
    nothing blocks it: :func:`split_blockers`). The new symbol becomes an asset of the shard
    (a copy of the old one's row) and the old one inactive, not tradable. Returns how many
    accounts this call changed."""
    assert ann.new_symbol is not None
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO currencies (code, kind, scale) SELECT :new, kind, scale FROM currencies "
            "WHERE code = :old ON CONFLICT DO NOTHING"), {"old": ann.symbol, "new": ann.new_symbol})
        await conn.execute(text(
            "INSERT INTO assets (id, symbol, name, exchange, asset_class, fractionable) "
            "SELECT md5('asset:' || :new)::uuid, :new, name, exchange, asset_class, fractionable "
            "FROM assets WHERE symbol = :old ON CONFLICT DO NOTHING"),
            {"old": ann.symbol, "new": ann.new_symbol})
        await conn.execute(text(
            "UPDATE assets SET status = 'inactive', tradable = false WHERE symbol = :old"),
            {"old": ann.symbol})
        rows = await _settled_positions(conn, ann.symbol)
    done = await _applied(engine, ann)
    changed = 0
    for r in sorted(rows, key=lambda r: str(r.account_id)):
        qty = Decimal(r.qty)
        if qty <= 0 or r.account_id in done:
            continue
        txn = ca.symbol_change_txn(ann, r.account_id, qty)
        async with engine.begin() as conn:
            (await post(conn, txn, house_stripes=house_stripes)).raise_for_status()
            await conn.execute(text(
                "INSERT INTO corporate_action_applications (announcement_id, account_id, symbol, qty, "
                "new_qty, ledger_txn_id) VALUES (:id, :a, :s, :q, :q, :t)"),
                {"id": ann.id, "a": r.account_id, "s": ann.symbol, "q": qty, "t": txn.id})
        changed += 1
    return changed
