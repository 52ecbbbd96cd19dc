"""The CAT-like line of one order event (``sherwood audit export``; the shape is documented in
docs/operations.md, "Order-event export"). Pure: db/reconstruction.py reads the events.

One line per ``order_events`` row: the firm's id, the account, the order and its client order
id, a CAT-like ``event_type`` (:data:`EVENT_TYPES`; anything else is ``internal``: a step of
ours that reaches no one outside, such as ``funds_held``), the raw event name, symbol, side, the
event's quantity and price (a fill's own, else the order's), the venue, the state the event moved
the order to, and the timestamp in UTC with microseconds.

What it deliberately does not do: claim to be FINRA CAT's submission format (that needs CAT
reporter ids, CAT order ids and IMIDs the firm does not have here); map one to one, the fields
a CAT submission needs are all present.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.fractional import HOUSE_VENUE
from domain.money import plain
from domain.reconstruction import utc_micro

# order_events.event -> CAT-like event type
EVENT_TYPES: Mapping[str, str] = {
    "created": "new_order",
    "routed": "route",
    "new": "route_accepted",
    "partial_fill": "fill",
    "fill": "fill",
    "house_fill": "fill",
    "pending_cancel": "cancel_request",
    "canceled": "cancel",
    "cancel_rejected": "cancel_reject",
    "pending_replace": "replace_request",
    "replaced": "replace",
    "replace_rejected": "replace_reject",
    "rejected": "reject",
    "expired": "expire",
    "failed": "fail",
    "stuck": "stuck",
    "resolved": "resolve",
}
FILL_EVENTS = frozenset({"partial_fill", "fill", "house_fill"})


def _s(v: Any) -> str | None:
    return None if v is None else str(plain(Decimal(str(v))))


def cat_line(*, firm_id: str, event_id: str, account_id: str, order_id: str,
             client_order_id: str, event: str, symbol: str, side: str, order_type: str,
             time_in_force: str, order_qty: Any, notional: Any, limit_price: Any,
             stop_price: Any, venue: str | None, to_state: str | None,
             data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """One export line (see the module docstring)."""
    fill = event in FILL_EVENTS
    kind = EVENT_TYPES.get(event, "internal")
    if event == "house_fill":
        venue = HOUSE_VENUE
    elif kind in ("new_order", "internal", "reject"):  # not (yet) at a venue
        venue = None
    return {
        "firm_id": firm_id,
        "event_id": event_id,
        "event_timestamp": utc_micro(at),
        "event_type": kind,
        "event": event,
        "account_id": account_id,
        "order_id": order_id,
        "client_order_id": client_order_id,
        "symbol": symbol,
        "side": side,
        "order_type": order_type,
        "time_in_force": time_in_force,
        "qty": _s(data.get("qty")) if fill else _s(order_qty),
        "notional": None if fill else _s(notional),
        "price": _s(data.get("price")) if fill else _s(limit_price),
        "stop_price": None if fill else _s(stop_price),
        "venue": venue,
        "state": to_state,
    }
