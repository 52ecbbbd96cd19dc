"""A trailing stop order and its broker-held trigger (``domain.trigger``): the spec an order
is watched with, and what the trigger's moves and its firing write to the order. Pure.

While it waits, a trailing stop is FUNDS_HELD (its hold taken, no venue has it; Alpaca status
``new``, see ``domain.alpaca.order_status``). The trigger's moves change only the row's ``hwm``
and ``stop_price`` (no audit event: they are not steps of the order, and are written at a
bounded rate); its firing is one audit event (``triggered``: the hwm, stop and quote it fired
at), after which the workflow routes the order as a market order. Deliberately not here: the
quotes, the clock, the routing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

from domain.order_decision import Decision, Step
from domain.order_row import OrderRow, column
from domain.orders import OrderError, OrderRequest, OrderState
from domain.trigger import TriggerSpec

TRIGGERED = "triggered"  # the audit event of a fired trigger


def trigger_spec(order: OrderRow) -> TriggerSpec:
    """The trigger a trailing stop is watched with, from its row (the hwm it has seen so far)."""
    if order.order_type != "trailing_stop":
        raise OrderError(f"order {order.id} is a {order.order_type} order, not a trailing stop",
                         code="not_a_trailing_stop")
    if order.trail_price is not None:
        kind, value = "trail_price", order.trail_price
    else:
        assert order.trail_percent is not None
        kind, value = "trail_percent", order.trail_percent
    return TriggerSpec(order.symbol, order.side, kind, value.normalize(),
                       None if order.hwm is None else order.hwm.normalize())


def request_wire(order: OrderRow) -> dict[str, str | bool | None]:
    """The order's request (``OrderRequest.to_wire``) from its row: what a workflow started for
    an order that already exists (a replacement) runs with."""
    # a trailing stop's stop_price column is its trigger's current stop, not a request field
    stop = None if order.order_type == "trailing_stop" else order.stop_price
    return OrderRequest(order.symbol, order.side, order.order_type, order.time_in_force, order.qty,
                        order.limit_price, stop, order.client_order_id,
                        order.extended_hours, order.trail_price, order.trail_percent).to_wire()


def waiting(order: OrderRow) -> bool:
    """The order still waits for its trigger (nothing sent, not ended): a trailing stop holding
    its funds, or an order group's stop-loss HELD at the broker (``domain.order_groups``)."""
    if order.leg == "stop_loss":
        return order.state == OrderState.HELD
    return order.order_type == "trailing_stop" and order.state == OrderState.FUNDS_HELD


def follow(order: OrderRow, spec: TriggerSpec, now: datetime) -> Decision:
    """The trigger moved: the row shows its hwm and stop. Nothing when the order no longer waits
    or the row shows them already."""
    stop = spec.stop
    if not waiting(order) or (order.hwm == column(spec.hwm) and order.stop_price == column(stop)):
        return Decision.nothing(order)
    step = Step(order, now)
    step.set(hwm=spec.hwm, stop_price=stop)
    return step.decision()


def fired(order: OrderRow, spec: TriggerSpec, bid: Decimal, ask: Decimal, now: datetime, *,
          events: Collection[str]) -> Decision:
    """The trigger fired at (bid, ask): the row shows the hwm and stop it fired at, and the audit
    trail says so, once (``events``: the names of the order's audit events so far). Nothing when
    the order no longer waits (canceled, expired) or the firing is recorded already."""
    if not waiting(order) or TRIGGERED in events:
        return Decision.nothing(order)
    step = Step(order, now)
    step.set(hwm=spec.hwm, stop_price=spec.stop)
    step.event(TRIGGERED, actor="trigger", to=None,
               reason=f"{'bid' if spec.side == 'sell' else 'ask'} crossed the stop {spec.stop} "
                      f"(hwm {spec.hwm}): sent as a market order",
               data={"hwm": str(spec.hwm), "stop_price": str(spec.stop), "bid": str(bid),
                     "ask": str(ask), "trigger": spec.to_wire()})
    return step.decision()
