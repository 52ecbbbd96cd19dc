"""The ``orders`` row, typed (:class:`OrderRow`), and the row of an order just received. Pure.

Every number of an order row is ``numeric(38, 10)`` in the database, which rounds half away
from zero: :func:`column` keeps a value in memory at that scale, so the row the order core
decides against equals the row written. Deliberately no decision here (``domain.order_machine``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain import calendar
from domain.money import plain
from domain.orders import TERMINAL, OrderRequest, OrderSnapshot, OrderState

S = OrderState
ZERO = Decimal(0)
ROW_SCALE = Decimal("1E-10")

@dataclass(frozen=True)
class OrderRow:
    """One row of the ``orders`` table (every column), typed."""

    id: uuid.UUID
    account_id: uuid.UUID
    client_order_id: str
    request_hash: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    qty: Decimal
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    state: OrderState
    cl_ord_id: str
    venue: str | None
    venue_order_id: str | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    filled_value: Decimal
    hold_currency: str
    hold_amount: Decimal
    reject_code: str | None
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    filled_at: datetime | None
    canceled_at: datetime | None
    expired_at: datetime | None
    failed_at: datetime | None
    expires_at: datetime | None
    actor: str | None
    version: int
    # what is still held, per source it came from (domain.ledger.source_account); None: held
    # before sources were kept (released to cash / shares)
    hold_sources: dict[str, Decimal] | None = None
    # cancel/replace: the order this one replaces, the order that replaces (or is to replace)
    # this one, and when the venue replaced it
    replaces: uuid.UUID | None = None
    replaced_by: uuid.UUID | None = None
    replaced_at: datetime | None = None
    # what the venue counts as filled (CumQty) for the orders this one replaced
    prior_filled_qty: Decimal = ZERO
    # a trailing stop's trail (one of them) and the best price its trigger has seen
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    # order groups (domain.order_groups): Alpaca's order class, the parent of a leg, and which
    # leg it is (take_profit | stop_loss)
    order_class: str = "simple"
    parent_id: uuid.UUID | None = None
    leg: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> OrderRow:
        """From a database row (``SELECT * FROM orders``)."""
        values = {f.name: row[f.name] for f in _FIELDS if f.name in row}
        values["state"] = S(values["state"])
        if values.get("hold_sources") is not None:
            values["hold_sources"] = {k: Decimal(v) for k, v in values["hold_sources"].items()}
        return cls(**values)

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in _FIELDS}

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def snapshot(self, *, duplicate: bool = False) -> OrderSnapshot:
        """What the workflow knows of the order (decimals as strings)."""
        return OrderSnapshot(
            order_id=str(self.id), account_id=str(self.account_id),
            client_order_id=self.client_order_id, state=self.state.value, symbol=self.symbol,
            side=self.side, qty=_s(self.qty) or "0", filled_qty=_s(self.filled_qty) or "0",
            filled_avg_price=_s(self.filled_avg_price), hold_remaining=_s(self.hold_amount) or "0",
            venue=self.venue, reject_code=self.reject_code, reject_reason=self.reject_reason,
            expires_at=self.expires_at.isoformat() if self.expires_at else None,
            duplicate=duplicate, created_at=self.created_at.isoformat(),
            updated_at=self.updated_at.isoformat(),
            replaced_by=str(self.replaced_by) if self.replaced_by else None)


_FIELDS = dataclasses.fields(OrderRow)


def _s(d: Decimal | None) -> str | None:
    return None if d is None else format(plain(d), "f")


def column(v: Any) -> Any:
    """A value as an order row column holds it."""
    return v.quantize(ROW_SCALE, rounding=ROUND_HALF_UP) if isinstance(v, Decimal) else v


def new_order(*, order_id: str, account_id: str, req: OrderRequest, request_hash: str, actor: str,
              now: datetime, day_ttl_s: float | None = None) -> OrderRow:
    """The row of an order just received (state PENDING, nothing held yet)."""
    expires = None
    if req.time_in_force == "day":
        expires = now + timedelta(seconds=day_ttl_s) if day_ttl_s else calendar.day_order_expiry(now)
    elif req.time_in_force in ("opg", "cls"):  # its auction: the venue ends it there (domain.hours)
        expires = calendar.auction_at(req.time_in_force, now)
    return OrderRow(
        id=uuid.UUID(order_id), account_id=uuid.UUID(account_id),
        client_order_id=req.client_order_id or order_id, request_hash=request_hash,
        symbol=req.symbol, side=req.side, order_type=req.type, time_in_force=req.time_in_force,
        qty=column(req.qty), notional=column(req.notional), limit_price=column(req.limit_price),
        stop_price=column(req.stop_price), extended_hours=req.extended_hours, state=S.PENDING,
        cl_ord_id=order_id, venue=None, venue_order_id=None, filled_qty=column(ZERO),
        filled_avg_price=None, filled_value=column(ZERO),
        hold_currency="USD" if req.side == "buy" else req.symbol, hold_amount=column(ZERO),
        reject_code=None, reject_reason=None, created_at=now, updated_at=now, submitted_at=now,
        filled_at=None, canceled_at=None, expired_at=None, failed_at=None, expires_at=expires,
        actor=actor, version=0, trail_price=column(req.trail_price),
        trail_percent=column(req.trail_percent))
