"""The cancel/replace transactions of the order store (see :mod:`domain.order_replace`): each
locks the original order, then its replacement, decides with the pure functions and writes both
decisions with the store's writer, in the caller's transaction. No business rule lives here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from db import sql
from db.risk import load_risk_context
from domain import calendar
from domain import order_replace as rp
from domain.execution import VenueEvent, VenueEventKind
from domain.order_machine import Finish, decide
from domain.order_row import OrderRow
from domain.orders import OrderError, OrderState
from domain.risk import PreTradeContext

if TYPE_CHECKING:
    from db.order_writer import _Writer
    from db.orders import RiskContext
    from domain.risk import Quotes

S = OrderState
ANSWERS = frozenset({VenueEventKind.REPLACED, VenueEventKind.REPLACE_REJECTED})


async def lock_row(w: _Writer, order_id: uuid.UUID | str) -> OrderRow:
    row = await sql.first(w.conn, "SELECT * FROM orders WHERE id = :id FOR UPDATE",
                          {"id": uuid.UUID(str(order_id))})
    if row is None:
        raise OrderError(f"no order {order_id} on this shard", code="unknown_order")
    return OrderRow.from_mapping(row)


async def request(w: _Writer, order_id: str, change: rp.ReplaceRequest, *, new_id: str, actor: str,
                  now: datetime, quotes: Quotes, ctx: RiskContext, collar: Decimal,
                  day_ttl_s: float | None = None) -> tuple[OrderRow, OrderRow]:
    """Record a replace (the original PENDING_REPLACE, the replacement ROUTED with its extra
    hold) and return the replacement. A retry after the commit returns the same replacement;
    the pre-trade rules of a new order refuse with its codes (the account and the symbol read
    here, under the account's lock), a client order id of another order of the account is
    ``duplicate_client_order_id``, a hold the ledger refuses is ``insufficient_buying_power``;
    a refusal writes nothing."""
    old = await lock_row(w, order_id)
    if old.replaced_by is not None and str(old.replaced_by) == new_id:
        return old, await lock_row(w, new_id)
    # the account's lock, as every hold of the account is taken (db.orders.accept)
    account, asset = await load_risk_context(w.conn, old.account_id, today=calendar.trade_date(now),
                                             symbol=old.symbol, lock=True)
    taken = change.client_order_id is not None and await sql.first(
        w.conn, "SELECT 1 FROM orders WHERE account_id = :a AND client_order_id = :c",
        {"a": old.account_id, "c": change.client_order_id}) is not None
    pre = PreTradeContext(account=account, asset=asset, quotes=quotes, now=now, collar=collar,
                          limits=ctx.limits, control=ctx.control, shard_halt=ctx.shard_halt)
    # a trailing stop is replaced here at once: its extra hold is sourced now
    balances = account.balances if old.order_type == "trailing_stop" and account is not None else None
    d_old, d_new = rp.request(old, change, new_id=new_id, actor=actor, now=now, day_ttl_s=day_ttl_s,
                              ctx=pre, client_order_id_taken=taken, ask=quotes.ask, collar=collar,
                              balances=balances)
    for txn in d_new.postings:
        result = await w.post(txn)
        if not result.ok:
            raise OrderError(f"not enough buying power for the replacement: {result.error_detail}",
                             code="insufficient_buying_power" if old.side == "buy"
                             else "insufficient_qty")
    new = await w.write(d_new, posted=True)  # inserted first: the original's replaced_by names it
    return await w.write(d_old), new


async def answer(w: _Writer, old: OrderRow, e: VenueEvent, now: datetime) -> OrderRow:
    """The venue's answer to a replace (Replaced, or a refusal), booked against both orders."""
    if old.replaced_by is None:  # not a replace of ours: audited like any other report
        return await w.write(decide(old, e, now))
    new = await lock_row(w, old.replaced_by)
    fn = rp.replaced if e.kind == VenueEventKind.REPLACED else rp.replace_rejected
    d_old, d_new = fn(old, new, e, now)
    await w.write(d_new)
    return await w.write(d_old)


async def give_up(w: _Writer, order_id: str, now: datetime, *, reason: str) -> OrderRow:
    """The venue answered neither the replace nor the status request after it: the original
    STUCK, its replacement REJECTED with its extra hold released (:func:`rp.unanswered`)."""
    old = await lock_row(w, order_id)
    if old.replaced_by is None:
        return old
    new = await lock_row(w, old.replaced_by)
    d_old, d_new = rp.unanswered(old, new, now, reason=reason)
    await w.write(d_new)
    return await w.write(d_old)


async def end_replacement(w: _Writer, old: OrderRow, now: datetime) -> None:
    """The original ended while its replace was pending (filled, canceled, expired): the venue
    cannot replace it any more, so the replacement ends REJECTED and its extra hold goes back."""
    if old.replaced_by is None or old.state == S.REPLACED or not old.terminal:
        return
    new = await lock_row(w, old.replaced_by)
    if new.terminal or new.state != S.ROUTED:
        return
    await w.write(decide(new, Finish(S.REJECTED, f"order {old.id} ended {old.state.value} before "
                                     "the venue replaced it", actor="system",
                                     code="replace_rejected"), now))
