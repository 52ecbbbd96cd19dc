"""Order transitions on the account's shard. Each public function is ONE database transaction
that commits together: the order row, its audit event(s), the ledger transaction of the step and
an outbox row (trade update) -- or nothing.

Every function is idempotent: ledger transaction ids derive from the order id and the step or
ExecID, executions are keyed by (venue, ExecID), and a transition that already happened is a
no-op returning the current snapshot. That is what makes activity retries and worker crashes
safe.
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db import sql
from db.engines import reading, run_in_transaction
from db.errors import IdempotencyConflict
from db.gfv import record_gfv_if_any
from db.ledger import post
from db.risk import AccountRisk, load_account_risk
from db.shard_status import HALT_REASON
from db.sql import Row
from domain import calendar
from domain import ledger as rules
from domain.account import share_positions
from domain.execution import (
    WORKING_VENUE_STATUSES,
    VenueEvent,
    VenueEventKind,
    VenueStatus,
)
from domain.ledger import LedgerTxn
from domain.money import plain
from domain.orders import (
    AT_VENUE,
    TERMINAL,
    AcceptOrderInput,
    FillMath,
    OrderError,
    OrderRequest,
    OrderSnapshot,
    OrderState,
    ResolveInput,
    alpaca_status,
    apply_fill,
    buy_hold,
    can_transition,
    parse_order_request,
)
from domain.risk import (
    PDT_EQUITY,
    RiskLimits,
    RiskRejection,
    SymbolControl,
    buying_power,
    check_market_hours,
    check_order_limits,
    check_pdt,
    check_symbol,
    concentration_warning,
    hold_sources,
)

S = OrderState
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quotes:
    """Advisory prices: the order symbol's quote (market-order holds, price bands) and a price
    per held symbol (equity for the pattern-day-trader rule). None / missing: no quote."""

    ask: Decimal | None = None
    bid: Decimal | None = None
    prices: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class RiskContext:
    limits: RiskLimits = field(default_factory=RiskLimits)
    control: SymbolControl | None = None
    shard_halt: str | None = None  # why this shard takes no new orders, if it does not


def _s(d: Any) -> str | None:
    return None if d is None else format(plain(Decimal(d)), "f")


def snapshot(row: Mapping[Any, Any], *, duplicate: bool = False) -> OrderSnapshot:
    return OrderSnapshot(
        order_id=str(row["id"]), account_id=str(row["account_id"]),
        client_order_id=row["client_order_id"], state=row["state"], symbol=row["symbol"],
        side=row["side"], qty=_s(row["qty"]) or "0", filled_qty=_s(row["filled_qty"]) or "0",
        filled_avg_price=_s(row["filled_avg_price"]), hold_remaining=_s(row["hold_amount"]) or "0",
        venue=row["venue"], reject_code=row["reject_code"], reject_reason=row["reject_reason"],
        expires_at=row["expires_at"].isoformat() if row["expires_at"] else None, duplicate=duplicate,
        created_at=row["created_at"].isoformat(), updated_at=row["updated_at"].isoformat(),
    )


def alpaca_order_at_accept(snap: OrderSnapshot, req: OrderRequest) -> dict[str, Any] | None:
    """The Alpaca order object of an order the accept transaction just wrote, from what it
    returned and the request, equal to :func:`alpaca_order` of that row; None when the snapshot
    cannot say (a duplicate, which may have moved on since, or an older workflow's result)."""
    if snap.duplicate or snap.created_at is None or snap.updated_at is None:
        return None
    created = datetime.fromisoformat(snap.created_at)
    return alpaca_order({
        "id": snap.order_id, "client_order_id": snap.client_order_id, "created_at": created,
        "updated_at": datetime.fromisoformat(snap.updated_at), "submitted_at": created,
        "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
        "symbol": snap.symbol, "qty": snap.qty, "filled_qty": snap.filled_qty,
        "filled_avg_price": snap.filled_avg_price, "order_type": req.type, "side": snap.side,
        "time_in_force": req.time_in_force, "limit_price": req.limit_price,
        "stop_price": req.stop_price, "state": snap.state, "extended_hours": req.extended_hours,
        "venue": snap.venue, "reject_reason": snap.reject_reason, "reject_code": snap.reject_code})


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def alpaca_order(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The Alpaca v2 order object for one order row (numbers as strings)."""
    from domain.assets import get_asset

    asset = get_asset(row["symbol"])
    return {
        "id": str(row["id"]), "client_order_id": row["client_order_id"],
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
        "submitted_at": _iso(row["submitted_at"] or row["created_at"]),
        "filled_at": _iso(row["filled_at"]), "expired_at": _iso(row["expired_at"]),
        "canceled_at": _iso(row["canceled_at"]), "failed_at": _iso(row["failed_at"]),
        "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": str(asset.id) if asset else None, "symbol": row["symbol"],
        "asset_class": "us_equity", "notional": None, "qty": _s(row["qty"]),
        "filled_qty": _s(row["filled_qty"]) or "0",
        "filled_avg_price": _s(row["filled_avg_price"]), "order_class": "simple",
        "order_type": row["order_type"], "type": row["order_type"], "side": row["side"],
        "time_in_force": row["time_in_force"], "limit_price": _s(row["limit_price"]),
        "stop_price": _s(row["stop_price"]), "status": alpaca_status(row["state"]),
        "extended_hours": row["extended_hours"], "legs": None,
        # Sherwood extras
        "state": row["state"], "venue": row["venue"], "reject_reason": row["reject_reason"],
        "reject_code": row["reject_code"],
    }


async def _lock(conn: AsyncConnection, order_id: str) -> Row | None:
    return await sql.first(conn, "SELECT * FROM orders WHERE id = :id FOR UPDATE",
                           {"id": uuid.UUID(order_id)})


def _as(row: Row, **values: Any) -> Row:
    """The row with some columns as they are about to be (not yet written)."""
    return {**row, **values}


class _Trail:
    """The order rows, audit events and trade updates (outbox rows) of one transaction, written
    by ONE statement just before it commits (:meth:`OrderStore._tx`): however many steps an
    order takes in the transaction (a market order's ROUTED, ACKED and FILLED in one), its row
    is inserted or updated once, and events and updates cost no round trip of their own. They
    are still in the same transaction, in the order written. Each event's ``seq`` continues its
    order's sequence. Rolled back with everything else.

    Deliberately, the order row (and an execution's booking: ledger transaction, trade and
    settlement dates) is not in the database until the end of the transaction: the code
    between reads it from the row it holds (nothing in a transaction reads back an order row or
    a booking it wrote), and the values it holds are the ones written (numbers at the column's
    scale, see :func:`_column`)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self._per_order: dict[str, int] = {}
        self._inserts: dict[str, Row] = {}
        self._sets: dict[str, dict[str, Any]] = {}
        self._booked: list[dict[str, str]] = []

    def booked(self, venue: str, exec_id: str, ledger_txn: str, trade: date) -> None:
        """An execution row (inserted earlier in the transaction) gets the ledger transaction
        that booked it and its trade and settlement dates, at the end of the transaction."""
        self._booked.append({"v": venue, "e": exec_id, "l": ledger_txn, "td": trade.isoformat(),
                             "sd": calendar.settle_date(trade).isoformat()})

    def insert(self, row: Row) -> Row:
        """A new order row, written at the end of the transaction."""
        row = {k: _column(v) for k, v in row.items()}
        self._inserts[str(row["id"])] = row
        return row

    def set(self, row: Row, values: dict[str, Any]) -> Row:
        """The order row with ``values`` changed (and ``updated_at``, ``version``), written at
        the end of the transaction."""
        # the row is locked (or new) for the whole transaction: its version in memory is the
        # one to write
        values = {k: _column(v) for k, v in values.items()}
        values.update(updated_at=datetime.now(UTC), version=row["version"] + 1)
        order = str(row["id"])
        pending = self._inserts[order] if order in self._inserts else self._sets.setdefault(order, {})
        pending.update(values)
        return {**row, **values}

    def event(self, row: Row, *, event: str, actor: str, reason: str | None, to_state: str | None,
              ledger_txn: str | None = None, data: dict[str, Any] | None = None,
              from_state: str | None = None) -> None:
        order = str(row["id"])
        self._per_order[order] = n = self._per_order.get(order, 0) + 1
        self.events.append({
            "order_id": order, "account_id": str(row["account_id"]), "n": n, "event": event,
            "actor": actor, "reason": reason,
            "from_state": from_state if from_state is not None else row["state"],
            "to_state": to_state, "ledger_txn_id": ledger_txn, "data": data or {}})

    def update(self, row: Row, event: str, **extra: Any) -> None:
        self.updates.append({
            "n": len(self.updates) + 1, "key": str(row["account_id"]),
            "payload": {"event": event, "account_id": str(row["account_id"]),
                        "order": alpaca_order(row), "timestamp": _iso(datetime.now(UTC)), **extra}})

    async def flush(self, conn: AsyncConnection) -> list[Row]:
        """Write it all; returns the outbox rows written (id, key, payload as stored)."""
        if not (self.events or self.updates or self._inserts or self._sets or self._booked):
            return []
        rows: list[str] = []
        params: dict[str, Any] = {"events": json.dumps(self.events, default=str),
                                  "updates": json.dumps(self.updates, default=str)}
        for i, row in enumerate(self._inserts.values()):
            names, marks = ", ".join(row), ", ".join(f":i{i}_{k}" for k in row)
            rows.append(f"i{i} AS (INSERT INTO orders ({names}) VALUES ({marks}))")
            params.update({f"i{i}_{k}": v for k, v in row.items()})
        for j, (order, changed) in enumerate(self._sets.items()):
            sets = ", ".join(f"{k} = :u{j}_{k}" for k in changed)
            rows.append(f"u{j} AS (UPDATE orders SET {sets} WHERE id = :u{j}__id)")
            params.update({f"u{j}_{k}": v for k, v in changed.items()})
            params[f"u{j}__id"] = uuid.UUID(order)
        if self._booked:
            rows.append("b AS (UPDATE executions x SET ledger_txn_id = b.l, trade_date = b.td, "
                        "settle_date = b.sd FROM jsonb_to_recordset(CAST(:booked AS jsonb)) "
                        "AS b(v text, e text, l text, td date, sd date) "
                        "WHERE x.venue = b.v AND x.exec_id = b.e)")
            params["booked"] = json.dumps(self._booked)
        # the rows first: the events' foreign key is checked at the end of the statement
        return await sql.rows(conn, "WITH " + "".join(f"{r},\n" for r in rows) + _WRITE_TRAIL, params)


def _column(v: Any) -> Any:
    """A value as an order row column holds it: every number there is numeric(38, 10), which
    rounds half away from zero (the row in memory must equal the row written)."""
    if isinstance(v, Decimal):
        return v.quantize(_SCALE, rounding=ROUND_HALF_UP)
    return v


_SCALE = Decimal("1E-10")

_ACCOUNT_CONTEXT = f"""
SELECT ARRAY(SELECT DISTINCT substr(name, strpos(name, ':') + 1) FROM ledger_accounts
              WHERE owner_id = :a AND name LIKE '%:%') AS held,
       ({HALT_REASON}) AS halt
"""

_WRITE_TRAIL = """events AS (
  INSERT INTO order_events (order_id, account_id, seq, event, actor, reason, from_state, to_state,
                            ledger_txn_id, data)
  SELECT e.order_id, e.account_id,
         coalesce((SELECT max(x.seq) FROM order_events x WHERE x.order_id = e.order_id), 0) + e.n,
         e.event, e.actor, e.reason, e.from_state, e.to_state, e.ledger_txn_id, e.data
    FROM jsonb_to_recordset(CAST(:events AS jsonb))
         AS e(order_id uuid, account_id uuid, n int, event text, actor text, reason text,
              from_state text, to_state text, ledger_txn_id text, data jsonb)
   ORDER BY e.order_id, e.n
)
INSERT INTO outbox (topic, key, payload)
SELECT 'trade_updates', u.key, u.payload
  FROM jsonb_to_recordset(CAST(:updates AS jsonb)) AS u(n int, key text, payload jsonb)
 ORDER BY u.n
RETURNING id, key, payload::text AS payload
"""

# The trail of the transaction running in this task (set by OrderStore._tx; there is none
# outside one, and writing an event there fails loudly).
_TRAIL: contextvars.ContextVar[_Trail] = contextvars.ContextVar("order_trail")


def _event(row: Row, *, event: str, actor: str, reason: str | None, to_state: str | None,
           ledger_txn: str | None = None, data: dict[str, Any] | None = None,
           from_state: str | None = None) -> None:
    """An audit event of the running transaction (who, what, why, before -> after)."""
    _TRAIL.get().event(row, event=event, actor=actor, reason=reason, to_state=to_state,
                       ledger_txn=ledger_txn, data=data, from_state=from_state)


def _outbox(row: Row, event: str, **extra: Any) -> None:
    """A trade update (Alpaca trade_updates shape) of the running transaction."""
    _TRAIL.get().update(row, event, **extra)


async def _post(conn: AsyncConnection, txn: LedgerTxn) -> bool:
    result = await post(conn, txn)
    return result.ok


_TIMESTAMP_FOR = {S.FILLED: "filled_at", S.CANCELED: "canceled_at", S.EXPIRED: "expired_at",
                  S.FAILED: "failed_at", S.REJECTED: "failed_at"}


def _set(row: Row, **values: Any) -> Row:
    """The order row with ``values`` changed, as it is written when the transaction commits
    (see :class:`_Trail`)."""
    return _TRAIL.get().set(row, values)


async def _release(conn: AsyncConnection, row: Row, step: str) -> str | None:
    """Post the release of whatever is still held for the order (cash for buys, shares for
    sells); the caller sets ``hold_amount`` to 0 in its own update of the row."""
    remaining = Decimal(row["hold_amount"])
    if remaining <= 0:
        return None
    txn_id = f"order:{row['id']}:release:{step}"
    if row["side"] == "buy":
        txn = rules.release_cash(txn_id, row["account_id"], remaining)
    else:
        txn = rules.release_shares(txn_id, row["account_id"], row["symbol"], remaining)
    await _post(conn, txn)
    return txn_id


async def _finish(
    conn: AsyncConnection, row: Row, to: OrderState, *, actor: str, reason: str | None,
    event: str, code: str | None = None, data: dict[str, Any] | None = None,
) -> Row:
    """Move to a terminal state, releasing any remaining hold, in the caller's transaction."""
    released = await _release(conn, row, to.value.lower())
    values: dict[str, Any] = {"state": to.value, "hold_amount": Decimal(0)}
    if to in _TIMESTAMP_FOR:
        values[_TIMESTAMP_FOR[to]] = datetime.now(UTC)
    if code is not None:
        values["reject_code"] = code
        values["reject_reason"] = reason
    new = _set(row, **values)
    _event(row, event=event, actor=actor, reason=reason, to_state=to.value,
           ledger_txn=released, data=data)
    _outbox(new, event)
    return new


async def _transition(conn: AsyncConnection, row: Row, to: OrderState, *, reason: str,
                      actor: str, venue: str | None = None) -> Row:
    """A non-terminal state change with no money movement, in the caller's transaction; a
    no-op when the order is there already or was overtaken (e.g. by the venue's answer)."""
    current = S(row["state"])
    if current == to or current in TERMINAL or not can_transition(current, to):
        return row
    values: dict[str, Any] = {"state": to.value}
    if venue is not None:
        values["venue"] = venue
    new = _set(row, **values)
    _event(row, event=to.value.lower(), actor=actor, reason=reason,
           to_state=to.value, data={"venue": venue} if venue else None)
    _outbox(new, {"ROUTED": "pending_new", "PENDING_CANCEL": "pending_cancel",
                  "STUCK": "pending_cancel"}.get(to.value, to.value.lower()))
    return new


def _fill_math(row: Row, last_qty: Decimal, last_px: Decimal) -> FillMath:
    """The arithmetic of booking ``last_qty`` @ ``last_px`` against the order as it stands."""
    return apply_fill(row["side"], qty=Decimal(row["qty"]), filled_qty=Decimal(row["filled_qty"]),
                      filled_value=Decimal(row["filled_value"]),
                      hold_remaining=Decimal(row["hold_amount"]), last_qty=last_qty, last_px=last_px)


def _refusal(row: Row, r: VenueEvent) -> OrderError | None:
    """Why a venue fill cannot be booked against the order as it stands (an overfill, no
    quantity or price), or None. Pure: it is decided before anything is written."""
    if r.kind != VenueEventKind.FILL:
        return None
    try:
        _fill_math(row, Decimal(r.last_qty or "0"), Decimal(r.last_px or "0"))
    except OrderError as exc:
        return exc
    except ArithmeticError:  # not a number at all
        return OrderError(f"unreadable fill {r.last_qty!r} @ {r.last_px!r}", code="invalid_fill")
    return None


async def _refuse(conn: AsyncConnection, row: Row, r: VenueEvent,
                  why: OrderError) -> Row:
    """A venue fill the rules refuse: its execution row is kept with quantity 0 (so the ExecID
    stays deduplicated and nothing counts it), the refusal is audited, and a working order goes
    STUCK with its funds still held. What the venue really did is for an operator to establish
    and book (``resolve``); it is never guessed, and the order's other reports still book."""
    log.error("order %s: venue report %s:%s refused: %s", row["id"], r.venue, r.exec_id, why)
    state = S(row["state"])
    _event(row, event="report_refused", actor=f"venue:{r.venue}", reason=str(why),
           to_state=state.value,
           data={"exec_id": r.exec_id, "code": why.code, "last_qty": r.last_qty,
                 "last_px": r.last_px, "cum_qty": r.cum_qty})
    return await _transition(conn, row, S.STUCK, actor="system",
                             reason=f"venue report {r.exec_id} refused ({why.code}): needs an operator")


class OrderStore:
    """The order transitions of one shard (see module docstring)."""

    def __init__(self, engine: AsyncEngine, *, house_stripes: int = 32,
                 on_commit: Callable[[list[Row]], None] | None = None,
                 reads: AsyncEngine | None = None) -> None:
        self.engine = engine
        # single-statement reads outside any transaction: an autocommit engine spares them
        # BEGIN and COMMIT (the order engine itself otherwise)
        self.reads = reads or engine
        self.house_stripes = house_stripes
        # called after each commit with the outbox rows it wrote (e.g. the outbox publisher's
        # ``committed``: trade updates go out at once)
        self.on_commit = on_commit

    async def _tx(self, fn: Any) -> Any:
        written: list[Row] = []

        async def with_trail(conn: AsyncConnection) -> Any:
            trail = _Trail()
            token = _TRAIL.set(trail)
            try:
                result = await fn(conn)
                written[:] = await trail.flush(conn)  # a retried attempt replaces them
                return result
            finally:
                _TRAIL.reset(token)

        result = await run_in_transaction(self.engine, with_trail)
        if self.on_commit is not None:
            self.on_commit(written)
        return result

    async def account_context(self, account_id: str) -> tuple[list[str], str | None]:
        """For the accept path, in one statement: the symbols the account holds or has held
        (their quotes value its equity) and why this shard takes no new orders (a failed
        reconciliation), or None. Read before the accept transaction, so that the quotes are
        read from Redis without the account's lock held."""
        async with reading(self.reads) as conn:
            row = await sql.one(conn, _ACCOUNT_CONTEXT, {"a": uuid.UUID(account_id)})
        return sorted(row["held"]), row["halt"]

    # --- PENDING -> VALIDATED -> FUNDS_HELD (or REJECTED) ------------------------------

    async def accept(self, inp: AcceptOrderInput, quotes: Quotes,
                     ctx: RiskContext | None = None) -> OrderSnapshot:
        """Create the order and hold its funds, or reject it; a replay returns the same order."""
        ctx = ctx or RiskContext()
        req = parse_order_request(inp.request)
        if req.hash() != inp.request_hash:
            raise OrderError("request hash does not match the request", code="hash_mismatch")

        async def _do(conn: AsyncConnection) -> OrderSnapshot:
            oid = uuid.UUID(inp.order_id)
            account = uuid.UUID(inp.account_id)
            now = datetime.now(UTC)
            # Every hold of an account is taken under its row lock, taken first (before the order
            # row's foreign key touches it): no two orders spend the same dollar, whatever the
            # number of API processes and workers.
            risk = await load_account_risk(conn, account, today=calendar.trade_date(now), lock=True)
            existing = await sql.first(
                conn, "SELECT * FROM orders WHERE id = :id OR (account_id = :a AND client_order_id = :c)",
                {"id": oid, "a": account, "c": req.client_order_id or inp.order_id})
            if existing is not None:
                if existing["request_hash"] != inp.request_hash:
                    raise IdempotencyConflict(
                        f"client_order_id {existing['client_order_id']!r} was used for a different order")
                return snapshot(existing, duplicate=str(existing["id"]) != inp.order_id)
            expires = None
            if req.time_in_force == "day":
                expires = (now + timedelta(seconds=inp.day_ttl_s) if inp.day_ttl_s
                           else calendar.day_order_expiry(now))
            # every column of the orders table: the row is written when the transaction commits
            row = _TRAIL.get().insert({
                "id": oid, "account_id": account, "client_order_id": req.client_order_id or inp.order_id,
                "request_hash": inp.request_hash, "symbol": req.symbol, "side": req.side,
                "order_type": req.type, "time_in_force": req.time_in_force, "qty": req.qty,
                "notional": None, "limit_price": req.limit_price, "stop_price": req.stop_price,
                "extended_hours": req.extended_hours, "state": "PENDING", "cl_ord_id": inp.order_id,
                "venue": None, "venue_order_id": None, "filled_qty": Decimal(0),
                "filled_avg_price": None, "filled_value": Decimal(0),
                "hold_currency": "USD" if req.side == "buy" else req.symbol,
                "hold_amount": Decimal(0), "reject_code": None, "reject_reason": None,
                "created_at": now, "updated_at": now, "submitted_at": now, "filled_at": None,
                "canceled_at": None, "expired_at": None, "failed_at": None, "expires_at": expires,
                "actor": inp.actor, "version": 0})
            _event(row, event="created", actor=inp.actor, reason="order received",
                   to_state="PENDING", from_state="", data={"request": req.to_wire()})
            warnings: list[str] = []
            try:
                amount = await self._pre_trade(conn, req, risk, quotes, ctx, inp, now, warnings)
            except (RiskRejection, OrderError) as exc:
                return snapshot(await _finish(conn, row, S.REJECTED, actor="risk", reason=exc.message,
                                              event="rejected", code=exc.code))
            # VALIDATED lasts only inside this transaction: it is an audit event, and the row is
            # written once, when the hold is taken or refused.
            _event(row, event="validated", actor="risk", reason="pre-trade checks passed",
                   to_state="VALIDATED", data={"warnings": warnings} if warnings else None)
            row = _as(row, state="VALIDATED")
            assert risk is not None
            txn_id = f"order:{inp.order_id}:hold"
            if req.side == "buy":
                bp = buying_power(risk.account_type, risk.balances, risk.provisional, ctx.limits,
                                  settled_only=risk.settled_cash_only)
                if amount > bp.total:
                    return snapshot(await _finish(
                        conn, row, S.REJECTED, actor="risk", event="rejected",
                        code="insufficient_buying_power",
                        reason=f"insufficient buying power: need {amount}, have {bp.total}"))
                from_unsettled = hold_sources(amount, bp)[1]
                txn = rules.hold_cash(txn_id, account, amount, from_unsettled=from_unsettled)
            else:
                settled = max(Decimal(0), risk.balances.get(f"shares:{req.symbol}", Decimal(0)))
                from_unsettled = min(max(Decimal(0), amount - settled),
                                     risk.balances.get(f"shares_unsettled:{req.symbol}", Decimal(0)))
                txn = rules.hold_shares(txn_id, account, req.symbol, amount, from_unsettled=from_unsettled)
            result = await post(conn, txn, house_stripes=self.house_stripes)
            if not result.ok:
                what = "buying power" if req.side == "buy" else f"{req.symbol} shares available"
                code = "insufficient_buying_power" if req.side == "buy" else "insufficient_qty"
                return snapshot(await _finish(
                    conn, row, S.REJECTED, actor="risk", event="rejected", code=code,
                    reason=f"insufficient {what}: need {amount}", data={"detail": result.error_detail}))
            row = _set(row, state="FUNDS_HELD", hold_amount=amount)
            _event(row, event="funds_held", actor="ledger", to_state="FUNDS_HELD",
                   reason=f"held {amount} {'USD' if req.side == 'buy' else req.symbol}",
                   ledger_txn=txn_id, from_state="VALIDATED")
            _outbox(row, "accepted")
            snap = snapshot(row)
            snap.warnings = warnings
            return snap

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def _pre_trade(
        self, conn: AsyncConnection, req: OrderRequest, risk: AccountRisk | None, quotes: Quotes,
        ctx: RiskContext, inp: AcceptOrderInput, now: datetime, warnings: list[str],
    ) -> Decimal:
        """Every pre-trade rule, in the accept transaction; returns what to hold (cash for a buy,
        shares for a sell) or raises a RiskRejection/OrderError with a stable code."""
        if risk is None:
            raise RiskRejection("unknown account", code="unknown_account")
        if ctx.shard_halt:
            raise RiskRejection(f"trading is suspended on this account's shard: {ctx.shard_halt}",
                                code="shard_halted")
        if risk.status != "ACTIVE" or risk.trading_blocked:
            raise RiskRejection(f"trading is blocked on this account: {risk.blocked_reason or ''}",
                                code="trading_blocked")
        asset = await sql.first(conn, "SELECT tradable, status FROM assets WHERE symbol = :s",
                                {"s": req.symbol})
        if asset is None:
            raise RiskRejection(f"unknown symbol {req.symbol}", code="unknown_symbol")
        if not asset["tradable"] or asset["status"] != "active":
            raise RiskRejection(f"{req.symbol} is not tradable", code="not_tradable")
        check_symbol(req, ctx.control)
        if ctx.limits.enforce_market_hours:
            check_market_hours(req, now)
        amount = buy_hold(req, quotes.ask, Decimal(inp.collar)) if req.side == "buy" else req.qty
        ref = req.limit_price or quotes.ask or quotes.bid or Decimal(0)
        check_order_limits(req, amount if req.side == "buy" else req.qty * ref, quotes.bid, quotes.ask,
                           ctx.limits)
        prices = {**quotes.prices}
        if quotes.bid:
            prices.setdefault(req.symbol, quotes.bid)
        equity = risk.equity(prices)
        count = risk.day_trade_count
        if risk.pattern_day_trader and equity < PDT_EQUITY and req.side == "buy":
            raise RiskRejection("flagged pattern day trader with equity below $25,000: "
                                "only closing orders are accepted", code="pattern_day_trader")
        check_pdt(req, equity=equity, day_trade_count=count, bought_today=risk.bought_today(req.symbol))
        if req.side == "buy":
            position = share_positions(risk.balances).get(req.symbol, Decimal(0)) + req.qty
            warn = concentration_warning(req.symbol, position * (prices.get(req.symbol) or ref),
                                         equity, ctx.limits)
            if warn:
                warnings.append(warn)
        return amount

    # --- routing and the venue's answers ------------------------------------------------

    async def transition(self, order_id: str, to: OrderState, *, reason: str, actor: str = "system",
                         venue: str | None = None) -> OrderSnapshot:
        """A non-terminal state change with no money movement (ROUTED, PENDING_CANCEL, STUCK)."""

        async def _do(conn: AsyncConnection) -> OrderSnapshot:
            row = await _lock(conn, order_id)
            assert row is not None, order_id
            return snapshot(await _transition(conn, row, to, reason=reason, actor=actor, venue=venue))

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def finish(self, order_id: str, to: OrderState, *, reason: str, actor: str = "system",
                     code: str | None = None) -> OrderSnapshot:
        """Terminal state decided by us (canceled before routing, failed, ...): release holds."""

        async def _do(conn: AsyncConnection) -> OrderSnapshot:
            row = await _lock(conn, order_id)
            assert row is not None, order_id
            if S(row["state"]) in TERMINAL:
                return snapshot(row)
            return snapshot(await _finish(conn, row, to, actor=actor, reason=reason,
                                          event=to.value.lower(), code=code))

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def apply_report(self, r: VenueEvent) -> OrderSnapshot:
        """Book one venue event exactly once (keyed by venue + ExecID)."""
        return await self.apply_reports(r.order_id, [r])

    async def apply_reports(self, order_id: str, reports: list[VenueEvent], *,
                            routed_venue: str | None = None) -> OrderSnapshot:
        """In one transaction: the move to ROUTED (``routed_venue``: the gateway handed the
        order to that venue) when it has not happened yet, then each venue event in order,
        each booked exactly once (keyed by venue + ExecID)."""

        async def _do(conn: AsyncConnection) -> OrderSnapshot:
            row = await _lock(conn, order_id)
            assert row is not None, order_id
            if routed_venue is not None:
                row = await _transition(conn, row, S.ROUTED, reason=f"sent to {routed_venue}",
                                        actor="gateway", venue=routed_venue)
            for r in reports:
                row = await self._book(conn, row, r)
            return snapshot(row)

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def _book(self, conn: AsyncConnection, row: Row, r: VenueEvent) -> Row:
        refused = _refusal(row, r)
        fill = r.kind == VenueEventKind.FILL
        fresh = await sql.first(
            conn, """
            INSERT INTO executions (venue, exec_id, order_id, account_id, symbol, side, exec_type,
                qty, price, cum_qty, leaves_qty, avg_px, transact_time, raw)
            VALUES (:v, :e, :o, :a, :sym, :side, :et, :q, :p, :cq, :lq, :ap, :tt, CAST(:raw AS jsonb))
            ON CONFLICT (venue, exec_id) DO NOTHING RETURNING exec_id
            """,
            {"v": r.venue, "e": r.exec_id, "o": row["id"], "a": row["account_id"],
             "sym": row["symbol"], "side": row["side"],
             "et": "refused" if refused else r.kind.value,
             "q": Decimal(r.last_qty or "0") if fill and not refused else Decimal(0),
             "p": Decimal(r.last_px) if r.last_px and fill and not refused else None,
             "cq": Decimal(r.cum_qty or "0"), "lq": Decimal(r.leaves_qty or "0"),
             "ap": Decimal(r.avg_px or "0"),
             "tt": datetime.fromisoformat(r.transact_time) if r.transact_time else None,
             "raw": json.dumps(r.__dict__)})
        if fresh is None:
            return row  # this ExecID was booked before: a duplicate or a replay
        if refused is not None:
            return await _refuse(conn, row, r, refused)
        return await self._apply(conn, row, r)

    async def _apply(self, conn: AsyncConnection, row: Row, r: VenueEvent) -> Row:
        state = S(row["state"])
        actor = f"venue:{r.venue}"
        info = {"exec_id": r.exec_id, "kind": r.kind.value, "status": r.status.value,
                "text": r.text, "cum_qty": r.cum_qty, "leaves_qty": r.leaves_qty}
        if r.kind == VenueEventKind.CANCEL_REJECTED:  # the order lives on at the venue
            back = S.PARTIALLY_FILLED if Decimal(row["filled_qty"]) > 0 else S.ACKED
            if state in (S.PENDING_CANCEL, S.STUCK) and can_transition(state, back):
                new = _set(row, state=back.value)
                _event(row, event="cancel_rejected", actor=actor, reason=r.text,
                       to_state=back.value, data=info)
                _outbox(new, "order_cancel_rejected")
                return new
            _event(row, event="cancel_rejected", actor=actor, reason=r.text,
                   to_state=state.value, data=info)
            return row
        if state in TERMINAL and r.kind != VenueEventKind.FILL:
            _event(row, event="late_report", actor=actor, reason=r.text,
                   to_state=state.value, data=info)
            return row
        match r.kind:
            case VenueEventKind.ACK:
                if state == S.ROUTED:
                    new = _set(row, state="ACKED", venue_order_id=r.venue_order_id)
                    _event(row, event="new", actor=actor, reason="venue accepted",
                           to_state="ACKED", data=info)
                    _outbox(new, "new")
                    return new
                return _set(row, venue_order_id=r.venue_order_id)
            case VenueEventKind.FILL:
                return await self._fill(conn, row, r, actor, info)
            case VenueEventKind.CANCELED:
                if r.at_close:  # our own cancel at the DAY close
                    return await _finish(conn, row, S.EXPIRED, actor=actor, event="expired",
                                         reason="DAY order expired at the close", data=info)
                return await _finish(conn, row, S.CANCELED, actor=actor, event="canceled",
                                     reason=r.text or "canceled at the venue", data=info)
            case VenueEventKind.EXPIRED:
                return await _finish(conn, row, S.EXPIRED, actor=actor, event="expired",
                                     reason=r.text or "expired at the venue", data=info)
            case VenueEventKind.REJECTED:
                return await _finish(conn, row, S.REJECTED, actor=actor, event="rejected",
                                     code="venue_rejected",
                                     reason=f"rejected by {r.venue}: {r.text or r.reject_reason}",
                                     data=info)
            case VenueEventKind.STATUS:  # terminal answers with nothing unbooked end the order
                done = {VenueStatus.CANCELED: S.CANCELED, VenueStatus.EXPIRED: S.EXPIRED,
                        VenueStatus.REJECTED: S.REJECTED}.get(r.status)
                if done is not None and Decimal(r.cum_qty or 0) == Decimal(row["filled_qty"]):
                    return await _finish(conn, row, done, actor=actor, event=done.value.lower(),
                                         reason=f"venue status: {r.text or done.value.lower()}",
                                         data=info,
                                         code="venue_rejected" if done == S.REJECTED else None)
                if state == S.ROUTED and r.status in WORKING_VENUE_STATUSES:
                    new = _set(row, state="ACKED")
                    _event(row, event="new", actor=actor, reason="venue status: working",
                           to_state="ACKED", data=info)
                    return new
        _event(row, event=f"report_{r.kind.value}", actor=actor, reason=r.text,
               to_state=state.value, data=info)
        return row

    async def _fill(self, conn: AsyncConnection, row: Row, r: VenueEvent,
                    actor: str, info: dict[str, Any]) -> Row:
        last_qty, last_px = Decimal(r.last_qty), Decimal(r.last_px or "0")
        math = _fill_math(row, last_qty, last_px)
        txn_id = f"order:{row['id']}:fill:{r.venue}:{r.exec_id}"
        if row["side"] == "buy":
            txn = rules.buy_fill(txn_id, row["account_id"], row["symbol"], last_qty, last_px,
                                 topup=math.topup)
        else:
            txn = rules.sell_fill(txn_id, row["account_id"], row["symbol"], last_qty, last_px)
        await _post(conn, txn)
        now = datetime.now(UTC)
        trade = calendar.trade_date(now)
        _TRAIL.get().booked(r.venue, r.exec_id, txn_id, trade)
        if row["side"] == "sell":  # a good-faith violation is decided by the sell's booking
            await record_gfv_if_any(conn, row["account_id"], row["symbol"], last_qty, trade)
        full = math.filled_qty == Decimal(row["qty"])
        state = S(row["state"])
        if state in TERMINAL:  # a late fill after we ended the order: the money still moves
            to = state
        elif full:
            to = S.FILLED
        else:
            to = state if state in (S.PENDING_CANCEL, S.STUCK) else S.PARTIALLY_FILLED
        values: dict[str, Any] = {"filled_qty": math.filled_qty, "filled_avg_price": math.avg_price,
                                  "filled_value": math.filled_value, "hold_amount": math.hold_remaining,
                                  "state": to.value}
        released = None
        if full:
            values["filled_at"] = now
            released = await _release(conn, _as(row, hold_amount=math.hold_remaining), "filled")
            values["hold_amount"] = Decimal(0)
        new = _set(row, **values)
        _event(row, event="fill" if full else "partial_fill", actor=actor,
               reason=f"{last_qty} @ {last_px}", to_state=to.value, ledger_txn=txn_id,
               data={**info, "qty": str(last_qty), "price": str(last_px)})
        position = await self._position_qty(conn, row["account_id"], row["symbol"])
        _outbox(new, "fill" if full else "partial_fill", price=str(last_px),
                qty=str(last_qty), position_qty=str(position), execution_id=r.exec_id)
        if released:
            _event(new, event="released", actor="ledger",
                   reason="unused hold released", to_state=to.value, ledger_txn=released)
        return new

    async def _position_qty(self, conn: AsyncConnection, account: uuid.UUID, symbol: str) -> Decimal:
        q = await sql.scalar(
            conn, "SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la "
            "JOIN balances b ON b.ledger_account_id = la.id WHERE la.owner_id = :a "
            "AND la.name IN (:s1, :s2, :s3)",
            {"a": account, "s1": f"shares:{symbol}", "s2": f"shares_held:{symbol}",
             "s3": f"shares_unsettled:{symbol}"})
        return plain(Decimal(q))

    # --- operations ---------------------------------------------------------------------

    async def resolve(self, inp: ResolveInput) -> OrderSnapshot:
        """Book what an operator says the venue did for a STUCK order, then end it."""

        async def _do(conn: AsyncConnection) -> OrderSnapshot:
            row = await _lock(conn, inp.order_id)
            assert row is not None
            if S(row["state"]) in TERMINAL:
                return snapshot(row)
            if S(row["state"]) not in AT_VENUE:
                raise OrderError(f"order is {row['state']}, not at a venue", code="not_resolvable")
            total = Decimal(inp.filled_qty)
            missing = total - Decimal(row["filled_qty"])
            if missing < 0 or total > Decimal(row["qty"]):
                raise OrderError(f"filled_qty {total} is below what is booked or above the order qty",
                                 code="invalid_resolution")
            if missing > 0:
                if not inp.avg_price:
                    raise OrderError("avg_price is required when booking fills", code="invalid_resolution")
                exec_id = f"manual-{inp.order_id}-{total}"
                await sql.execute(
                    conn, "INSERT INTO executions (venue, exec_id, order_id, account_id, symbol, side, "
                    "exec_type, qty, price) VALUES ('operator', :e, :o, :a, :s, :side, 'fill', :q, :p) "
                    "ON CONFLICT DO NOTHING",
                    {"e": exec_id, "o": row["id"], "a": row["account_id"], "s": row["symbol"],
                     "side": row["side"], "q": missing, "p": Decimal(inp.avg_price)})
                r = VenueEvent(
                    venue="operator", exec_id=exec_id, order_id=inp.order_id, kind=VenueEventKind.FILL,
                    status=VenueStatus.FILLED if total == Decimal(row["qty"])
                    else VenueStatus.PARTIALLY_FILLED, cl_ord_id=inp.order_id,
                    last_qty=str(missing), last_px=inp.avg_price, text=inp.note)
                row = await self._fill(conn, row, r, f"operator:{inp.operator}",
                                       {"resolution": inp.outcome, "note": inp.note})
            if S(row["state"]) not in TERMINAL:
                to = S.CANCELED if inp.outcome == "canceled" or Decimal(row["filled_qty"]) < Decimal(
                    row["qty"]) else S.FILLED
                row = await _finish(conn, row, to, actor=f"operator:{inp.operator}",
                                    event=to.value.lower(), reason=f"resolved by operator: {inp.note}")
            return snapshot(row)

        return await self._tx(_do)  # type: ignore[no-any-return]
