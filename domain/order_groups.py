"""Order groups (Alpaca's order classes ``bracket``, ``oco``, ``oto``): the request, the legs'
rows and the rules that tie the legs together. Pure.

A group is a parent order and its legs, linked by ``parent_id`` (the parent's id) and named by
``leg`` (``take_profit`` | ``stop_loss``). Long positions only (no shorting):

- ``bracket``: a buy entry (the parent) and two exits, a take-profit limit sell and a stop-loss
  sell; ``oto``: a buy entry and one exit. The exits wait at the broker (:data:`S.HELD`, Alpaca
  ``held``) until the entry has ended with something filled, then go live for the filled qty.
- ``oco``: an exit of an existing long position: the parent is the take-profit limit sell (it
  holds the shares and works at a venue), its leg the stop-loss.

Shares are held once: the stop-loss of a bracket or an OCO is never at a venue while its
take-profit is (two live sells of the same shares could both fill); it waits HELD, holding
nothing, and each fill of the take-profit reduces it (:func:`reduce_held_stop`, applied by the
store in the transaction that books the fill). An OTO's lone stop-loss has no sibling: it goes
to the venue as a stop order, holding its shares like any sell.

Deliberately not here: the stop trigger (it follows quotes: ``domain.trigger``), reading or
writing anything, and the orchestration (``workflows.order_group``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain import ledger as templates
from domain.order_decision import Decision, Step
from domain.order_machine import Finish, decide
from domain.order_row import OrderRow, column, new_order
from domain.orders import (
    GROUP_ORDER_CLASSES,
    LEG_FIELDS,
    OrderError,
    OrderRequest,
    OrderState,
    _price,
    parse_order_request,
)
from domain.trailing import TRIGGERED
from domain.trigger import TriggerSpec

S = OrderState
ZERO = Decimal(0)
TAKE_PROFIT = "take_profit"
STOP_LOSS = "stop_loss"
# time in force of a group: Alpaca's advanced orders are day or gtc
GROUP_TIFS = ("day", "gtc")
_LEG_KEYS = {TAKE_PROFIT: ("limit_price",), STOP_LOSS: ("stop_price", "limit_price")}
_LEG_NS = uuid.UUID("5d0c2a4e-91b3-4f0e-8c7d-3b1f6a9e2d40")


def is_group(body: Mapping[str, object]) -> bool:
    return body.get("order_class") in GROUP_ORDER_CLASSES


def leg_id(parent_id: str, leg: str) -> str:
    """A leg's order id, derived from its parent's: the group's accept, retried, writes the
    same legs, and the workflow knows them without reading."""
    return str(uuid.uuid5(_LEG_NS, f"{parent_id}:{leg}"))


@dataclass(frozen=True)
class GroupRequest:
    """A validated group request: the parent order and the legs' prices."""

    order_class: str
    parent: OrderRequest  # the entry (bracket, oto) or the take-profit sell (oco)
    take_profit: Decimal | None = None  # limit price of the take-profit leg
    stop_price: Decimal | None = None  # stop of the stop-loss leg
    stop_limit: Decimal | None = None  # the stop-loss leg's limit (a stop-limit), if any

    @property
    def legs(self) -> tuple[str, ...]:
        """The legs that are orders of their own (an OCO's take-profit is its parent)."""
        names = []
        if self.take_profit is not None and self.order_class != "oco":
            names.append(TAKE_PROFIT)
        if self.stop_price is not None:
            names.append(STOP_LOSS)
        return tuple(names)

    def leg_request(self, leg: str, qty: Decimal) -> OrderRequest:
        """The order a leg is, for ``qty`` shares (a sell: long positions only)."""
        p = self.parent
        if leg == TAKE_PROFIT:
            return OrderRequest(p.symbol, "sell", "limit", p.time_in_force, qty, self.take_profit)
        kind = "stop" if self.stop_limit is None else "stop_limit"
        return OrderRequest(p.symbol, "sell", kind, p.time_in_force, qty, self.stop_limit,
                            self.stop_price)

    def hash(self) -> str:
        """Identity of the whole request: a retry with other legs is a different request."""
        body = {"parent": self.parent.hash(), "class": self.order_class,
                "tp": _canon(self.take_profit), "sp": _canon(self.stop_price),
                "sl": _canon(self.stop_limit)}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {**self.parent.to_wire(), "order_class": self.order_class}
        if self.take_profit is not None:
            wire[TAKE_PROFIT] = {"limit_price": str(self.take_profit)}
        if self.stop_price is not None:
            wire[STOP_LOSS] = {"stop_price": str(self.stop_price),
                               "limit_price": _canon(self.stop_limit)}
        return wire


def _canon(d: Decimal | None) -> str | None:
    return None if d is None else format(d.normalize(), "f")


def _leg(d: Mapping[str, object], name: str) -> Mapping[str, object] | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise OrderError(f"{name} must be an object", code=f"invalid_{name}")
    unknown = sorted(str(k) for k in v if k not in _LEG_KEYS[name])
    if unknown:
        raise OrderError(f"unknown field(s) in {name}: {', '.join(unknown)}"[:200], code="unknown_field")
    return v


def parse_group_request(d: Mapping[str, object]) -> GroupRequest:
    """Validate an Alpaca bracket / oco / oto request. Raises :class:`OrderError` (or
    ``InvalidAmount``) with a code; every price is bounded and checked like an order's."""
    oc = d.get("order_class")
    if oc not in GROUP_ORDER_CLASSES:
        raise OrderError(f"order_class {str(oc)[:20]!r} is not one of simple, "
                         f"{', '.join(GROUP_ORDER_CLASSES)}", code="invalid_order_class")
    oc = str(oc)
    tp, sl = _leg(d, TAKE_PROFIT), _leg(d, STOP_LOSS)
    base = {k: v for k, v in d.items() if k not in ("order_class", *LEG_FIELDS)}
    if oc == "oco":
        if str(d.get("type") or d.get("order_type") or "") != "limit":
            raise OrderError("an oco order is of type limit", code="invalid_type")
        if tp is None or tp.get("limit_price") is None:
            raise OrderError("oco orders need take_profit.limit_price", code="missing_take_profit")
        top = d.get("limit_price")
        if top is not None and _price(top, "limit_price") != _price(tp["limit_price"],
                                                                    "take_profit_limit_price"):
            raise OrderError("an oco order's limit_price is its take_profit.limit_price",
                             code="invalid_take_profit")
        base["limit_price"] = tp["limit_price"]
    parent = parse_order_request(base)
    if parent.time_in_force not in GROUP_TIFS:
        raise OrderError(f"{oc} orders are day or gtc", code="invalid_time_in_force")
    if parent.extended_hours:
        raise OrderError(f"{oc} orders do not trade in extended hours", code="invalid_extended_hours")
    if parent.fractional:  # Alpaca: fractional and notional orders are simple orders only
        raise OrderError(f"{oc} orders are for whole shares (no notional, no fractional qty)",
                         code="fractional_order_class")
    want_side = "sell" if oc == "oco" else "buy"
    if parent.side != want_side:
        raise OrderError(f"a {oc} order here is a {want_side} (long positions only: "
                         f"{'an exit of a position' if oc == 'oco' else 'an entry with its exits'})",
                         code="invalid_side")
    if oc != "oco" and parent.type not in ("market", "limit"):
        raise OrderError(f"a {oc} entry is a market or limit order", code="invalid_type")
    take = stop = stop_limit = None
    if tp is not None:
        if tp.get("limit_price") is None:
            raise OrderError("take_profit needs limit_price", code="missing_take_profit")
        take = _price(tp["limit_price"], "take_profit_limit_price")
    if sl is not None:
        if sl.get("stop_price") is None:
            raise OrderError("stop_loss needs stop_price", code="missing_stop_loss")
        stop = _price(sl["stop_price"], "stop_loss_stop_price")
        if sl.get("limit_price") is not None:
            stop_limit = _price(sl["limit_price"], "stop_loss_limit_price")
            if stop_limit > stop:
                raise OrderError("stop_loss.limit_price must not be above its stop_price (a sell)",
                                 code="invalid_stop_loss")
    if oc in ("bracket", "oco") and (take is None or stop is None):
        raise OrderError(f"{oc} orders need take_profit.limit_price and stop_loss.stop_price",
                         code="missing_take_profit" if take is None else "missing_stop_loss")
    if oc == "oto" and (take is None) == (stop is None):
        raise OrderError("an oto order has one exit: take_profit or stop_loss", code="invalid_oto_legs")
    if take is not None and stop is not None and take <= stop:
        raise OrderError("take_profit.limit_price must be above stop_loss.stop_price",
                         code="invalid_take_profit")
    if parent.limit_price is not None and oc != "oco":
        if take is not None and take <= parent.limit_price:
            raise OrderError("take_profit.limit_price must be above the entry's limit_price",
                             code="invalid_take_profit")
        if stop is not None and stop >= parent.limit_price:
            raise OrderError("stop_loss.stop_price must be below the entry's limit_price",
                             code="invalid_stop_loss")
    return GroupRequest(oc, parent, take, stop, stop_limit)


# --- rows and rules ----------------------------------------------------------------------

def grouped(parent: OrderRow, g: GroupRequest) -> OrderRow:
    """The parent's row, marked with its group's class."""
    return dataclasses.replace(parent, order_class=g.order_class)


def held_legs(parent: OrderRow, g: GroupRequest, *, request_hash: str, now: datetime,
              day_ttl_s: float | None = None) -> list[Decision]:
    """The rows of the legs of an accepted group, each HELD at the broker for the parent's qty,
    holding nothing (inserted in the parent's accept transaction)."""
    out = []
    for leg in g.legs:
        oid = leg_id(str(parent.id), leg)
        req = g.leg_request(leg, parent.qty)
        row = dataclasses.replace(
            new_order(order_id=oid, account_id=str(parent.account_id), req=req,
                      request_hash=request_hash, actor=parent.actor or "customer", now=now,
                      day_ttl_s=day_ttl_s),
            client_order_id=oid, state=S.HELD, order_class=g.order_class, parent_id=parent.id,
            leg=leg, submitted_at=None)
        step = Step(row, now)
        step.event("held", actor=parent.actor or "customer", to=S.HELD, from_state="",
                   reason=f"{leg} leg of {g.order_class} order {parent.id}, held at the broker",
                   data={"request": req.to_wire()})
        out.append(dataclasses.replace(step.decision(), insert=True))
    return out


def stop_trigger(g: GroupRequest) -> TriggerSpec:
    """The broker-held trigger of the group's stop-loss: a fixed stop on the bid (a sell)."""
    assert g.stop_price is not None
    return TriggerSpec(g.parent.symbol, "sell", "stop", g.stop_price.normalize())


def stop_route(g: GroupRequest, qty: Decimal) -> OrderRequest:
    """What a fired stop-loss is sent to the venue as: a market sell, or a limit sell at its
    limit for a stop-limit."""
    p = g.parent
    if g.stop_limit is None:
        return OrderRequest(p.symbol, "sell", "market", p.time_in_force, qty)
    return OrderRequest(p.symbol, "sell", "limit", p.time_in_force, qty, g.stop_limit)


def takes_over(stop: OrderRow, take_profit: OrderRow, events: Collection[str]) -> bool:
    """The take-profit has ended after the stop-loss's trigger fired (its ``triggered`` event):
    the stop-loss takes over the shares the take-profit held for what it did not fill, in the
    transaction that ends the take-profit (:func:`activate` with the stop-loss's qty)."""
    return (stop.state == S.HELD and take_profit.terminal and TRIGGERED in events
            and stop.qty > 0)


def activate(leg: OrderRow, qty: Decimal, sources: Mapping[str, Decimal] | None, now: datetime, *,
             refused: str | None = None, why: str = "the entry filled") -> Decision:
    """The group's entry ended with ``qty`` filled: the exit leg becomes an order for ``qty``.
    ``sources`` given: it goes live holding its shares (FUNDS_HELD, routed next); None: it stays
    HELD at the broker for ``qty`` (a stop-loss beside its take-profit). ``refused``: the ledger
    refused the hold (the shares are gone): the leg ends REJECTED."""
    if leg.state != S.HELD:
        return Decision.nothing(leg)  # activated (or ended) before: a retry
    if qty <= 0:
        return decide(leg, Finish(S.CANCELED, "the entry filled nothing", actor="system"), now)
    step = Step(leg, now)
    if qty != leg.qty:
        step.event("resized", actor="system", to=S.HELD, reason=f"{why}: {qty}",
                   data={"qty": str(qty), "was": str(leg.qty)})
        step.set(qty=qty)
    if refused is not None:
        decided = decide(step.order, Finish(S.REJECTED, f"the shares cannot be held: {refused}",
                                            actor="ledger", code="insufficient_qty"), now)
        return _merge(step.decision(), decided)
    if sources is None:
        return step.decision()
    txn = f"order:{leg.id}:hold"
    step.postings.append(templates.hold_shares(
        txn, leg.account_id, leg.symbol, qty,
        from_unsettled=sources.get(templates.UNSETTLED_SHARES, ZERO)))
    step.event("funds_held", actor="ledger", to=S.FUNDS_HELD, ledger_txn=txn,
               reason=f"held {qty} {leg.symbol}: {why}")
    step.set(state=S.FUNDS_HELD, hold_amount=qty, hold_sources=dict(sources), submitted_at=now)
    step.update("accepted")
    return step.decision()


def reduce_held_stop(stop: OrderRow, take_profit: OrderRow, now: datetime) -> Decision:
    """A take-profit's fill (booked in this transaction) reduces its HELD stop-loss sibling to
    what the take-profit has not filled; a full fill ends it CANCELED. The stop-loss holds
    nothing while HELD, so no money moves."""
    if stop.state != S.HELD or take_profit.side != "sell":
        return Decision.nothing(stop)
    rest = column(max(ZERO, take_profit.qty - take_profit.filled_qty))
    if rest >= stop.qty:
        return Decision.nothing(stop)
    if rest == 0:
        return decide(stop, Finish(S.CANCELED, f"take-profit {take_profit.id} filled",
                                   actor="system"), now)
    step = Step(stop, now)
    step.event("resized", actor="system", to=S.HELD, reason=f"take-profit {take_profit.id} "
               f"filled {take_profit.filled_qty}", data={"qty": str(rest), "was": str(stop.qty)})
    step.set(qty=rest)
    return step.decision()


def _merge(a: Decision, b: Decision) -> Decision:
    """Two decisions of one order in a row, as one (``b`` decided on ``a``'s row)."""
    return dataclasses.replace(b, changes={**a.changes, **b.changes}, postings=a.postings + b.postings,
                               events=a.events + b.events, updates=a.updates + b.updates)
