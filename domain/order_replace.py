"""Cancel/replace (``PATCH /v2/orders/{id}``): the request, and the decisions over the two
orders it involves -- the original and its replacement. Pure.

A replace is a new order (``replaces`` / ``replaced_by``) sent to the venue as an
OrderCancelReplaceRequest under the replacement's id as ClOrdID. Its steps, each one shard
transaction written by ``db.orders`` (it locks the original, then the replacement):

- :func:`request`: the original goes PENDING_REPLACE (fills of it as it was still book against
  it); the replacement is written ROUTED with the *extra* hold it may need beyond what the
  original still holds (:func:`extra_hold`: taken now, so that the venue's answer never needs
  money the account may no longer have);
- :func:`replaced` (the venue's Replaced): the original ends REPLACED and hands what it still
  holds to the replacement, which is ACKED for what is left to trade -- the new total less what
  the original filled (a fill that raced the request counts) -- and holds exactly what that
  needs; the rest is released;
- :func:`replace_rejected` (the venue's OrderCancelReject): the original goes back to working
  as it was, the replacement ends REJECTED (``replace_rejected``) and its extra hold is released;
- an original that ends otherwise (filled, canceled, expired) while a replace is pending takes its
  replacement with it (``db.orders`` finishes it REJECTED, releasing its extra hold);
- :func:`unanswered` (the venue answered neither the replace nor the status request that
  followed it): the original goes STUCK holding what it holds, for an operator; the replacement
  ends REJECTED (``replace_unanswered``) with its extra hold released. A Replaced that comes
  after that is audited on the original, which stays STUCK (the operator resolves it with what
  the venue says); the original's own late fills book against it as any STUCK order's.

Limit, stop and stop-limit orders (quantity, limit price, stop price, time in force, client
order id; each type only the prices it has), and trailing stops waiting for their trigger
(``trail`` too: replaced at the broker in one decision, nothing sent, see
``domain.trailing_replace``); market orders, and ``trail`` on any other type, are refused with
``replace_not_supported``. The replacement passes the pre-trade rules a new order passes
(:func:`domain.risk.replace_refusal`: the account and shard may trade, the symbol's halts and
restrictions, price bands, order size, pattern day trading; buying power is the ledger's refusal
of its extra hold) and its client order id must be new to the account
(``duplicate_client_order_id``). A stop buy's hold is an estimate (``qty x max(ask, stop) x
(1 + collar)``, as at accept): its replacement keeps both holds once replaced, and its fills top
up or release as any market-type buy's. Deliberately not here: reading or writing anything,
sending anything, the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain import ledger as templates
from domain.execution import VenueEvent, VenueOrder, VenueReplace
from domain.money import PRICE_BOUNDS, QTY_BOUNDS, USD, bounded_decimal, check_scale, plain
from domain.order_decision import Decision, Step
from domain.order_machine import _finish, _move, _source_rank, bounded
from domain.order_row import OrderRow, column, new_order
from domain.orders import (
    MAX_CLIENT_ORDER_ID,
    OrderError,
    OrderRequest,
    OrderSnapshot,
    OrderState,
    _price,
    buy_hold,
)
from domain.risk import PreTradeContext, hold_sources, replace_refusal

S = OrderState
ZERO = Decimal(0)
FIELDS = ("qty", "limit_price", "stop_price", "trail", "time_in_force", "client_order_id")
REPLACEABLE = frozenset({S.ACKED, S.PARTIALLY_FILLED})
RESTING_TIFS = ("day", "gtc")
# which prices each replaceable type has (a price it does not have cannot be replaced)
PRICES = {"limit": ("limit_price",), "stop": ("stop_price",),
          "stop_limit": ("stop_price", "limit_price")}


@dataclass(frozen=True)
class ReplaceRequest:
    """What the customer asks to change (None: unchanged)."""

    qty: Decimal | None = None
    limit_price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str | None = None
    stop_price: Decimal | None = None
    trail: Decimal | None = None  # a trailing stop's new trail (its kind's units: $ or %)

    def to_wire(self) -> dict[str, str | None]:
        out = {"qty": _s(self.qty), "limit_price": _s(self.limit_price),
               "stop_price": _s(self.stop_price),
               "time_in_force": self.time_in_force, "client_order_id": self.client_order_id}
        if self.trail is not None:
            out["trail"] = _s(self.trail)
        return out


def _s(d: Decimal | None) -> str | None:
    return None if d is None else format(plain(d), "f")


def parse_replace(d: Mapping[str, object]) -> ReplaceRequest:
    """Validate an Alpaca replace body. Raises :class:`OrderError` (``unknown_field``,
    ``replace_not_supported`` for a price the type lacks, ``invalid_qty``, the price codes, ``invalid_trail``,
    ``invalid_time_in_force``, ``invalid_client_order_id``, ``nothing_to_replace``)."""
    unknown = sorted(str(k) for k in d if k not in FIELDS)
    if unknown:
        raise OrderError(f"unknown field(s): {', '.join(unknown)}", code="unknown_field")
    # bounded here; its increment rules are the order's kind's (domain.trailing_replace)
    trail = None if d.get("trail") is None else bounded_decimal(d.get("trail"), PRICE_BOUNDS,
                                                               field="trail")
    qty = limit = stop = None
    if d.get("qty") is not None:
        qty = bounded_decimal(d.get("qty"), QTY_BOUNDS, field="qty")
        if qty != qty.to_integral_value():
            raise OrderError("qty must be a whole number of shares", code="invalid_qty")
        qty = qty.quantize(Decimal(1))
    if d.get("limit_price") is not None:
        limit = _price(d.get("limit_price"), "limit_price")
    if d.get("stop_price") is not None:
        stop = _price(d.get("stop_price"), "stop_price")
    tif = d.get("time_in_force")
    if tif is not None and tif not in RESTING_TIFS:
        raise OrderError(f"time_in_force of a replacement must be one of {', '.join(RESTING_TIFS)}",
                         code="invalid_time_in_force")
    coid = d.get("client_order_id")
    if coid is not None and (not isinstance(coid, str) or not coid
                             or len(coid) > MAX_CLIENT_ORDER_ID):
        raise OrderError(f"client_order_id must be 1..{MAX_CLIENT_ORDER_ID} characters",
                         code="invalid_client_order_id")
    req = ReplaceRequest(qty, limit, None if tif is None else str(tif), coid, stop, trail)
    if req == ReplaceRequest():
        raise OrderError("nothing to replace: give qty, limit_price, stop_price, trail, "
                         "time_in_force or client_order_id", code="nothing_to_replace")
    return req


def terms(old: OrderRow, req: ReplaceRequest) -> OrderRequest:
    """The replacement's terms (``qty``: the new total, what the original filled included, as
    FIX counts it), or a refusal: the original is not working at a venue (``not_replaceable``),
    is a market order or the change names a price its type does not have
    (``replace_not_supported``), is fractional (``fractional_replace_not_supported``), the terms
    change nothing (``nothing_to_replace``), or the total is not above what has filled
    (``qty_not_above_filled``)."""
    if old.state not in REPLACEABLE:
        raise OrderError(f"order is {old.state.value.lower()} and cannot be replaced",
                         code="not_replaceable")
    if old.notional is not None or old.qty != old.qty.to_integral_value():
        # the venue knows only its whole part: cancel it and place a new order instead
        raise OrderError("fractional orders cannot be replaced: cancel and place a new order",
                         code="fractional_replace_not_supported")
    prices = PRICES.get(old.order_type)
    if prices is None:
        raise OrderError(f"{old.order_type} orders cannot be replaced (limit, stop and stop_limit "
                         "orders only)", code="replace_not_supported")
    for name in ("limit_price", "stop_price"):
        if getattr(req, name) is not None and name not in prices:
            raise OrderError(f"a {old.order_type} order has no {name} to replace",
                             code="replace_not_supported")
    if req.trail is not None:
        raise OrderError("trail is for trailing stop orders", code="replace_not_supported")
    new = OrderRequest(
        symbol=old.symbol, side=old.side, type=old.order_type,
        time_in_force=req.time_in_force or old.time_in_force, qty=req.qty or old.qty,
        limit_price=req.limit_price or old.limit_price, stop_price=req.stop_price or old.stop_price,
        client_order_id=req.client_order_id, extended_hours=old.extended_hours)
    if (new.qty, new.limit_price, new.stop_price, new.time_in_force) == (
            old.qty, old.limit_price, old.stop_price, old.time_in_force):
        raise OrderError("nothing to replace: the terms are the order's own", code="nothing_to_replace")
    if new.qty <= old.filled_qty:
        raise OrderError(f"qty {new.qty} is not above the {old.filled_qty} already filled",
                         code="qty_not_above_filled")
    return new


def needed(side: str, qty: Decimal, limit: Decimal) -> Decimal:
    """What a limit order for ``qty`` holds: cash ``qty x limit`` for a buy, shares for a sell."""
    return check_scale(qty * limit, USD) if side == "buy" else qty


def estimated(side: str, order_type: str) -> bool:
    """Whether the order's hold is an estimate (a stop buy: the price at the trigger is not
    known), not ``qty x limit``."""
    return side == "buy" and order_type == "stop"


def extra_hold(old: OrderRow, new: OrderRequest, *, ask: Decimal | None = None,
               collar: Decimal = ZERO) -> Decimal:
    """What the replacement holds beyond the original's hold when it is requested: enough that,
    whatever the original fills before the venue answers (at worst its whole rest at its own
    limit), the original's rest of hold plus this covers the replacement. A stop buy's is its
    estimate as at accept (``ask``, ``collar``) less what the original holds."""
    rest = old.qty - old.filled_qty
    if estimated(new.side, new.type):
        worst = buy_hold(dataclasses.replace(new, qty=new.qty - old.filled_qty), ask, collar)
        return max(ZERO, worst - old.hold_amount)
    assert new.limit_price is not None or new.side == "sell"
    worst = needed(old.side, new.qty - old.filled_qty, new.limit_price or ZERO)
    if old.side == "buy" and old.limit_price is not None and new.limit_price is not None:
        # a fill of the original at its limit uses more of its hold than the replacement frees
        worst += check_scale(max(ZERO, old.limit_price - new.limit_price) * rest, USD)
    return max(ZERO, worst - old.hold_amount)


def request(old: OrderRow, change: ReplaceRequest, *, new_id: str, actor: str, now: datetime,
            day_ttl_s: float | None = None, ctx: PreTradeContext | None = None,
            ask: Decimal | None = None, collar: Decimal = ZERO,
            client_order_id_taken: bool = False,
            balances: Mapping[str, Decimal] | None = None) -> tuple[Decision, Decision]:
    """The replace recorded: the replacement (id ``new_id``, ``replaces`` the original) is
    written ROUTED to the original's venue with its extra hold; the original goes
    PENDING_REPLACE. Raises :class:`OrderError` as :func:`terms` does, with
    ``duplicate_client_order_id`` when ``client_order_id_taken`` (another order of the account
    has the one asked for), and with the code a new order would get when the replacement's terms
    fail the pre-trade rules of ``ctx`` (whose quote and collar then size a stop buy's hold;
    ``ask``/``collar`` otherwise). A trailing stop is replaced at the broker at once
    (``domain.trailing_replace``: ``ask`` and ``collar`` size a buy's hold, ``balances`` source a
    sell's extra shares)."""
    if old.order_type == "trailing_stop":
        from domain import trailing_replace

        if client_order_id_taken:
            raise OrderError("client_order_id is already used by another order of the account",
                             code="duplicate_client_order_id")

        return trailing_replace.request(old, change, new_id=new_id, actor=actor, now=now,
                                        day_ttl_s=day_ttl_s, ask=ask,
                                        collar=collar or Decimal("0.05"), balances=balances)
    req = terms(old, change)
    if client_order_id_taken:
        raise OrderError(f"client_order_id {req.client_order_id!r} is used by another order of "
                         "this account", code="duplicate_client_order_id")
    if ctx is not None:
        why = replace_refusal(ctx, req)
        if why is not None:
            raise OrderError(why.reason, code=why.code)
        ask, collar = ctx.quotes.ask, ctx.collar
    new = new_order(order_id=new_id, account_id=str(old.account_id), req=req,
                    request_hash=req.hash(), actor=actor, now=now, day_ttl_s=day_ttl_s)
    extra = extra_hold(old, req, ask=ask, collar=collar)
    # from where a new order's hold would come (settled first, then unsettled proceeds or
    # shares bought, then provisional credit), within buying power
    sources = {templates.SETTLED_CASH if old.side == "buy" else templates.SETTLED_SHARES: extra}
    if ctx is not None and extra > 0:
        short, found = hold_sources(ctx, req, extra)
        if short is not None:
            raise OrderError(f"not enough buying power for the replacement: {short.reason}",
                             code=short.code)
        sources = {k: v for k, v in found.items() if v} or sources
    step = Step(old, now)
    _move(step, S.PENDING_REPLACE, actor=actor, reason=f"replace requested: order {new.id}",
          data={"replaced_by": new_id, "request": req.to_wire()})
    step.set(replaced_by=new.id)
    rep = Step(new, now)
    rep.event("created", actor=actor, reason=f"replaces order {old.id}", to=S.PENDING,
              from_state="", data={"replaces": str(old.id), "request": req.to_wire()})
    if extra > 0:
        txn = f"order:{new.id}:hold"
        rep.postings.append(
            templates.hold_cash(txn, new.account_id, extra, sources=sources) if old.side == "buy"
            else templates.hold_shares(txn, new.account_id, old.symbol, extra,
                                       from_unsettled=sources.get(templates.UNSETTLED_SHARES, ZERO)))
        rep.event("funds_held", actor="ledger", to=S.FUNDS_HELD, ledger_txn=txn,
                  reason=f"held {extra} {'USD' if old.side == 'buy' else old.symbol} beyond what "
                  f"order {old.id} holds")
    else:
        sources = {}
    rep.set(state=S.ROUTED, venue=old.venue, replaces=old.id, hold_amount=extra,
            hold_sources=sources if old.hold_sources is not None else None)
    rep.event("routed", actor="gateway", to=S.ROUTED, from_state=S.PENDING.value,
              reason=f"sent to {old.venue} as a cancel/replace of order {old.id}")
    return step.decision(), dataclasses.replace(rep.decision(), insert=True)


def replaced(old: OrderRow, new: OrderRow, e: VenueEvent, now: datetime) -> tuple[Decision, Decision]:
    """The venue replaced the original (see the module docstring). When its cumulative quantity
    is not what the original booked, nothing is guessed: the original goes STUCK (its hold, and
    the replacement's, stay) for an operator."""
    if old.state == S.STUCK and new.state == S.REJECTED and new.reject_code == "replace_unanswered":
        return replaced_late(old, new, e, now)
    if old.state != S.PENDING_REPLACE or new.state != S.ROUTED:
        return Decision.nothing(old), Decision.nothing(new)
    actor = f"venue:{e.venue}"
    info = {"exec_id": e.exec_id, "replaced_by": str(new.id), "cum_qty": e.cum_qty,
            "leaves_qty": e.leaves_qty}
    step, rep = Step(old, now), Step(new, now)
    carried = old.prior_filled_qty + old.filled_qty
    if bounded(e.cum_qty) != carried:
        _move(step, S.STUCK, actor=actor, data=info,
              reason=f"{e.venue} replaced the order with {e.cum_qty!r} filled; {carried} booked: "
              "needs an operator")
        return step.decision(), rep.decision()
    qty = new.qty - old.filled_qty
    have = old.hold_amount + new.hold_amount
    # a stop buy keeps both holds (an estimate: see the module docstring)
    need = have if estimated(new.side, new.order_type) else needed(
        new.side, qty, new.limit_price or ZERO)
    sources = _merge(old.hold_sources, new.hold_sources)
    step.event("replaced", actor=actor, to=S.REPLACED, data=info,
               reason=f"replaced by order {new.id}; its hold of {old.hold_amount} goes with it")
    step.set(state=S.REPLACED, replaced_at=now, hold_amount=ZERO,
             hold_sources={} if old.hold_sources is not None else None)
    step.update("replaced")
    rep.set(qty=qty, prior_filled_qty=carried, hold_amount=have, hold_sources=sources)
    if have > need:
        keep, give = _split(sources, have - need)
        txn = f"order:{new.id}:release:replaced"
        rep.postings.append(
            templates.release_cash(txn, new.account_id, have - need, to=give) if new.side == "buy"
            else templates.release_shares(txn, new.account_id, new.symbol, have - need, to=give))
        rep.event("released", actor="ledger", to=S.ROUTED, ledger_txn=txn,
                  reason=f"{have - need} held beyond what the replacement needs released")
        rep.set(hold_amount=need, hold_sources=keep)
    elif have < need:  # cannot happen with the extra hold of the request; never guessed
        raise OrderError(f"the replacement needs {need} but {have} is held", code="hold_short")
    rep.event("new", actor=actor, to=S.ACKED, reason=f"venue replaced order {old.id}",
              data={"exec_id": e.exec_id, "qty": str(qty)})
    rep.set(state=S.ACKED, venue_order_id=e.venue_order_id or new.venue_order_id)
    rep.update("new")
    return step.decision(), rep.decision()


def unanswered(old: OrderRow, new: OrderRow, now: datetime, *, reason: str) -> tuple[Decision, Decision]:
    """No answer to the replace nor to the status request after it: the original STUCK with
    its hold, the replacement (still ROUTED) REJECTED with its extra hold released. An original
    no longer pending the replace (the answer came first) decides nothing."""
    step, rep = Step(old, now), Step(new, now)
    if old.state != S.PENDING_REPLACE:
        return step.decision(), rep.decision()
    _move(step, S.STUCK, actor="system", reason=f"{reason}: needs an operator",
          data={"replaced_by": str(new.id)})
    if new.state == S.ROUTED:
        _finish(rep, S.REJECTED, actor="system", event="rejected", code="replace_unanswered",
                reason=f"{reason}: the replace of order {old.id} was given up")
    return step.decision(), rep.decision()


def replaced_late(old: OrderRow, new: OrderRow, e: VenueEvent,
                  now: datetime) -> tuple[Decision, Decision]:
    """A Replaced after the replace was given up (:func:`unanswered`): nothing is guessed. The
    original stays STUCK, with the venue's word in its audit trail for the operator."""
    step = Step(old, now)
    step.event("replaced_late", actor=f"venue:{e.venue}", to=old.state,
               reason=f"{e.venue} replaced the order (as {new.id}) after the replace was given up:"
               " it may be working there with the new terms; resolve it with the venue",
               data={"exec_id": e.exec_id, "replaced_by": str(new.id), "cum_qty": e.cum_qty,
                     "leaves_qty": e.leaves_qty})
    return step.decision(), Decision.nothing(new)


def replace_rejected(old: OrderRow, new: OrderRow, e: VenueEvent,
                     now: datetime) -> tuple[Decision, Decision]:
    """The venue refused the replace: the original works on as it was (its hold unchanged),
    the replacement ends REJECTED with its extra hold released."""
    actor = f"venue:{e.venue}"
    step, rep = Step(old, now), Step(new, now)
    reason = f"{e.venue} refused the replace: {e.text or e.reject_reason}"
    if old.state == S.PENDING_REPLACE:
        back = S.PARTIALLY_FILLED if old.filled_qty > 0 else S.ACKED
        step.event("replace_rejected", actor=actor, reason=reason, to=back,
                   data={"exec_id": e.exec_id, "replaced_by": str(new.id)})
        step.set(state=back)
        step.update("order_replace_rejected")
    if not new.terminal:
        _finish(rep, S.REJECTED, actor=actor, event="rejected", reason=reason,
                code="replace_rejected")
    return step.decision(), rep.decision()


def _merge(a: Mapping[str, Decimal] | None,
           b: Mapping[str, Decimal] | None) -> dict[str, Decimal] | None:
    if a is None or b is None:
        return None
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, ZERO) + v
    return {k: column(v) for k, v in out.items() if v}


def _split(sources: dict[str, Decimal] | None,
           amount: Decimal) -> tuple[dict[str, Decimal] | None, dict[str, Decimal] | None]:
    """``amount`` of a hold given back, from the sources used last (provisional credit first):
    (what stays, what goes back)."""
    if sources is None:
        return None, None
    keep, give = dict(sources), {}
    for source in sorted(sources, key=_source_rank, reverse=True):
        part = min(amount, keep[source])
        if part:
            give[source] = part
            keep[source] -= part
            amount -= part
    return {k: v for k, v in keep.items() if v}, give



@dataclass
class ReplaceRecorded:
    """What the ``request_replace`` activity returns: both orders as recorded, and the
    OrderCancelReplaceRequest to send."""

    original: OrderSnapshot
    replacement: OrderSnapshot
    send: VenueReplace | None  # None: replaced at the broker (a waiting trailing stop)
    # the replacement's request (OrderRequest.to_wire) when its own workflow starts now
    request: dict[str, Any] | None = None


def venue_replace(old: OrderRow, new: OrderRow, shard: int) -> VenueReplace | None:
    """The OrderCancelReplaceRequest of a recorded replace: the replacement's terms, its total
    as the venue counts it (the fills of the orders before it included). None when no venue has
    the original (a trailing stop replaced at the broker: nothing to send)."""
    if old.venue is None:
        return None
    return VenueReplace(
        order=VenueOrder(order_id=str(new.id), account_id=str(new.account_id), shard=shard,
                         symbol=new.symbol, side=new.side, qty=_s(new.qty + old.prior_filled_qty) or "0",
                         order_type=new.order_type, time_in_force=new.time_in_force,
                         limit_price=_s(new.limit_price), stop_price=_s(new.stop_price),
                         venue=old.venue),
        orig_order_id=str(old.id), venue=old.venue)
