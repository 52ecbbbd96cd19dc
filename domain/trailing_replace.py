"""Replacing a trailing stop that waits for its trigger (``PATCH /v2/orders/{id}``). Pure.

No venue has the order, so nothing is sent and nothing waits: one decision over both orders,
as Alpaca's replace semantics have it -- a new order (``replaces`` / ``replaced_by``) with the
new terms (``trail``, ``qty``, ``time_in_force``, ``client_order_id``), and the original ends
REPLACED. The original's hold goes with it to the replacement, which holds what its own terms
need (a sell: its shares; a buy: qty x (ask + trail) x (1 + collar)): more is held (the ledger
may refuse: ``insufficient_buying_power``), the rest released. The replacement keeps the
original's hwm: its trigger is re-armed with the new trail from the best price already seen.
Deliberately not here: reading or writing, the quote (given), the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from domain import ledger as templates
from domain.money import Bounds, bounded_decimal
from domain.order_decision import Decision, Step
from domain.order_row import OrderRow, column, new_order
from domain.orders import OrderError, OrderRequest, OrderState, _price, buy_hold
from domain.risk import share_sources
from domain.trailing import trigger_spec, waiting

if TYPE_CHECKING:
    from domain.order_replace import ReplaceRequest

S = OrderState
ZERO = Decimal(0)


def _trail(old: OrderRow, trail: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
    """The replacement's (trail_price, trail_percent): the original's kind, the new value."""
    if old.trail_price is not None:
        return (old.trail_price if trail is None else _price(trail, "trail")), None
    assert old.trail_percent is not None
    if trail is None:
        return None, old.trail_percent
    pct = bounded_decimal(trail, Bounds(Decimal(100), 2), field="trail")
    if pct >= 100:
        raise OrderError("trail (a percent) must be below 100", code="trail_out_of_range")
    return None, pct


def terms(old: OrderRow, change: ReplaceRequest) -> OrderRequest:
    if not waiting(old):
        raise OrderError(f"order is {old.state.value.lower()} and cannot be replaced",
                         code="not_replaceable")
    if change.limit_price is not None or change.stop_price is not None:
        raise OrderError("a trailing stop has no limit_price or stop_price to replace (its stop "
                         "follows the trail)", code="replace_not_supported")
    trail_price, trail_percent = _trail(old, change.trail)
    new = OrderRequest(symbol=old.symbol, side=old.side, type="trailing_stop",
                       time_in_force=change.time_in_force or old.time_in_force,
                       qty=change.qty or old.qty, client_order_id=change.client_order_id,
                       trail_price=trail_price, trail_percent=trail_percent)
    if (new.qty, new.time_in_force, new.trail_price, new.trail_percent) == (
            old.qty, old.time_in_force, old.trail_price, old.trail_percent):
        raise OrderError("nothing to replace: the terms are the order's own", code="nothing_to_replace")
    return new


def request(old: OrderRow, change: ReplaceRequest, *, new_id: str, actor: str, now: datetime,
            day_ttl_s: float | None, ask: Decimal | None, collar: Decimal,
            balances: Mapping[str, Decimal] | None = None) -> tuple[Decision, Decision]:
    """The replace, done: (the original REPLACED, the replacement FUNDS_HELD with its hold; every
    posting is the replacement's). ``balances``: the account's, for where a sell's extra shares
    come from (settled first, then bought but unsettled); a buy's extra cash is settled cash.
    Raises :class:`OrderError` for terms it refuses."""
    from domain.order_replace import _split

    req = terms(old, change)
    need = buy_hold(req, ask, collar) if req.side == "buy" else req.qty
    new = new_order(order_id=new_id, account_id=str(old.account_id), req=req,
                    request_hash=req.hash(), actor=actor, now=now, day_ttl_s=day_ttl_s)
    new = dataclasses.replace(new, hwm=old.hwm)
    new = dataclasses.replace(new, stop_price=column(trigger_spec(new).stop))  # the new trail's
    step, rep = Step(old, now), Step(new, now)
    rep.event("created", actor=actor, reason=f"replaces order {old.id}", to=S.PENDING,
              from_state="", data={"replaces": str(old.id), "request": req.to_wire()})
    have, sources = old.hold_amount, dict(old.hold_sources) if old.hold_sources is not None else None
    unit = "USD" if req.side == "buy" else req.symbol
    txn: str | None = None
    if need > have:
        txn = f"order:{new.id}:hold"
        extra = need - have
        if req.side == "buy":
            parts = {templates.SETTLED_CASH: extra}
            rep.postings.append(templates.hold_cash(txn, new.account_id, extra, sources=parts))
        else:
            parts = share_sources(extra, req.symbol, balances or {})
            rep.postings.append(templates.hold_shares(
                txn, new.account_id, req.symbol, extra,
                from_unsettled=parts.get(templates.UNSETTLED_SHARES, ZERO)))
        if sources is not None:
            for source, part in parts.items():
                sources[source] = sources.get(source, ZERO) + part
    elif need < have:
        sources, give = _split(sources, have - need)
        txn = f"order:{new.id}:release:replaced"
        rep.postings.append(templates.release_cash(txn, new.account_id, have - need, to=give)
                            if req.side == "buy" else templates.release_shares(
                                txn, new.account_id, req.symbol, have - need, to=give))
    rep.event("funds_held", actor="ledger", to=S.FUNDS_HELD, from_state=S.PENDING.value,
              ledger_txn=txn, reason=f"holds {need} {unit}: {have} from order {old.id}"
              + (f", {need - have} more" if need > have else
                 f", {have - need} released" if need < have else ""))
    rep.set(state=S.FUNDS_HELD, replaces=old.id, hold_amount=need, hold_sources=sources)
    rep.update("accepted")
    step.event("replaced", actor=actor, to=S.REPLACED,
               reason=f"replaced by order {new.id} (held at the broker: no venue involved)",
               data={"replaced_by": new_id, "request": req.to_wire()})
    step.set(state=S.REPLACED, replaced_by=new.id, replaced_at=now, hold_amount=ZERO,
             hold_sources={} if old.hold_sources is not None else None)
    step.update("replaced")
    return step.decision(), dataclasses.replace(rep.decision(), insert=True)
