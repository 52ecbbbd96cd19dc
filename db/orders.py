"""Order transitions on the account's shard. Each public method is ONE database transaction: it
locks the order row, asks :func:`domain.order_machine.decide` what the event does, and writes
that decision (order row, audit events, ledger transactions, the execution's booking, outbox
rows) together -- or nothing. No business rule lives here: the store loads, calls the pure
function, and writes what it returned.

Every method is idempotent: ledger transaction ids derive from the order id and the step or
ExecID, executions are keyed by (venue, ExecID), and an event already applied (or overtaken)
decides nothing. That is what makes activity retries and worker crashes safe. A transition the
state machine refuses raises (``domain.orders.InvalidTransition``), never silently skipped.

The writer that carries a transaction's decisions out is ``db.order_writer``; the cancel/replace
and order-group steps are ``db.order_replace`` and ``db.order_groups`` (called from here).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from db import order_groups as grouping
from db import order_replace as replacing
from db import sql
from db.errors import IdempotencyConflict, LedgerRejected
from db.order_writer import _HOUSE_BALANCE, _lock, _Writer
from db.risk import load_accept_context
from db.shard_status import HALT_REASON
from db.sql import Row
from domain import calendar
from domain import order_groups as groups
from domain.errors import DomainError
from domain.execution import VenueEvent
from domain.order_decision import Decision
from domain.order_machine import (
    Command,
    Finish,
    HouseFill,
    MarkStuck,
    RequestCancel,
    Route,
    accept,
    accept_failed,
    decide,
    execution,
    refuse,
)
from domain.order_replace import ReplaceRecorded, parse_replace, venue_replace
from domain.order_row import OrderRow, new_order
from domain.orders import (
    AcceptOrderInput,
    OrderError,
    OrderSnapshot,
    OrderState,
    ResolveInput,
    parse_order_request,
)
from domain.risk import PreTradeContext, Quotes, Rejection, RiskLimits, SymbolControl, pre_trade
from domain.trailing import request_wire
from sherwood import metrics

S = OrderState
log = logging.getLogger(__name__)

__all__ = ["OrderStore", "Quotes", "RiskContext", "command_for"]


@dataclass(frozen=True)
class RiskContext:
    limits: RiskLimits = field(default_factory=RiskLimits)
    control: SymbolControl | None = None
    shard_halt: str | None = None  # why this shard takes no new orders, if it does not


class _BookingRefused(Exception):
    """A venue report whose booking failed deterministically (see ``apply_reports``)."""

    def __init__(self, key: tuple[str, str], why: OrderError) -> None:
        super().__init__(str(why))
        self.key, self.why = key, why


def command_for(to: OrderState, *, reason: str, actor: str, venue: str | None = None) -> Command:
    """The workflow's request to move an order to a non-terminal state, as a command."""
    if to == S.ROUTED:
        assert venue is not None, "ROUTED needs the venue"
        return Route(venue, actor=actor, reason=reason)
    if to == S.PENDING_CANCEL:
        return RequestCancel(reason, actor=actor)
    if to == S.STUCK:
        return MarkStuck(reason, actor=actor, venue=venue)
    raise OrderError(f"{to} is not entered by a transition", code="invalid_transition")


_ACCOUNT_CONTEXT = f"""
SELECT ARRAY(SELECT DISTINCT substr(name, strpos(name, ':') + 1) FROM ledger_accounts
              WHERE owner_id = :a AND name LIKE '%:%') AS held,
       ({HALT_REASON}) AS halt
"""


# ============================================================================ the store


class OrderStore:
    """The order transitions of one shard (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, *, house_stripes: int = 32,
                 on_commit: Callable[[list[Row]], None] | None = None,
                 on_release: Callable[[list[str]], None] | None = None,
                 reads: AsyncEngine | None = None,
                 clock: Callable[[], datetime] | None = None,
                 instant_allowance: Decimal = RiskLimits().instant_allowance) -> None:
        self.engine = engine
        # what an instant account may spend of its provisional credit (the risk limits'): a
        # fill no hold covered beyond it is a shortfall (db.shortfalls)
        self.instant_allowance = instant_allowance
        # what "now" is for the decisions (tests book orders on past days with their own clock)
        self.clock = clock or (lambda: datetime.now(UTC))
        # single-statement reads outside any transaction: an autocommit engine spares them
        # BEGIN and COMMIT (the order engine itself otherwise)
        self.reads = reads or engine
        self.house_stripes = house_stripes
        # called after each commit with the outbox rows it wrote (e.g. the outbox publisher's
        # ``committed``: trade updates go out at once)
        self.on_commit = on_commit
        # called after each commit with the orders it took out of transit (their admission
        # slots go back: the outbox publisher's ``release``, api/admission.py)
        self.on_release = on_release

    async def _tx(self, fn: Callable[[_Writer], Any]) -> Any:
        written: list[Row] = []
        last: list[_Writer] = []

        async def attempt(conn: sql.Conn) -> Any:
            writer = _Writer(conn, self.house_stripes, self.instant_allowance)
            result = await fn(writer)
            written[:] = await writer.flush()  # a retried attempt replaces them
            last[:] = [writer]
            return result

        # on the psycopg connection itself: the order path's transactions skip SQLAlchemy's
        # Connection and Transaction objects (db.sql.transaction)
        result = await sql.transaction(self.engine, attempt)
        if last:  # the committed attempt's state changes
            metrics.order_transitions(last[0].transitions, datetime.now(UTC))
            if last[0].released and self.on_release is not None:
                self.on_release(last[0].released)
        if self.on_commit is not None:
            self.on_commit(written)
        return result

    async def snapshot(self, order_id: str) -> OrderSnapshot:
        """The order as it stands (raises ``unknown_order`` when this shard has none)."""
        return (await self.row(order_id)).snapshot()

    async def account_context(self, account_id: str) -> tuple[list[str], str | None]:
        """For the accept path, in one statement: the symbols the account holds or has held
        (their quotes value its equity) and why this shard takes no new orders (a failed
        reconciliation), or None. Read before the accept transaction, so that the quotes are
        read from Redis without the account's lock held."""
        row = await sql.read(self.reads, lambda conn: sql.one(
            conn, _ACCOUNT_CONTEXT, {"a": uuid.UUID(account_id)}))
        return sorted(row["held"]), row["halt"]

    # --- PENDING -> VALIDATED -> FUNDS_HELD (or REJECTED) ------------------------------

    async def accept(self, inp: AcceptOrderInput, quotes: Quotes,
                     ctx: RiskContext | None = None) -> OrderSnapshot:
        """Create the order and hold its funds, or reject it; a replay returns the same order."""
        ctx = ctx or RiskContext()
        # a group (bracket, oco, oto): its parent is accepted as any order, its legs are written
        # HELD in the same transaction (domain.order_groups)
        group = groups.parse_group_request(inp.group) if inp.group is not None else None
        req = group.parent if group is not None else parse_order_request(inp.request)
        if (group or req).hash() != inp.request_hash:
            raise OrderError("request hash does not match the request", code="hash_mismatch")

        async def _do(w: _Writer) -> OrderSnapshot:
            oid = uuid.UUID(inp.order_id)
            account = uuid.UUID(inp.account_id)
            now = self.clock()
            # Every hold of an account is taken under its row lock, taken first (before the order
            # row's foreign key touches it): no two orders spend the same dollar, whatever the
            # number of API processes and workers.
            coid = req.client_order_id or inp.order_id
            state, asset, known = await load_accept_context(
                w.conn, account, today=calendar.trade_date(now), symbol=req.symbol, lock=True,
                order_id=oid, client_order_id=coid)
            existing = await sql.first(  # a replay (rare): the order as it stands
                w.conn, "SELECT * FROM orders WHERE id = :id OR (account_id = :a AND client_order_id = :c)",
                {"id": oid, "a": account, "c": coid}) if known else None
            if existing is not None:
                if existing["request_hash"] != inp.request_hash:
                    raise IdempotencyConflict(
                        f"client_order_id {existing['client_order_id']!r} was used for a different order")
                return OrderRow.from_mapping(existing).snapshot(
                    duplicate=str(existing["id"]) != inp.order_id)
            order = new_order(order_id=inp.order_id, account_id=inp.account_id, req=req,
                              request_hash=inp.request_hash, actor=inp.actor, now=now,
                              day_ttl_s=inp.day_ttl_s)
            if group is not None:
                order = groups.grouped(order, group)
            checked = pre_trade(PreTradeContext(
                account=state, asset=asset, quotes=quotes, now=now, collar=Decimal(inp.collar),
                limits=ctx.limits, control=ctx.control, shard_halt=ctx.shard_halt), req)
            decision = accept(order, req, checked)
            for txn in decision.postings:  # the hold: the one posting the ledger may refuse
                result = await w.post(txn)
                if not result.ok:
                    decision = accept(order, req, checked, hold_refused_detail=result.error_detail)
                    break
            parent = await w.write(decision, posted=True)
            if group is not None and parent.state == S.FUNDS_HELD:
                for leg in groups.held_legs(parent, group, request_hash=inp.request_hash, now=now,
                                            day_ttl_s=inp.day_ttl_s):
                    await w.write(leg)
            snap = parent.snapshot()
            snap.warnings = list(checked.warnings)
            if checked.route_at is not None and snap.state == OrderState.FUNDS_HELD:
                snap.queued_until = checked.route_at.isoformat()  # the workflow waits for it
            return snap

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def reject_unaccepted(self, inp: AcceptOrderInput, why: Rejection) -> OrderSnapshot:
        """The end of an order whose accept failed for good (see ``domain.order_machine.
        accept_failed``): written REJECTED with nothing held -- unless the accept did commit
        (its answer was lost), in which case the order is returned as it stands."""
        req = parse_order_request(inp.request)

        async def _do(w: _Writer) -> OrderSnapshot:
            existing = await sql.first(w.conn, "SELECT * FROM orders WHERE id = :id",
                                       {"id": uuid.UUID(inp.order_id)})
            if existing is not None:
                return OrderRow.from_mapping(existing).snapshot()
            order = new_order(order_id=inp.order_id, account_id=inp.account_id, req=req,
                              request_hash=inp.request_hash, actor=inp.actor, now=self.clock(),
                              day_ttl_s=inp.day_ttl_s)
            if inp.group is not None:  # a group's parent (its legs are never written)
                order = groups.grouped(order, groups.parse_group_request(inp.group))
            return (await w.write(accept_failed(order, req, why), posted=True)).snapshot()

        return await self._tx(_do)  # type: ignore[no-any-return]

    # --- routing, the venue's answers, our own decisions --------------------------------

    async def transition(self, order_id: str, to: OrderState, *, reason: str, actor: str = "system",
                         venue: str | None = None) -> OrderSnapshot:
        """A non-terminal state change with no money movement (ROUTED, PENDING_CANCEL, STUCK)."""
        return await self.command(order_id, command_for(to, reason=reason, actor=actor, venue=venue))

    async def finish(self, order_id: str, to: OrderState, *, reason: str, actor: str = "system",
                     code: str | None = None) -> OrderSnapshot:
        """Terminal state decided by us (canceled before routing, failed, ...): release holds."""
        return await self.command(order_id, Finish(to, reason, actor=actor, code=code))

    async def resolve(self, inp: ResolveInput) -> OrderSnapshot:
        """Book what an operator says the venue did for a STUCK order, then end it. The venue's
        executions the operator names that are booked already (their report arrived) are not
        booked again. A replacement of it still pending (the venue's answer never came, or did
        not match our books) ends REJECTED with its extra hold released: the operator's
        resolution of the original is the whole venue order's."""

        async def _do(w: _Writer) -> OrderSnapshot:
            order = await _lock(w.conn, inp.order_id)
            res = inp
            if inp.fills:
                known = {r["exec_id"] for r in await sql.rows(
                    w.conn, "SELECT exec_id FROM executions WHERE venue = :v AND exec_id = ANY(:e)",
                    {"v": order.venue or "operator", "e": [f.exec_id for f in inp.fills]})}
                res = dataclasses.replace(inp, fills=[f for f in inp.fills if f.exec_id not in known])
            now = self.clock()
            order = await w.write(decide(order, res, now))
            # a replace still pending ends with it (REJECTED, its extra hold released)
            await replacing.end_replacement(w, order, now)
            await grouping.after_booking(w, order, now)  # a take-profit's end
            return order.snapshot()

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def command(self, order_id: str, cmd: Command) -> OrderSnapshot:
        """Decide ``cmd`` against the order and write it, in one transaction."""

        async def _do(w: _Writer) -> OrderSnapshot:
            order = await w.write(decide(await _lock(w.conn, order_id), cmd, self.clock()))
            await grouping.after_booking(w, order, self.clock())  # a take-profit's end
            return order.snapshot()

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def decide_with(self, order_id: str,
                          fn: Callable[[OrderRow, frozenset[str], datetime], Decision]) -> OrderRow:
        """Lock the order, call the pure ``fn(row, audit event names so far, now)`` and write its
        decision, in one transaction (e.g. ``domain.trailing.follow`` / ``fired``); the row after."""

        async def _do(w: _Writer) -> OrderRow:
            order = await _lock(w.conn, order_id)
            names = await sql.rows(w.conn, "SELECT DISTINCT event FROM order_events WHERE order_id = :id",
                                   {"id": order.id})
            return await w.write(fn(order, frozenset(r["event"] for r in names), self.clock()))

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def row(self, order_id: str) -> OrderRow:
        """The order's row as it stands (raises ``unknown_order``)."""
        row = await sql.read(self.reads, lambda conn: sql.first(
            conn, "SELECT * FROM orders WHERE id = :id", {"id": uuid.UUID(order_id)}))
        if row is None:
            raise OrderError(f"no order {order_id} on this shard", code="unknown_order")
        return OrderRow.from_mapping(row)

    async def house_fill(self, order_id: str, *, bid: Decimal | None, ask: Decimal | None,
                         max_inventory: Decimal) -> OrderSnapshot:
        """The firm fills an order with no whole share at the quote (``domain.fractional``), or
        rejects it, in one transaction. House fills of one symbol are serialized (a transaction
        lock on the symbol), so that the firm's inventory bound holds when they race."""

        async def _do(w: _Writer) -> OrderSnapshot:
            order = await _lock(w.conn, order_id)
            account = f"inventory:{order.symbol}"
            await sql.execute(w.conn, "SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))",
                              {"k": account})
            inventory = Decimal(await sql.scalar(w.conn, _HOUSE_BALANCE, {"n": account}))
            cmd = HouseFill(bid=bid, ask=ask, inventory=inventory, max_inventory=max_inventory)
            return await w.flag_rebalance((await w.write(decide(order, cmd, self.clock()))).snapshot())

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def request_replace(self, order_id: str, change: Mapping[str, Any], *, new_id: str,
                              actor: str = "customer", day_ttl_s: float | None = None,
                              shard: int = 0, quotes: Quotes | None = None,
                              ctx: RiskContext | None = None,
                              collar: Decimal = Decimal("0.05")) -> ReplaceRecorded:
        """Record a cancel/replace of the order (see :func:`db.order_replace.request`): both
        orders as written and the OrderCancelReplaceRequest to send (none for a trailing stop
        replaced at the broker: its replacement's request instead, for its own workflow).
        ``quotes``, ``ctx`` and ``collar`` are what a new order's accept checks against."""
        parsed = parse_replace(change)

        async def _do(w: _Writer) -> ReplaceRecorded:
            old, new = await replacing.request(w, order_id, parsed, new_id=new_id, actor=actor,
                                               now=self.clock(), day_ttl_s=day_ttl_s,
                                               quotes=quotes or Quotes(), ctx=ctx or RiskContext(),
                                               collar=collar)
            send = venue_replace(old, new, shard)
            return ReplaceRecorded(old.snapshot(), new.snapshot(), send,
                                   None if send is not None else request_wire(new))

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def give_up_replace(self, order_id: str, reason: str) -> OrderSnapshot:
        """The replace was never answered (see :func:`db.order_replace.give_up`)."""

        async def _do(w: _Writer) -> OrderSnapshot:
            return (await replacing.give_up(w, order_id, self.clock(), reason=reason)).snapshot()

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def activate_exits(self, parent_id: str, filled_qty: Decimal) -> list[OrderSnapshot]:
        """A group's entry ended with ``filled_qty`` filled: its exits go live for it (see
        :func:`db.order_groups.activate_exits`), in one transaction."""
        async def _do(w: _Writer) -> list[OrderSnapshot]:
            return await grouping.activate_exits(w, parent_id, filled_qty, self.clock())

        return await self._tx(_do)  # type: ignore[no-any-return]

    async def apply_report(self, r: VenueEvent) -> OrderSnapshot:
        """Book one venue event exactly once (keyed by venue + ExecID)."""
        return await self.apply_reports(r.order_id, [r])

    async def apply_reports(self, order_id: str, reports: list[VenueEvent], *,
                            routed_venue: str | None = None) -> OrderSnapshot:
        """In one transaction: the move to ROUTED (``routed_venue``: the gateway handed the
        order to that venue) when it has not happened yet, then each venue event in order,
        each booked exactly once (keyed by venue + ExecID)."""

        # A booking the ledger refuses (or that raises) is a refusal like any other: the whole
        # transaction is rolled back and the batch written again with that report refused (rare:
        # the common batch pays no savepoint for it)
        refused: dict[tuple[str, str], OrderError] = {}

        async def _do(w: _Writer) -> OrderSnapshot:
            start = await _lock(w.conn, order_id)
            booked = await self._book(w, start, reports, routed_venue, refused, self.clock())
            return await w.flag_rebalance(booked.snapshot())

        while True:
            try:
                return await self._tx(_do)  # type: ignore[no-any-return]
            except _BookingRefused as exc:
                refused[exc.key] = exc.why

    async def _book(self, w: _Writer, order: OrderRow, reports: list[VenueEvent], routed_venue: str | None,
                    refused: dict[tuple[str, str], OrderError], now: datetime) -> OrderRow:
        if routed_venue is not None:
            order = await w.write(decide(order, Route(routed_venue), now))
        for r in reports:
            key = (r.venue, r.exec_id)
            record, why = execution(order, r, refused.get(key))
            if not await w.record(order, record):
                continue  # this ExecID was booked before: a duplicate or a replay
            if why is not None:
                log.error("order %s: venue report %s:%s refused: %s", order.id, r.venue, r.exec_id, why)
                order = await w.write(refuse(order, r, why, now))
                continue
            try:
                if r.kind in replacing.ANSWERS:
                    order = await replacing.answer(w, order, r, now)
                else:
                    order = await w.write(decide(order, r, now))
                await replacing.end_replacement(w, order, now)
            except (LedgerRejected, DomainError) as exc:
                raise _BookingRefused(key, OrderError(
                    f"the books cannot take it: {exc}", code="booking_refused")) from exc
        await grouping.after_booking(w, order, now)  # a take-profit's fills shrink its stop-loss
        return order
