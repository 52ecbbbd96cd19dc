"""Alpaca's shapes of Sherwood's objects: orders, trade updates (and, below, positions, the
account and activities). Pure: built from rows and figures the callers read; numbers as strings,
times as RFC 3339 with ``Z``.

The API answers with these, and the order store writes trade updates (outbox rows) with them, so
a client sees the same order object from ``GET /v2/orders/{id}`` and from the stream.
Deliberately not here: reading anything, HTTP status codes and error bodies (``api/``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.assets import get_asset
from domain.money import plain
from domain.order_decision import TradeUpdate
from domain.order_row import OrderRow
from domain.orders import OrderRequest, OrderSnapshot, OrderState, alpaca_status


def iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def number(d: Decimal | str | None) -> str | None:
    """A decimal as Alpaca writes it: a plain string, no exponent, no trailing zeros."""
    return None if d is None else format(plain(Decimal(d)), "f")


def order_object(order: OrderRow) -> dict[str, Any]:
    """The Alpaca v2 order object (with Sherwood's extras: ``state``, ``venue``,
    ``reject_reason``, ``reject_code``)."""
    asset = get_asset(order.symbol)
    return {
        "id": str(order.id), "client_order_id": order.client_order_id,
        "created_at": iso(order.created_at), "updated_at": iso(order.updated_at),
        "submitted_at": iso(order.submitted_at or order.created_at),
        "filled_at": iso(order.filled_at), "expired_at": iso(order.expired_at),
        "canceled_at": iso(order.canceled_at), "failed_at": iso(order.failed_at),
        "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": str(asset.id) if asset else None, "symbol": order.symbol,
        "asset_class": "us_equity", "notional": None, "qty": number(order.qty),
        "filled_qty": number(order.filled_qty) or "0",
        "filled_avg_price": number(order.filled_avg_price), "order_class": "simple",
        "order_type": order.order_type, "type": order.order_type, "side": order.side,
        "time_in_force": order.time_in_force, "limit_price": number(order.limit_price),
        "stop_price": number(order.stop_price), "status": alpaca_status(order.state),
        "extended_hours": order.extended_hours, "legs": None,
        # Sherwood extras
        "state": order.state.value, "venue": order.venue, "reject_reason": order.reject_reason,
        "reject_code": order.reject_code,
    }


def order_at_accept(snap: OrderSnapshot, req: OrderRequest) -> dict[str, Any] | None:
    """The order object of an order the accept just wrote, from what the accept returned and
    the request (equal to :func:`order_object` of the row); None when the snapshot cannot say
    (a duplicate, which may have moved on since, or an older workflow's result)."""
    if snap.duplicate or snap.created_at is None or snap.updated_at is None:
        return None
    created = datetime.fromisoformat(snap.created_at)

    def dec(v: str | Decimal | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    return order_object(OrderRow(
        id=uuid.UUID(snap.order_id), account_id=uuid.UUID(snap.account_id),
        client_order_id=snap.client_order_id, request_hash="", symbol=snap.symbol,
        side=snap.side, order_type=req.type, time_in_force=req.time_in_force,
        qty=Decimal(snap.qty), notional=None, limit_price=req.limit_price, stop_price=req.stop_price,
        extended_hours=req.extended_hours, state=OrderState(snap.state), cl_ord_id=snap.order_id,
        venue=snap.venue, venue_order_id=None, filled_qty=Decimal(snap.filled_qty),
        filled_avg_price=dec(snap.filled_avg_price), filled_value=Decimal(0), hold_currency="",
        hold_amount=Decimal(snap.hold_remaining), reject_code=snap.reject_code,
        reject_reason=snap.reject_reason, created_at=created,
        updated_at=datetime.fromisoformat(snap.updated_at), submitted_at=created, filled_at=None,
        canceled_at=None, expired_at=None, failed_at=None, expires_at=None, actor=None, version=0))


def trade_update(update: TradeUpdate, *, position_qty: Decimal | None = None) -> dict[str, Any]:
    """The ``trade_updates`` stream message of one order step (Alpaca's shape: event, order,
    timestamp; a fill adds price, qty, position_qty and execution_id)."""
    order = update.order
    extra: dict[str, Any] = dict(update.extra)
    if position_qty is not None:
        extra["position_qty"] = str(position_qty)
    return {"event": update.event, "account_id": str(order.account_id), "order": order_object(order),
            "timestamp": iso(update.at), **extra}
