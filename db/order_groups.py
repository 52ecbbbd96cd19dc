"""The order-group transactions of the order store (see :mod:`domain.order_groups`): each runs in
the caller's transaction with the store's writer, loads the rows, asks the pure rules and writes
their decisions. No business rule lives here.

Lock order, as everywhere in the store: the account first when a hold is taken, then the orders
-- the parent before its legs, a take-profit before its stop-loss.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from db import sql
from db.order_replace import lock_row
from db.risk import load_account_risk
from domain import calendar
from domain import order_groups as groups
from domain.order_row import OrderRow
from domain.orders import OrderError, OrderSnapshot, OrderState
from domain.risk import share_sources

if TYPE_CHECKING:
    from db.order_writer import _Writer

S = OrderState


async def legs_of(w: _Writer, parent_id: uuid.UUID | str) -> list[OrderRow]:
    rows = await sql.rows(w.conn, "SELECT * FROM orders WHERE parent_id = :p ORDER BY leg DESC",
                          {"p": uuid.UUID(str(parent_id))})
    return [OrderRow.from_mapping(r) for r in rows]


async def activate_exits(w: _Writer, parent_id: str, filled_qty: Decimal,
                         now: datetime) -> list[OrderSnapshot]:
    """The entry ended with ``filled_qty`` filled: its exits become orders for that qty (the
    take-profit, or a lone stop-loss, holding its shares; a stop-loss beside a take-profit
    stays HELD), or end CANCELED when nothing filled. Returns the legs as they are after."""
    parent = await lock_row(w, parent_id)
    legs = [await lock_row(w, leg.id) for leg in await legs_of(w, parent.id)]
    if filled_qty > 0 and any(leg.state == S.HELD for leg in legs):
        # every hold of the account is taken under its lock (db.orders.accept)
        state = await load_account_risk(w.conn, parent.account_id, today=calendar.trade_date(now),
                                        lock=True)
        if state is None:
            raise OrderError(f"no account {parent.account_id}", code="unknown_account")
        balances = dict(state.balances)
    out = []
    has_take_profit = any(leg.leg == groups.TAKE_PROFIT for leg in legs)
    for leg in legs:
        if filled_qty <= 0 or leg.state != S.HELD:
            row = await w.write(groups.activate(leg, filled_qty, None, now))
        elif leg.leg == groups.STOP_LOSS and has_take_profit:
            row = await w.write(groups.activate(leg, filled_qty, None, now))  # stays HELD
        else:
            sources = share_sources(filled_qty, leg.symbol, balances)
            decision = groups.activate(leg, filled_qty, sources, now)
            refused = None
            for txn in decision.postings:
                result = await w.post(txn)
                if not result.ok:
                    refused = result.error_detail or result.error_code or "refused"
                    break
            if refused is None:
                row = await w.write(decision, posted=True)
            else:
                row = await w.write(groups.activate(leg, filled_qty, None, now, refused=refused))
        out.append(row.snapshot())
    return out


async def after_booking(w: _Writer, order: OrderRow, now: datetime) -> None:
    """A take-profit was just written (fills booked, or its end): its HELD stop-loss sibling
    shrinks to what the take-profit has not filled (CANCELED when it filled everything); and
    when the take-profit has ended after the stop-loss's trigger fired, the stop-loss takes over
    the shares for the rest (held again in this transaction, the one that released them from
    the take-profit: they are never free in between). All in the caller's transaction."""
    if order.order_class not in ("bracket", "oco") or order.side != "sell":
        return
    if order.leg != groups.TAKE_PROFIT and not (order.order_class == "oco" and order.parent_id is None):
        return
    if order.filled_qty <= 0 and not order.terminal:
        return
    parent = order.parent_id or order.id
    found = await sql.first(w.conn, "SELECT * FROM orders WHERE id = :id FOR UPDATE",
                            {"id": uuid.UUID(groups.leg_id(str(parent), groups.STOP_LOSS))})
    if found is None:
        return
    stop = await w.write(groups.reduce_held_stop(OrderRow.from_mapping(found), order, now))
    if stop.state != S.HELD or not order.terminal:
        return
    names = await sql.rows(w.conn, "SELECT DISTINCT event FROM order_events WHERE order_id = :id",
                           {"id": stop.id})
    if not groups.takes_over(stop, order, frozenset(r["event"] for r in names)):
        return
    state = await load_account_risk(w.conn, stop.account_id, today=calendar.trade_date(now), lock=True)
    if state is None:
        raise OrderError(f"no account {stop.account_id}", code="unknown_account")
    why = f"its trigger fired; took over take-profit {order.id}'s shares"
    decision = groups.activate(stop, stop.qty, share_sources(stop.qty, stop.symbol, state.balances),
                               now, why=why)
    for txn in decision.postings:
        result = await w.post(txn)
        if not result.ok:
            await w.write(groups.activate(stop, stop.qty, None, now, why=why,
                                          refused=result.error_detail or "refused"))
            return
    await w.write(decision, posted=True)
