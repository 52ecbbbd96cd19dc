"""Audit reconstruction: an account as it stood at an instant, folded from the shard's
append-only facts (ledger entries, order events, booked executions, transfer events). Pure: the
reads are db/reconstruction.py's, the command ``sherwood audit account`` (sherwood/cli_audit.py).

What it folds:

- **balances**: every customer ledger account of the account, the sum of its entries up to the
  instant (the ledger of record; the cached ``balances`` are not read).
- **positions**: shares per symbol (``shares + shares_held + shares_unsettled``) from those
  balances, and their cost basis by :func:`domain.positions.cost_bases` over the fills booked up
  to the instant -- the very function ``GET /v2/positions`` uses.
- **orders**: each order's state is the ``to_state`` of its last event up to the instant (every
  state change writes an ``order_events`` row with the state it moved to); its filled quantity
  the booked quantity of its executions whose booking ledger transaction was posted by then;
  what it held, the sum of its own ledger transactions (``order:<id>:...``) on the hold accounts
  (``cash_held`` for a buy, ``shares_held:SYM`` for a sell), plus the hold its replaced
  predecessor passed on (a replace moves the hold without a ledger transaction: the ``replaced``
  event of the original names the replacement).
- **history**: every order event, ledger transaction and transfer event up to the instant.

What it deliberately does not do: value positions (market prices are not the shard's: the
reconstruction gives the inputs of equity, cash and quantities at cost), or know an order's
quantity changed by something other than its request or a venue's replace (``new`` events that
carry ``qty``): an order group leg resized while it waited (``resized``) shows its current row's
quantity.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.account import account_figures
from domain.money import plain
from domain.orders import TERMINAL, OrderState
from domain.positions import Fill, Split, average_cost, cost_bases, position_figures

ZERO = Decimal(0)
_HOLD_CASH = "cash_held"
_HOLD_SHARES = "shares_held"


@dataclass(frozen=True)
class OrderFacts:
    """What does not change about an order (its row's request columns)."""

    id: uuid.UUID
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    qty: Decimal | None  # the row's current quantity (see the module docstring)
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_at: datetime


@dataclass(frozen=True)
class EventRow:
    """One ``order_events`` row."""

    id: int
    order_id: uuid.UUID
    seq: int
    event: str
    actor: str
    reason: str | None
    from_state: str | None
    to_state: str | None
    ledger_txn_id: str | None
    data: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class HoldEntry:
    """An entry of one of the order's ledger transactions on a customer account."""

    txn_id: str
    account: str  # the ledger account's name (cash_held, shares_held:AAPL, cash, ...)
    amount: Decimal


@dataclass(frozen=True)
class OrderAsOf:
    id: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    state: str
    filled_qty: Decimal
    hold_amount: Decimal
    hold_currency: str

    @property
    def open(self) -> bool:
        return OrderState(self.state) not in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "client_order_id": self.client_order_id, "symbol": self.symbol,
                "side": self.side, "type": self.order_type, "time_in_force": self.time_in_force,
                "qty": _s(self.qty), "notional": _s(self.notional),
                "limit_price": _s(self.limit_price), "state": self.state,
                "filled_qty": _s(self.filled_qty), "hold_amount": _s(self.hold_amount),
                "hold_currency": self.hold_currency}


@dataclass(frozen=True)
class PositionAsOf:
    symbol: str
    qty: Decimal
    shares: Decimal
    held: Decimal
    unsettled: Decimal
    cost_basis: Decimal  # exact cost of the shares, to the cent (as GET /v2/positions shows it)
    avg_entry_price: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "qty": _s(self.qty), "shares": _s(self.shares),
                "held": _s(self.held), "unsettled": _s(self.unsettled),
                "cost_basis": _s(self.cost_basis), "avg_entry_price": _s(self.avg_entry_price)}


@dataclass(frozen=True)
class Reconstruction:
    account_id: str
    as_of: datetime
    balances: dict[str, Decimal]
    cash: dict[str, Decimal]  # cash, cash_available, cash_held, cash_unsettled
    positions: list[PositionAsOf]
    open_orders: list[OrderAsOf]
    orders: list[OrderAsOf]  # every order that existed at the instant
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "as_of": utc_micro(self.as_of),
                "balances": {k: _s(v) for k, v in sorted(self.balances.items())},
                "cash": {k: _s(v) for k, v in self.cash.items()},
                "positions": [p.to_json() for p in self.positions],
                "open_orders": [o.to_json() for o in self.open_orders],
                "orders": [o.to_json() for o in self.orders],
                "history": self.history}


def utc_micro(at: datetime) -> str:
    """A timestamp in UTC with microseconds: ``2025-03-04T14:30:00.123456Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _s(v: Decimal | None) -> str | None:
    return None if v is None else str(plain(v))


def order_of_txn(txn_id: str) -> uuid.UUID | None:
    """The order a ledger transaction belongs to (``order:<id>:hold|release:..|fill:..``)."""
    kind, _, rest = txn_id.partition(":")
    if kind != "order":
        return None
    try:
        return uuid.UUID(rest.partition(":")[0])
    except ValueError:
        return None


def balances_as_of(entries: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Sum of the entries per ledger account (those summing to zero are left out, as a ledger
    account a refused hold created and never used)."""
    out: dict[str, Decimal] = {}
    for name, amount in entries:
        out[name] = out.get(name, ZERO) + amount
    return {k: plain(v) for k, v in out.items() if v != 0}


def holds_by_order(entries: Iterable[HoldEntry], events: Sequence[EventRow]) -> dict[uuid.UUID, Decimal]:
    """What each order held: its transactions' entries on the hold accounts, and the hold of a
    replaced original carried to its replacement (in the order the replaces happened)."""
    own: dict[uuid.UUID, Decimal] = {}
    for e in entries:
        order = order_of_txn(e.txn_id)
        if order is None or e.account.partition(":")[0] not in (_HOLD_CASH, _HOLD_SHARES):
            continue
        own[order] = own.get(order, ZERO) + e.amount
    held = dict(own)
    for ev in sorted(events, key=lambda x: (x.at, x.id)):
        if ev.to_state == OrderState.REPLACED.value and ev.data.get("replaced_by"):
            new = uuid.UUID(str(ev.data["replaced_by"]))
            held[new] = held.get(new, ZERO) + held.get(ev.order_id, ZERO)
            held[ev.order_id] = ZERO
    return held


def orders_as_of(facts: Iterable[OrderFacts], events: Sequence[EventRow],
                 filled: Mapping[uuid.UUID, Decimal], held: Mapping[uuid.UUID, Decimal]
                 ) -> list[OrderAsOf]:
    """Every order that had an event by the instant, as it stood then (oldest first)."""
    state: dict[uuid.UUID, str] = {}
    qty: dict[uuid.UUID, Decimal] = {}
    for ev in sorted(events, key=lambda x: (x.at, x.id)):
        if ev.to_state:
            state[ev.order_id] = ev.to_state
        request = ev.data.get("request") if ev.event == "created" else None
        if isinstance(request, Mapping) and request.get("qty") is not None:
            qty[ev.order_id] = Decimal(str(request["qty"]))
        if ev.event == "new" and ev.data.get("qty") is not None:  # a venue's replace
            qty[ev.order_id] = Decimal(str(ev.data["qty"]))
    out = []
    for f in sorted(facts, key=lambda f: (f.created_at, str(f.id))):
        if f.id not in state:
            continue
        out.append(OrderAsOf(
            str(f.id), f.client_order_id, f.symbol, f.side, f.order_type, f.time_in_force,
            qty.get(f.id, f.qty), f.notional, f.limit_price, state[f.id],
            plain(filled.get(f.id, ZERO)), plain(held.get(f.id, ZERO)),
            "USD" if f.side == "buy" else f.symbol))
    return out


def positions_as_of(balances: Mapping[str, Decimal], fills: Iterable[tuple[datetime, str, Fill]],
                    splits: Iterable[tuple[datetime, str, Split]],
                    renamed: Mapping[str, tuple[str, datetime]]) -> list[PositionAsOf]:
    """Every nonzero share position, with its cost basis (``domain.positions.cost_bases``)."""
    parts: dict[str, dict[str, Decimal]] = {}
    for name, amount in balances.items():
        base, _, sym = name.partition(":")
        if sym and base in ("shares", "shares_held", "shares_unsettled"):
            parts.setdefault(sym, {})[base] = amount
    bases = cost_bases(fills, splits, renamed)
    out = []
    for sym, p in sorted(parts.items()):
        shares, held, unsettled = (p.get(k, ZERO) for k in ("shares", "shares_held", "shares_unsettled"))
        q = shares + held + unsettled
        if q == 0:
            continue
        basis = bases.get(sym) or average_cost([])
        fig = position_figures(q, basis, None)
        out.append(PositionAsOf(sym, plain(q), shares, held, unsettled,
                                plain(fig.cost_basis), plain(fig.avg_entry_price)))
    return out


def reconstruct(account_id: uuid.UUID, as_of: datetime, *, entries: Iterable[tuple[str, Decimal]],
                facts: Iterable[OrderFacts], events: Sequence[EventRow],
                filled: Mapping[uuid.UUID, Decimal], hold_entries: Iterable[HoldEntry],
                fills: Iterable[tuple[datetime, str, Fill]],
                splits: Iterable[tuple[datetime, str, Split]],
                renamed: Mapping[str, tuple[str, datetime]],
                history: list[dict[str, Any]]) -> Reconstruction:
    """The account at ``as_of`` from the facts recorded up to it (see the module docstring)."""
    bal = balances_as_of(entries)
    fig = account_figures(bal)
    orders = orders_as_of(facts, events, filled, holds_by_order(hold_entries, events))
    return Reconstruction(
        str(account_id), as_of, bal,
        {"cash": plain(fig.cash), "cash_available": plain(fig.cash_available),
         "cash_held": plain(fig.cash_held), "cash_unsettled": plain(fig.cash_unsettled)},
        positions_as_of(bal, fills, splits, renamed),
        [o for o in orders if o.open], orders, history)
