"""Order activities of one shard: each call is one database transaction on that shard
(see :mod:`db.orders`). Registered as bound methods on the shard's worker and run as local
activities by the order workflow (short, idempotent, same process: safe to run locally).

Business refusals become non-retryable ``ApplicationError`` s whose ``type`` is the stable code;
a transient infrastructure failure (a database hiccup) is retried by Temporal within the
workflow's maximum; anything else is a non-retryable ``internal_error``
(:func:`sherwood.faults.final_unless_transient`), which the workflow ends visibly: REJECTED
before the hold (:meth:`OrderActivities.reject_unaccepted`), STUCK with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gateway_link import GatewayLink
from db import rebalance
from db.controls import ControlsCache
from db.errors import DbError, LedgerRejected
from db.orders import OrderStore, Quotes, RiskContext
from db.rebalance import Funded
from domain.errors import DomainError
from domain.execution import VenueAck, VenueEvent, VenueOrder
from domain.order_replace import ReplaceRecorded
from domain.orders import (
    AcceptOrderInput,
    OrderSnapshot,
    OrderState,
    RequestReplaceInput,
    ResolveInput,
    TransitionInput,
    parse_order_request,
)
from domain.risk import Rejection, RiskLimits
from marketdata.quotes import LatestQuotes
from sherwood.faults import final_unless_transient


@dataclass
class LoadOrderInput:
    order_id: str


@dataclass
class ApplyReportsInput:
    order_id: str
    reports: list[VenueEvent]
    routed_venue: str | None = None  # also record the move to ROUTED (the gateway sent it there)


@dataclass
class DirectSendInput:
    """A new order for the gateway's direct link, and what to book with the venue's first
    answers if it is sent: the reports signalled before the send (``pending``, booked after the
    ack's) and the (venue, ExecID) keys the workflow has seen (an ack's report among them is not
    booked again)."""

    order: VenueOrder
    pending: list[VenueEvent] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


@dataclass
class DirectAck(VenueAck):
    """``send_new_order_direct``'s answer: the gateway's ack and, when the same local activity
    booked the move to ROUTED with the venue's first answers, the order after that booking.
    ``booked`` is None when the booking did not happen here (it failed, or a history written
    before it did returns a bare ack): the workflow then books with ``apply_reports``."""

    booked: OrderSnapshot | None = None


@dataclass
class GiveUpReplaceInput:
    order_id: str
    reason: str


@dataclass
class ActivateExitsInput:
    parent_id: str
    filled_qty: str  # what the group's entry filled (decimal as a string)


@dataclass
class HouseFillInput:
    """An order with no whole share, for the firm to fill (``domain.fractional``)."""

    order_id: str
    symbol: str


@dataclass
class RebalanceStepInput:
    """One step of the firm's inventory rebalance of ``symbol`` on ``shard`` (its order's id)."""

    shard: int
    symbol: str
    order_id: str
    collar: str = "0.05"


@dataclass
class RejectUnacceptedInput:
    accept: AcceptOrderInput
    code: str
    reason: str


def business_error(exc: DomainError | DbError) -> ApplicationError:
    return ApplicationError(exc.message, type=exc.code, non_retryable=True)


class OrderActivities:
    def __init__(self, store: OrderStore, quotes: LatestQuotes, *, limits: RiskLimits | None = None,
                 controls: ControlsCache | None = None, gateway: GatewayLink | None = None) -> None:
        self.store = store
        self.quotes = quotes
        self.limits = limits or RiskLimits()
        self.controls = controls
        self.gateway = gateway

    @activity.defn(name="accept_order")
    @final_unless_transient
    async def accept_order(self, inp: AcceptOrderInput) -> OrderSnapshot:
        try:
            req = parse_order_request(inp.request)
            held, shard_halt = await self.store.account_context(inp.account_id)
            own, quotes = await self.quotes.for_order(req.symbol, held)  # own: None when stale
            ctx = RiskContext(limits=self.limits,
                              control=self.controls.get(req.symbol) if self.controls else None,
                              shard_halt=shard_halt)
            return await self.store.accept(
                inp, Quotes(ask=own.ask if own else None, bid=own.bid if own else None,
                            prices={s: q.bid for s, q in quotes.items()}), ctx)
        except (DomainError, LedgerRejected) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="reject_unaccepted")
    @final_unless_transient
    async def reject_unaccepted(self, inp: RejectUnacceptedInput) -> OrderSnapshot:
        """End an order whose accept failed for good: REJECTED, nothing held (or the order as
        it stands if the accept did commit)."""
        try:
            return await self.store.reject_unaccepted(inp.accept, Rejection(inp.code, inp.reason))
        except DomainError as exc:  # the request itself cannot be read: nothing can be written
            raise business_error(exc) from exc

    @activity.defn(name="transition_order")
    @final_unless_transient
    async def transition_order(self, inp: TransitionInput) -> OrderSnapshot:
        try:
            return await self.store.transition(inp.order_id, OrderState(inp.to_state),
                                               reason=inp.reason, actor=inp.actor, venue=inp.venue)
        except (DomainError, DbError) as exc:  # a refused transition: retrying cannot help
            raise business_error(exc) from exc

    @activity.defn(name="finish_order")
    @final_unless_transient
    async def finish_order(self, inp: TransitionInput) -> OrderSnapshot:
        try:
            return await self.store.finish(inp.order_id, OrderState(inp.to_state), reason=inp.reason,
                                           actor=inp.actor, code=inp.code)
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="apply_reports")
    @final_unless_transient
    async def apply_reports(self, inp: ApplyReportsInput) -> OrderSnapshot:
        try:
            return await self.store.apply_reports(inp.order_id, inp.reports,
                                                  routed_venue=inp.routed_venue)
        except DomainError as exc:  # e.g. an overfill: never silently dropped
            activity.logger.error("venue report refused for %s: %s", inp.order_id, exc)
            raise business_error(exc) from exc

    @activity.defn(name="resolve_order")
    @final_unless_transient
    async def resolve_order(self, inp: ResolveInput) -> OrderSnapshot:
        try:
            return await self.store.resolve(inp)
        except (DomainError, DbError) as exc:  # e.g. a resolution the ledger refuses
            raise business_error(exc) from exc

    @activity.defn(name="request_replace")
    @final_unless_transient
    async def request_replace(self, inp: RequestReplaceInput) -> ReplaceRecorded:
        """Record a customer's cancel/replace (one transaction: the original PENDING_REPLACE,
        the replacement ROUTED with its extra hold), checked against what a new order's accept
        is (quotes, symbol controls, the shard's halt, the risk limits); refusals are
        non-retryable with their code."""
        try:
            order = await self.store.snapshot(inp.order_id)
            symbol = order.symbol
            held, shard_halt = await self.store.account_context(order.account_id)
            own, quotes = await self.quotes.for_order(symbol, held)  # own: None when stale
            ctx = RiskContext(limits=self.limits,
                              control=self.controls.get(symbol) if self.controls else None,
                              shard_halt=shard_halt)
            return await self.store.request_replace(
                inp.order_id, inp.change, new_id=inp.new_order_id, actor=inp.actor,
                day_ttl_s=inp.day_ttl_s, shard=inp.shard,
                quotes=Quotes(ask=own.ask if own else None, bid=own.bid if own else None,
                              prices={s: q.bid for s, q in quotes.items()}), ctx=ctx,
                **({"collar": Decimal(inp.collar)} if inp.collar else {}))
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="give_up_replace")
    @final_unless_transient
    async def give_up_replace(self, inp: GiveUpReplaceInput) -> OrderSnapshot:
        """A replace the venue never answered: the original STUCK, the replacement REJECTED
        with its extra hold released (one transaction)."""
        try:
            return await self.store.give_up_replace(inp.order_id, inp.reason)
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="activate_exits")
    @final_unless_transient
    async def activate_exits(self, inp: ActivateExitsInput) -> list[OrderSnapshot]:
        """An order group's entry ended: its exits go live for what it filled (or end CANCELED
        when nothing filled), in one transaction (``db.order_groups.activate_exits``)."""
        try:
            return await self.store.activate_exits(inp.parent_id, Decimal(inp.filled_qty))
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="load_order")
    @final_unless_transient
    async def load_order(self, inp: LoadOrderInput) -> OrderSnapshot:
        """The order as it stands (a late run of its workflow starts from it)."""
        try:
            return await self.store.snapshot(inp.order_id)
        except DomainError as exc:
            raise business_error(exc) from exc

    @activity.defn(name="send_new_order_direct")
    @final_unless_transient
    async def send_new_order_direct(self, inp: DirectSendInput) -> DirectAck | None:
        """The gateway's ``send_new_order`` over the direct link (``activities.gateway_link``),
        run as a local activity in the order's first workflow task, then, once sent, the move to
        ROUTED booked with the venue's first answers (:meth:`apply_reports`'s transaction) in
        the same activity: one local activity, not two, for an order that fills at once.

        ``None``: no link, or it could not carry the call; the workflow then uses the gateway's
        activity (safe: sending is idempotent per ClOrdID). The gateway's non-retryable refusals
        are raised as they are. A booking that fails here is not retried here and never hides
        the send: the ack comes back with ``booked=None`` and the workflow books it with
        ``apply_reports`` and that step's retries and visible end."""
        if self.gateway is None:
            return None
        ack = await self.gateway.send_new_order(inp.order)
        if ack is None:
            return None
        seen = set(inp.seen)
        batch = [r for r in ack.reports if r.key not in seen] + inp.pending
        booked: OrderSnapshot | None = None
        try:
            booked = await self.store.apply_reports(inp.order.order_id, batch, routed_venue=ack.venue)
        except Exception as exc:  # the workflow's apply_reports books it (and ends it visibly)
            activity.logger.warning("order %s sent to %s; its booking is left to apply_reports: %r",
                                    inp.order.order_id, ack.venue, exc)
        return DirectAck(venue=ack.venue, cl_ord_id=ack.cl_ord_id, resent=ack.resent,
                         reports=ack.reports, booked=booked)

    @activity.defn(name="fill_from_house")
    @final_unless_transient
    async def fill_from_house(self, inp: HouseFillInput) -> OrderSnapshot:
        """The firm fills an order with no whole share at the current quote's far side, or
        rejects it (no quote, limit not reached, price moved past the hold, inventory bound):
        one shard transaction, never a venue."""
        quote = await self.quotes.get(inp.symbol)  # None when absent or stale
        try:
            return await self.store.house_fill(
                inp.order_id, bid=quote.bid if quote else None, ask=quote.ask if quote else None,
                max_inventory=self.limits.fractional_max_inventory)
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="fund_rebalance")
    @final_unless_transient
    async def fund_rebalance(self, inp: RebalanceStepInput) -> Funded | None:
        """Plan the rebalance from the inventory now and fund the firm's account for its order
        (db.rebalance.fund); None: less than a whole share to rebalance."""
        quote = await self.quotes.get(inp.symbol)
        try:
            return await rebalance.fund(self.store.engine, inp.shard, inp.symbol, inp.order_id,
                                        ask=quote.ask if quote else None, collar=Decimal(inp.collar),
                                        house_stripes=self.store.house_stripes)
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    @activity.defn(name="return_rebalance")
    @final_unless_transient
    async def return_rebalance(self, inp: RebalanceStepInput) -> dict[str, str]:
        """Give every balance of the firm's account back to the inventory (the order ended)."""
        try:
            return await rebalance.give_back(self.store.engine, inp.shard, inp.symbol, inp.order_id,
                                             house_stripes=self.store.house_stripes)
        except (DomainError, DbError) as exc:
            raise business_error(exc) from exc

    def all(self) -> list[Callable[..., Any]]:
        return [self.accept_order, self.reject_unaccepted, self.transition_order, self.finish_order,
                self.apply_reports, self.resolve_order, self.send_new_order_direct, self.load_order,
                self.request_replace, self.give_up_replace, self.activate_exits,
                self.fill_from_house, self.fund_rebalance, self.return_rebalance]
