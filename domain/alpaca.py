"""Alpaca's shapes of Sherwood's objects: orders, trade updates, the account, positions,
activities and transfers. Pure: built from rows and figures the callers read; numbers as strings,
times as RFC 3339 with ``Z``.

The API answers with these (its response models in ``api/schemas.py`` validate them for the
OpenAPI document), and the order store writes trade updates (outbox rows) with them, so a client
sees the same order object from ``GET /v2/orders/{id}`` and from the stream. Deliberately not
here: reading anything, HTTP status codes and error bodies (``api/``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from domain.account import AccountFigures
from domain.assets import get_asset
from domain.money import money_str, plain
from domain.order_decision import TradeUpdate
from domain.order_row import OrderRow
from domain.orders import OrderRequest, OrderSnapshot, OrderState, alpaca_status
from domain.positions import DayChange, PositionFigures
from domain.risk import AccountState, is_pattern_day_trader

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)


def iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def number(d: Decimal | str | None) -> str | None:
    """A decimal as Alpaca writes it: a plain string, no exponent, no trailing zeros."""
    return None if d is None else format(plain(Decimal(d)), "f")


def order_object(order: OrderRow, legs: list[OrderRow] | None = None) -> dict[str, Any]:
    """The Alpaca v2 order object (with Sherwood's extras: ``state``, ``venue``,
    ``reject_reason``, ``reject_code``). ``legs``: a group parent's legs (nested as order
    objects); None for a simple order, a leg, or a parent listed without them."""
    asset = get_asset(order.symbol)
    return {
        "id": str(order.id), "client_order_id": order.client_order_id,
        "created_at": iso(order.created_at), "updated_at": iso(order.updated_at),
        "submitted_at": iso(order.submitted_at or order.created_at),
        "filled_at": iso(order.filled_at), "expired_at": iso(order.expired_at),
        "canceled_at": iso(order.canceled_at), "failed_at": iso(order.failed_at),
        "replaced_at": iso(order.replaced_at),
        "replaced_by": str(order.replaced_by) if order.replaced_by else None,
        "replaces": str(order.replaces) if order.replaces else None,
        "asset_id": str(asset.id) if asset else None, "symbol": order.symbol,
        "asset_class": "us_equity", "notional": number(order.notional),
        # a notional order's quantity is fixed by its fill: null until then (Alpaca's shape)
        "qty": None if order.notional is not None and not order.qty else number(order.qty),
        "filled_qty": number(order.filled_qty) or "0",
        "filled_avg_price": number(order.filled_avg_price), "order_class": order.order_class,
        "order_type": order.order_type, "type": order.order_type, "side": order.side,
        "time_in_force": order.time_in_force, "limit_price": number(order.limit_price),
        "stop_price": number(order.stop_price), "status": order_status(order),
        "extended_hours": order.extended_hours,
        "legs": None if legs is None else [order_object(leg) for leg in legs],
        "trail_price": number(order.trail_price), "trail_percent": number(order.trail_percent),
        "hwm": number(order.hwm),
        # Sherwood extras
        "state": order.state.value, "venue": order.venue, "reject_reason": order.reject_reason,
        "reject_code": order.reject_code,
        "parent_id": str(order.parent_id) if order.parent_id else None,  # a group's leg
    }


def order_status(order: OrderRow) -> str:
    """Alpaca's status of the order. A trailing stop waiting for its trigger (FUNDS_HELD: held
    here, no venue has it) is ``new``: it is live and working, as Alpaca shows its own held
    trailing stops; any other FUNDS_HELD order is ``accepted`` (not yet working)."""
    if order.order_type == "trailing_stop" and order.state == OrderState.FUNDS_HELD:
        return "new"
    return alpaca_status(order.state)


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
        qty=Decimal(snap.qty), notional=req.notional, limit_price=req.limit_price, stop_price=req.stop_price,
        extended_hours=req.extended_hours, state=OrderState(snap.state), cl_ord_id=snap.order_id,
        trail_price=req.trail_price, trail_percent=req.trail_percent,
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


# --- account, positions, activities, transfers ---------------------------------------------


def account_object(*, account_id: str, account_number: str, created_at: datetime, state: AccountState,
                   figures: AccountFigures, buying_power: Decimal, day_trades: int,
                   shard: int, pending_in: Decimal = ZERO, pending_out: Decimal = ZERO,
                   last_equity: Decimal | None = None) -> dict[str, Any]:
    """Alpaca's account object (cash accounts: every buying power figure is the same), with
    Sherwood's extras (account type, shard, cash held and unsettled). ``pending_in/out``: the
    amounts of the account's deposits / withdrawals not yet complete (or returned, failed).
    ``last_equity``: the previous session's closing equity (the back office's snapshot); without
    one, the current equity."""
    bp = money_str(buying_power)
    return {
        "id": account_id, "account_number": account_number, "status": state.status,
        "cash": money_str(figures.cash), "buying_power": bp, "regt_buying_power": bp,
        "daytrading_buying_power": "0", "non_marginable_buying_power": bp,
        "portfolio_value": money_str(figures.equity), "equity": money_str(figures.equity),
        "last_equity": money_str(figures.equity if last_equity is None else last_equity),
        "long_market_value": money_str(figures.long_market_value),
        "pattern_day_trader": state.pattern_day_trader or is_pattern_day_trader(day_trades),
        "trading_blocked": state.trading_blocked, "daytrade_count": day_trades,
        "created_at": created_at.isoformat(), "account_type": state.account_type, "shard": shard,
        "cash_held": money_str(figures.cash_held), "cash_unsettled": money_str(figures.cash_unsettled),
        "pending_transfer_in": money_str(pending_in), "pending_transfer_out": money_str(pending_out),
    }


def position_object(*, symbol: str, asset_id: str, exchange: str, shares: Decimal, held: Decimal,
                    unsettled: Decimal, figures: PositionFigures, price_source: str,
                    day: DayChange | None = None) -> dict[str, Any]:
    """Alpaca's position object; ``qty_available`` is what may be sold now: the position less the
    shares open sell orders hold (bought-but-unsettled shares count: a sell may hold them), and
    the extras say where the rest is and what ``current_price`` is (bid | last_fill | none)."""
    return {
        "asset_id": asset_id, "symbol": symbol, "exchange": exchange,
        "avg_entry_price": number(figures.avg_entry_price) or "0", "qty": number(figures.qty) or "0",
        "qty_available": number(shares + unsettled) or "0", "cost_basis": number(figures.cost_basis) or "0",
        "market_value": number(figures.market_value), "unrealized_pl": number(figures.unrealized_pl),
        "unrealized_plpc": number(figures.unrealized_plpc),
        "current_price": number(figures.current_price), "qty_held": number(held) or "0",
        "qty_unsettled": number(unsettled) or "0", "price_source": price_source,
        "lastday_price": number(day.lastday_price) if day else None,
        "change_today": number(day.change_today) if day else None,
        "unrealized_intraday_pl": number(day.intraday_pl) if day else None,
        "unrealized_intraday_plpc": number(day.intraday_plpc) if day else None,
    }


def activity_id(t: datetime, aid: uuid.UUID | str) -> str:
    """Alpaca's activity id: ``<UTC time, microseconds>::<uuid>`` (also the paging cursor)."""
    return f"{t.astimezone(UTC):%Y%m%d%H%M%S%f}::{aid}"


def fill_activity(*, at: datetime, aid: uuid.UUID, order_id: str, symbol: str, side: str, qty: Decimal,
                  price: Decimal, order_qty: Decimal | None, cum_qty: Decimal) -> dict[str, Any]:
    """A FILL activity: one execution; ``fill`` when it completed the order."""
    leaves = max(Decimal(0), order_qty - cum_qty) if order_qty is not None else Decimal(0)
    done = leaves == 0
    return {
        "id": activity_id(at, aid), "activity_type": "FILL", "transaction_time": iso(at.astimezone(UTC)),
        "type": "fill" if done else "partial_fill", "price": number(price), "qty": number(qty),
        "side": side, "symbol": symbol, "leaves_qty": number(leaves), "order_id": order_id,
        "cum_qty": number(cum_qty), "order_status": "filled" if done else "partially_filled",
    }


CASH_DESCRIPTIONS = {
    "dividend": "cash dividend",
    "split": "stock split (cash in lieu of fractional shares)",
    "symbol_change": "symbol change",
    "deposit": "ACH deposit",
    "deposit_bounce": "ACH deposit returned",
    "withdrawal": "ACH withdrawal",
    "reversal": "correction",
}


def cash_activity(*, at: datetime, aid: uuid.UUID, activity_type: str, kind: str,
                  net: Decimal, memo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A non-trade activity (CSD, CSW, FEE, JNLC, DIV, SPLIT): one ledger transaction's change
    of the customer's cash, described by its kind; a dividend or split names its symbol and
    quantity (from the transaction's memo)."""
    memo = memo or {}
    out = {
        "id": activity_id(at, aid), "activity_type": activity_type,
        "date": at.astimezone(NY).date().isoformat(), "net_amount": money_str(net),
        "description": CASH_DESCRIPTIONS.get(kind, kind.replace("_", " ")),
        "transaction_time": iso(at.astimezone(UTC)),
    }
    if kind == "dividend":
        out |= {"symbol": memo.get("symbol"), "qty": number(memo.get("qty")),
                "per_share_amount": number(memo.get("rate"))}
    elif kind in ("split", "symbol_change"):
        out |= {"symbol": memo.get("symbol"), "qty": number(memo.get("new_qty"))}
    return out


def transfer_object(row: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Alpaca's transfer object of one ``transfers`` row."""
    settles = row["expected_settle_date"]
    return {
        "id": str(row["id"]), "relationship_id": None, "account_id": str(row["account_id"]),
        "type": row["transfer_type"], "status": row["status"], "reason": row["reason"],
        "amount": number(row["amount"]), "direction": row["direction"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "expires_at": None, "expected_settlement_date": settles.isoformat() if settles else None,
        "settled_at": iso(row["settled_at"]),
    }
