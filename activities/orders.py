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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gateway_link import GatewayLink
from db.controls import ControlsCache
from db.errors import DbError, LedgerRejected
from db.orders import OrderStore, Quotes, RiskContext
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
        the replacement ROUTED with its extra hold); refusals are non-retryable with their code."""
        try:
            quote = await self.quotes.get(inp.quote_symbol) if inp.quote_symbol else None
            return await self.store.request_replace(
                inp.order_id, inp.change, new_id=inp.new_order_id, actor=inp.actor,
                day_ttl_s=inp.day_ttl_s, shard=inp.shard, ask=quote.ask if quote else None,
                collar=Decimal(inp.collar))
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
    async def send_new_order_direct(self, order: VenueOrder) -> VenueAck | None:
        """The gateway's ``send_new_order`` over the direct link (``activities.gateway_link``),
        run as a local activity in the order's first workflow task. ``None``: no link, or it
        could not carry the call; the workflow then uses the gateway's activity (safe: sending
        is idempotent per ClOrdID). The gateway's non-retryable refusals are raised as they are."""
        if self.gateway is None:
            return None
        return await self.gateway.send_new_order(order)

    def all(self) -> list[Callable[..., Any]]:
        return [self.accept_order, self.reject_unaccepted, self.transition_order, self.finish_order,
                self.apply_reports, self.resolve_order, self.send_new_order_direct, self.load_order,
                self.request_replace]
