"""The order machine's fills (``domain.order_machine``): a venue's fill booked against the order
(its ledger transaction, booking, filled quantity and average, the release of what is left when
it completes the order), the firm's fill of the fraction once the venue filled the whole part,
and the firm's fill of an order with no whole share (``domain.fractional``). Pure.

Deliberately not here: whether a fill may be booked at all (``domain.order_machine.refusal``),
and the state an event moves the order to other than by its filled quantity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain import calendar, fractional
from domain import ledger as templates
from domain.execution import VenueEvent, VenueEventKind
from domain.money import plain
from domain.order_decision import Booking, Decision, Execution, SellBooked, Step, TopUp
from domain.order_row import OrderRow, column
from domain.order_steps import (
    ZERO,
    S,
    _finish,
    _release,
    _transition_ok,
    _when,
    consume,
)
from domain.orders import TERMINAL, FillMath, InvalidTransition, OrderError, apply_fill


@dataclass(frozen=True)
class HouseFill:
    """The firm fills an order with no whole share itself, at the quote (``domain.fractional``):
    ``inventory``: the firm's position in the symbol now; ``max_inventory``: its bound."""

    bid: Decimal | None
    ask: Decimal | None
    inventory: Decimal
    max_inventory: Decimal


def _fill_math(order: OrderRow, last_qty: Decimal, last_px: Decimal) -> FillMath:
    """A venue fill's arithmetic: a venue fills at most the order's whole part."""
    return apply_fill(order.side, qty=fractional.whole_part(order.qty), filled_qty=order.filled_qty,
                      filled_value=order.filled_value, hold_remaining=order.hold_amount,
                      last_qty=last_qty, last_px=last_px)


# how far a venue's clock may be off ours before its TransactTime is not believed
CLOCK_SKEW = timedelta(minutes=5)


def executed_at(order: OrderRow, e: VenueEvent, now: datetime) -> datetime:
    """When a fill happened: the venue's TransactTime, which makes its trade date (New York) and
    so its settlement date, when it is believable -- not before the order existed nor after now
    (a few minutes of clock skew allowed). Otherwise (absent, unreadable, impossible) the time we
    book it."""
    at = _when(e.transact_time)
    if at is None or at.tzinfo is None or not order.created_at - CLOCK_SKEW <= at <= now + CLOCK_SKEW:
        return now
    return at


def _fill(step: Step, e: VenueEvent, actor: str, info: Mapping[str, Any]) -> None:
    """Book one (partial) fill: the ledger transaction, the execution's booking, the new
    filled quantity and average, the release of what is left when it completes the order."""
    order = step.order
    last_qty, last_px = Decimal(e.last_qty), Decimal(e.last_px or "0")
    math = _fill_math(order, last_qty, last_px)
    txn_id = f"order:{order.id}:fill:{e.venue}:{e.exec_id}"
    if order.side == "buy":
        step.postings.append(templates.buy_fill(txn_id, order.account_id, order.symbol, last_qty,
                                                last_px, topup=math.topup))
        if math.topup > 0:
            step.topups.append(TopUp(e.venue, e.exec_id, math.topup))
    trade = calendar.trade_date(executed_at(order, e, step.now))
    if order.side == "sell" and math.topup > 0:  # nothing (or too little) held any more: hold it
        step.postings.append(templates.hold_shares(f"{txn_id}:hold", order.account_id, order.symbol,
                                                   math.topup))
    if order.side == "sell":  # the proceeds settle in the lot of the sale's settlement date
        step.postings.append(templates.sell_fill(txn_id, order.account_id, order.symbol, last_qty,
                                                 last_px, settles=calendar.settle_date(trade)))
    step.bookings.append(Booking(e.venue, e.exec_id, txn_id, trade))
    if order.side == "sell":  # a good-faith violation is decided by the sell's booking
        step.sells.append(SellBooked(order.symbol, last_qty, trade))
    used = math.value if order.side == "buy" else last_qty
    frac = plain(fractional.fraction_of(order.qty))
    reported = last_qty
    if frac and math.filled_qty == fractional.whole_part(order.qty) and order.state not in TERMINAL:
        # the venue filled the whole part: the firm fills the fraction at this fill's price
        math, used_too = _house_fraction(step, math, frac, last_px, trade)
        used += used_too
        reported += frac
    full = math.filled_qty == order.qty
    state = order.state
    if state in TERMINAL:  # a late fill after we ended the order: the money still moves
        to = state
    elif full:
        to = S.FILLED
    else:
        to = state if state in (S.PENDING_CANCEL, S.STUCK, S.PENDING_REPLACE) else S.PARTIALLY_FILLED
    _transition_ok(state, to)
    left = consume(order.hold_sources, used)
    values: dict[str, Any] = {"filled_qty": math.filled_qty, "filled_avg_price": math.avg_price,
                              "filled_value": math.filled_value, "hold_amount": math.hold_remaining,
                              "hold_sources": left, "state": to}
    released = None
    if full:
        values["filled_at"] = step.now
        step.order = dataclasses.replace(order, hold_amount=column(math.hold_remaining),
                                         hold_sources=left)
        released = _release(step, "filled")
        step.order = order
        values["hold_amount"] = ZERO
        values["hold_sources"] = {} if left is not None else None
    step.event("fill" if full else "partial_fill", actor=actor, reason=f"{last_qty} @ {last_px}",
               to=to, ledger_txn=txn_id, data={**info, "qty": str(last_qty), "price": str(last_px)})
    step.set(**values)
    step.update("fill" if full else "partial_fill", position_of=order.symbol, price=str(last_px),
                qty=str(reported), execution_id=e.exec_id)
    if released:
        step.event("released", actor="ledger", reason="unused hold released", to=to,
                   ledger_txn=released)


def _house_fraction(step: Step, venue: FillMath, frac: Decimal, price: Decimal,
                    trade: date) -> tuple[FillMath, Decimal]:
    """The firm fills the fraction of an order whose whole part the venue has just completed,
    at the price of that venue fill (``domain.fractional``), in the same decision. Returns the
    order's fill arithmetic after it and the hold it used (cash for a buy, shares for a sell)."""
    order = step.order
    value = fractional.fraction_value(frac, price)
    math = apply_fill(order.side, qty=order.qty, filled_qty=venue.filled_qty,
                      filled_value=venue.filled_value, hold_remaining=venue.hold_remaining,
                      last_qty=frac, last_px=price, value=value)
    _book_house(step, frac, price, value, math.topup, trade)
    return math, value if order.side == "buy" else frac


def _book_house(step: Step, qty: Decimal, price: Decimal, value: Decimal, topup: Decimal,
                trade: date) -> str:
    """The ledger transaction, execution row and booking of a fill by the firm."""
    order = step.order
    exec_id = f"{order.id}:fraction"
    txn_id = f"order:{order.id}:fill:{fractional.HOUSE_VENUE}:{exec_id}"
    if order.side == "sell" and topup > 0:
        step.postings.append(templates.hold_shares(f"{txn_id}:hold", order.account_id, order.symbol,
                                                   topup))
    step.postings.append(templates.house_fill(
        txn_id, order.account_id, order.symbol, order.side, qty, value, price,
        topup=topup if order.side == "buy" else 0,
        settles=calendar.settle_date(trade) if order.side == "sell" else None))
    step.executions.append(Execution(
        venue=fractional.HOUSE_VENUE, exec_id=exec_id, kind=VenueEventKind.FILL.value, qty=qty,
        price=price, cum_qty=qty, leaves_qty=ZERO, avg_px=price, transact_time=step.now,
        raw={"value": str(value)}))
    step.bookings.append(Booking(fractional.HOUSE_VENUE, exec_id, txn_id, trade))
    if order.side == "sell":
        step.sells.append(SellBooked(order.symbol, qty, trade))
    elif topup > 0:
        step.topups.append(TopUp(fractional.HOUSE_VENUE, exec_id, topup))
    step.event("house_fill", actor="house", reason=f"{qty} @ {price} filled by the firm ({value} USD)",
               to=step.order.state, ledger_txn=txn_id,
               data={"qty": str(qty), "price": str(price), "value": str(value)})
    return txn_id


def _house_fill(order: OrderRow, cmd: HouseFill, now: datetime) -> Decision:
    """The firm fills an order with no whole share (``domain.fractional``) at the quote's far
    side: FILLED with what is left of the hold released, or REJECTED (hold released) when it
    cannot: no quote, a limit not reached, the price moved past what is held, the firm's
    inventory bound."""
    if order.terminal:
        return Decision.nothing(order)
    if order.state != S.FUNDS_HELD or fractional.whole_part(order.qty) > 0:
        raise InvalidTransition(f"order is {order.state} with qty {order.qty}: the firm fills only "
                                "orders with no whole share, before they route")
    step = Step(order, now)
    try:
        terms = fractional.house_terms(side=order.side, qty=order.qty, notional=order.notional,
                                       limit_price=order.limit_price, bid=cmd.bid, ask=cmd.ask)
        fractional.check_inventory(order.side, cmd.inventory, terms.qty, cmd.max_inventory)
        if (terms.value if order.side == "buy" else terms.qty) > order.hold_amount:
            raise OrderError(f"the price moved to {terms.price}: {terms.qty} shares for {terms.value} "
                             f"is more than the {order.hold_amount} held", code="price_moved")
    except OrderError as exc:
        _finish(step, S.REJECTED, actor="house", event="rejected", reason=exc.message, code=exc.code)
        return step.decision()
    trade = calendar.trade_date(now)
    txn_id = _book_house(step, terms.qty, terms.price, terms.value, ZERO, trade)
    math = apply_fill(order.side, qty=terms.qty, filled_qty=ZERO, filled_value=ZERO,
                      hold_remaining=order.hold_amount, last_qty=terms.qty, last_px=terms.price,
                      value=terms.value)
    left = consume(order.hold_sources, terms.value if order.side == "buy" else terms.qty)
    step.order = dataclasses.replace(order, hold_amount=column(math.hold_remaining), hold_sources=left)
    released = _release(step, "filled")
    step.order = order
    step.event("fill", actor="house", reason=f"{terms.qty} @ {terms.price}", to=S.FILLED,
               ledger_txn=txn_id, data={"qty": str(terms.qty), "price": str(terms.price)})
    step.set(qty=terms.qty, filled_qty=terms.qty, filled_avg_price=terms.price,
             filled_value=terms.value, hold_amount=ZERO, state=S.FILLED, filled_at=now,
             hold_sources={} if left is not None else None)
    step.update("fill", position_of=order.symbol, price=str(terms.price), qty=str(terms.qty),
                execution_id=f"{order.id}:fraction", execution_venue=fractional.HOUSE_VENUE)
    if released:
        step.event("released", actor="ledger", reason="unused hold released", to=S.FILLED,
                   ledger_txn=released)
    return step.decision()
