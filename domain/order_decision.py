"""What one event does to an order (:class:`Decision`) and its parts: audit events, trade
updates, executions and their bookings, ledger transactions. Pure data, and :class:`Step`, which
builds a decision as a step goes. ``domain.order_machine`` decides; ``db.orders`` writes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from domain.execution_quality import FillRecord
from domain.ledger import LedgerTxn
from domain.order_row import OrderRow, column
from domain.orders import OrderState


@dataclass(frozen=True)
class AuditEvent:
    """One row of ``order_events``: who, what, why, before -> after."""

    order_id: uuid.UUID
    account_id: uuid.UUID
    event: str
    actor: str
    reason: str | None
    from_state: str
    to_state: str | None
    ledger_txn: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TradeUpdate:
    """One Alpaca ``trade_updates`` message (an outbox row) about ``order`` as it is after the
    step. ``position_of``: the update reports the account's position in that symbol as the
    transaction leaves it (the writer reads it after posting)."""

    event: str
    order: OrderRow
    at: datetime
    extra: Mapping[str, str] = field(default_factory=dict)
    position_of: str | None = None


@dataclass(frozen=True)
class Booking:
    """An execution (already recorded) booked by ``ledger_txn`` on ``trade_date``."""

    venue: str
    exec_id: str
    ledger_txn: str
    trade_date: date


@dataclass(frozen=True)
class Execution:
    """An execution row to record: a venue's event (inserted before it is decided, to
    deduplicate by ``(venue, exec_id)``) or an operator's fill (recorded by its decision)."""

    venue: str
    exec_id: str
    kind: str  # the VenueEventKind value, or ``refused`` for a fill the rules refused
    qty: Decimal  # booked quantity: 0 unless a fill that is booked
    price: Decimal | None
    cum_qty: Decimal | None  # None: the venue's number is unreadable or out of range
    leaves_qty: Decimal | None
    avg_px: Decimal | None
    transact_time: datetime | None
    raw: Mapping[str, Any]
    quality: FillRecord | None = None  # a venue fill's route and quality, stored with it


@dataclass(frozen=True)
class SellBooked:
    """A sell fill was booked: whether it is a good-faith violation is for the writer to check
    (it needs the account's recent buys)."""

    symbol: str
    qty: Decimal
    trade_date: date


@dataclass(frozen=True)
class TopUp:
    """A buy fill cost more than was still held: the difference came out of ``cash``, which may
    go below zero (the writer records the shortfall, if any)."""

    venue: str
    exec_id: str
    amount: Decimal


@dataclass(frozen=True)
class Decision:
    """What one event does to an order. ``changes``: the columns that change (empty: the row
    is not written); ``order``: the row after them."""

    order: OrderRow
    changes: Mapping[str, Any] = field(default_factory=dict)
    postings: tuple[LedgerTxn, ...] = ()
    events: tuple[AuditEvent, ...] = ()
    updates: tuple[TradeUpdate, ...] = ()
    executions: tuple[Execution, ...] = ()
    bookings: tuple[Booking, ...] = ()
    sells: tuple[SellBooked, ...] = ()
    insert: bool = False  # the order row is new
    topups: tuple[TopUp, ...] = ()

    @property
    def releases_cash(self) -> bool:
        """Cash goes back to the customer (a settled shortfall may be covered by it)."""
        return any(t.kind == "release_cash" for t in self.postings)

    @classmethod
    def nothing(cls, order: OrderRow) -> Decision:
        return cls(order)


class Step:
    """Builds one decision: the row changes as the step goes, every event records the state it
    left."""

    def __init__(self, order: OrderRow, now: datetime) -> None:
        self.before = order
        self.order = order
        self.now = now
        self.changes: dict[str, Any] = {}
        self.postings: list[LedgerTxn] = []
        self.events: list[AuditEvent] = []
        self.updates: list[TradeUpdate] = []
        self.executions: list[Execution] = []
        self.bookings: list[Booking] = []
        self.sells: list[SellBooked] = []
        self.topups: list[TopUp] = []

    def set(self, **values: Any) -> None:
        """Change columns; every write of the row bumps its version and ``updated_at``."""
        values = {k: column(v) for k, v in values.items()}
        values.update(updated_at=self.now, version=self.order.version + 1)
        self.changes.update(values)
        self.order = dataclasses.replace(self.order, **values)

    def event(self, event: str, *, actor: str, reason: str | None, to: OrderState | None,
              ledger_txn: str | None = None, data: Mapping[str, Any] | None = None,
              from_state: str | None = None) -> None:
        self.events.append(AuditEvent(
            self.order.id, self.order.account_id, event, actor, reason,
            self.order.state.value if from_state is None else from_state,
            None if to is None else to.value, ledger_txn, data or {}))

    def update(self, event: str, *, position_of: str | None = None, **extra: str) -> None:
        self.updates.append(TradeUpdate(event, self.order, self.now, extra, position_of))

    def decision(self) -> Decision:
        return Decision(self.order, self.changes, tuple(self.postings), tuple(self.events),
                        tuple(self.updates), tuple(self.executions), tuple(self.bookings),
                        tuple(self.sells), topups=tuple(self.topups))
