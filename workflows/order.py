"""The order workflow: one per order, id = the order id, on the account's shard task queue.

It follows the state machine of ``domain.orders``. Every transition is a local activity that
commits one transaction on the shard (order row + audit event + ledger + outbox). A new order
goes to the execution gateway over its direct link (``activities.gateway_link``), as a local
activity, so that an order the venue fills at once is accepted, sent, filled and booked in one
workflow task; when the link cannot carry it, through the gateway's ``send_new_order``
activity. Cancels and status requests always go through the gateway's activities. Venue
answers that do not come back with the send arrive as ``execution_report`` signals,
deduplicated here by (venue, ExecID) and again by the database.

Silent venue: no answer within ``ack_s`` -> OrderCancelRequest (PENDING_CANCEL); no answer within
``cancel_s`` -> OrderStatusRequest; none within ``status_s`` -> STUCK (search attribute
``OrderState="STUCK"``), funds still held, until an operator's ``resolve`` update or a late venue
answer. A cancel/replace unanswered for ``replace_s`` -> OrderStatusRequest; none within
``status_s`` -> the original STUCK with its hold, the replacement REJECTED (its extra hold
released). It never assumes a fill and never releases funds the venue may still use.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import ApplyReportsInput, LoadOrderInput, OrderActivities
    from domain.execution import VenueEvent
    from domain.order_replace import REPLACEABLE
    from domain.orders import (
        AcceptOrderInput,
        OrderSnapshot,
        OrderState,
        OrderTimeouts,
        PlaceOrderInput,
        ReplaceInput,
        ResolveInput,
    )
    from sherwood.contracts import (
        ACCOUNT_ID,
        EXECUTION_REPORT_SIGNAL,
        GROUP_CANCEL_SIGNAL,
        SHARD_ID,
        SYMBOL,
    )
    from sherwood.faults import INTERNAL_ERROR
    from workflows.order_base import (  # re-exported: the patch ids and helpers live there
        ACTIVITY_FAILED,
        BOUNDED_FAILURES,
        CANCEL_RECORDED_FIRST,
        CANCEL_REPLACE,
        DIRECT_SEND,
        FRACTIONAL,
        GATEWAY_RETRY,
        LOCAL_RETRY,
        MAX_CANCEL_ROUNDS,
        ORDER_FAILED,
        QUEUED_FOR_OPEN,
        REPLACE_DEADLINE,
        ROUTED_WITH_FIRST_ANSWERS,
        ROUTING_DEADLINE,
        TRAILING_STOP,
        S,
        _cause,
        _describe,
        _opt,
        _refused,
    )
    from workflows.order_replace import OrderReplaces
    from workflows.rebalance import start_rebalance
    from workflows.trailing import wait_for_trigger

__all__ = [
    "ACTIVITY_FAILED", "BOUNDED_FAILURES", "CANCEL_RECORDED_FIRST", "CANCEL_REPLACE", "DIRECT_SEND",
    "FRACTIONAL", "GATEWAY_RETRY", "LOCAL_RETRY", "MAX_CANCEL_ROUNDS", "ORDER_FAILED",
    "QUEUED_FOR_OPEN", "REPLACE_DEADLINE", "ROUTED_WITH_FIRST_ANSWERS", "ROUTING_DEADLINE",
    "TRAILING_STOP", "OrderWorkflow", "S", "_cause", "_describe", "_opt", "_refused",
]


@workflow.defn(name="Order")
class OrderWorkflow(OrderReplaces):
    """The order's workflow: its Temporal handlers and its life from acceptance to its end; the
    steps along each seam are its mixins (see ``workflows.order_base``)."""

    @workflow.init
    def __init__(self, inp: PlaceOrderInput) -> None:
        self._inp = inp
        self._t = inp.timeouts or OrderTimeouts()
        self._snap: OrderSnapshot | None = inp.snapshot
        self._reports: list[VenueEvent] = []
        self._seen: set[str] = set(inp.seen_exec_ids or [])
        self._cancel_requested = False
        self._resolution: ResolveInput | None = None
        self._phase = "working"
        self._deadline: datetime | None = None
        self._cancel_rounds = inp.cancel_rounds
        self._expiring = False
        self._direct = False
        self._routing = False  # the gateway's activity is trying to send the order
        self._cancel_first: bool | None = None  # CANCEL_RECORDED_FIRST, once asked
        self._replace_req: ReplaceInput | None = None
        self._watching = False  # a trailing stop waits for its trigger (replaceable at the broker)
        self._replace_done: dict[str, OrderSnapshot | ApplicationError] = {}
        self._rebalance = False  # a fill by the firm left its inventory a share or more off
        # the OrderState search attribute's value (a continued run inherits its predecessor's)
        self._published: str | None = inp.snapshot.state if inp.snapshot else None

    # --- handlers -------------------------------------------------------------------------

    @workflow.signal(name=EXECUTION_REPORT_SIGNAL)
    def execution_report(self, report: VenueEvent) -> None:
        self._take_report(report)

    @workflow.signal(name=GROUP_CANCEL_SIGNAL)
    def group_cancel(self) -> None:
        """Its order group (workflows.order_group) cancels it: as the customer's cancel, without
        an answer (workflows cannot send updates). Ignored once the order has ended."""
        if self._snap is None or not self._snap.terminal:
            self._cancel_requested = True

    # update names are the method names (ACCEPTED_UPDATE, CANCEL_UPDATE, RESOLVE_UPDATE,
    # REPLACE_UPDATE of sherwood.contracts; a test holds them equal): callers use these typed
    # references
    @workflow.update
    async def accepted(self, request_hash: str) -> OrderSnapshot:
        """Wait until the order is accepted or rejected (used with update-with-start). A late
        run answers with its order marked ``duplicate``: the caller reads the order (and checks
        its request) from the database."""
        await workflow.wait_condition(lambda: self._snap is not None)
        assert self._snap is not None
        if self._inp.late:
            return dataclasses.replace(self._snap, duplicate=True)
        return self._snap

    @accepted.validator
    def _validate_accepted(self, request_hash: str) -> None:
        if request_hash != self._inp.request_hash and not self._inp.late:
            raise ApplicationError("this client_order_id was used for a different order",
                                   type="idempotency_conflict", non_retryable=True)

    @workflow.update
    async def cancel(self) -> OrderSnapshot:
        """Ask to cancel; answered once the request is recorded (PENDING_CANCEL), or at once
        while the order is still being routed (the routing takes it), never after a venue's
        round trip."""
        self._cancel_requested = True
        await workflow.wait_condition(
            lambda: self._snap is not None and (not self._cancel_requested or self._routing))
        assert self._snap is not None
        return self._snap

    @cancel.validator
    def _validate_cancel(self) -> None:
        if self._snap is not None and self._snap.terminal:
            raise ApplicationError(f"order is {self._snap.state.lower()} and cannot be canceled",
                                   type="not_cancelable", non_retryable=True)
        if self._snap is not None and self._snap.state == S.PENDING_REPLACE:
            raise ApplicationError("a replace of this order is pending at the venue: cancel the "
                                   "replacement, or this order once the venue answered",
                                   type="pending_replace", non_retryable=True)

    @workflow.update
    async def replace(self, inp: ReplaceInput) -> OrderSnapshot:
        """Cancel/replace the working order: answered with the replacement once the request is
        recorded (the original PENDING_REPLACE, the replacement ROUTED, the extra hold taken),
        before the venue answers; a refusal (its code as the error's type) changes nothing."""
        self._replace_req = inp
        await workflow.wait_condition(lambda: inp.new_order_id in self._replace_done)
        done = self._replace_done.pop(inp.new_order_id)
        if isinstance(done, ApplicationError):
            raise done
        return done

    @replace.validator
    def _validate_replace(self, inp: ReplaceInput) -> None:
        snap = self._snap
        if snap is None or (OrderState(snap.state) not in REPLACEABLE and not self._watching) \
                or self._cancel_requested or self._replace_req is not None:
            state = (snap.state if snap else "PENDING").lower()
            raise ApplicationError(f"order is {state} and cannot be replaced now",
                                   type="not_replaceable", non_retryable=True)

    @workflow.update
    async def resolve(self, resolution: ResolveInput) -> OrderSnapshot:
        self._resolution = resolution
        await workflow.wait_condition(lambda: self._resolution is None)
        assert self._snap is not None
        return self._snap

    @resolve.validator
    def _validate_resolve(self, resolution: ResolveInput) -> None:
        if self._snap is None or self._snap.state != S.STUCK:
            state = self._snap.state if self._snap else "PENDING"
            raise ApplicationError(f"only STUCK orders are resolved by an operator (order is {state})",
                                   type="not_stuck", non_retryable=True)
        if resolution.outcome not in ("filled", "canceled"):
            raise ApplicationError("outcome must be filled or canceled", type="invalid_resolution",
                                   non_retryable=True)

    @workflow.query(name="order")
    def order(self) -> OrderSnapshot | None:
        return self._snap

    # --- main -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: PlaceOrderInput) -> OrderSnapshot:
        # Current histories: the order goes over the gateway link, and OrderState is upserted
        # once per workflow task, when the workflow is about to wait (the server sees commands
        # only when the task completes anyway). Older histories replay their own steps.
        self._direct = workflow.patched(DIRECT_SEND)
        try:
            return await self._lifecycle(inp)
        finally:
            self._publish_state()  # before the workflow completes or continues as new

    async def _lifecycle(self, inp: PlaceOrderInput) -> OrderSnapshot:
        if inp.late and self._snap is None:
            await self._late()
        elif self._snap is None:
            snap = await self._local(OrderActivities.accept_order, AcceptOrderInput(
                order_id=inp.order_id, account_id=inp.account_id, request=inp.request,
                request_hash=inp.request_hash, actor=inp.actor, collar=inp.collar,
                day_ttl_s=inp.day_ttl_s))
            if snap.terminal or snap.duplicate:
                return snap
            if snap.queued_until and workflow.patched(QUEUED_FOR_OPEN):
                await self._wait_for_open(snap.queued_until)
            if inp.request.get("type") == "trailing_stop" and workflow.patched(TRAILING_STOP) \
                    and not await self._await_trigger():
                assert self._snap is not None
                return self._snap
            await self._route()
        elif self._snap.state == S.FUNDS_HELD:  # continued before routing finished, or a replacement
            if inp.request.get("type") == "trailing_stop" and workflow.patched(TRAILING_STOP) \
                    and not await self._await_trigger():
                return self._snap
            await self._route()
        while self._snap is not None and not self._snap.terminal:
            if workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished() \
                    and not self._reports:
                workflow.continue_as_new(PlaceOrderInput(
                    order_id=inp.order_id, account_id=inp.account_id, shard=inp.shard,
                    request=inp.request, request_hash=inp.request_hash, actor=inp.actor,
                    collar=inp.collar, timeouts=self._t, day_ttl_s=inp.day_ttl_s, snapshot=self._snap,
                    seen_exec_ids=sorted(self._seen), gateway_queue=inp.gateway_queue,
                    cancel_rounds=self._cancel_rounds))
            self._publish_state()
            try:
                await workflow.wait_condition(self._has_work, timeout=self._timeout())
            except TimeoutError:
                await self._on_timeout()
                continue
            await self._work()
        assert self._snap is not None
        if self._rebalance and workflow.patched(FRACTIONAL):
            await start_rebalance(inp.shard, self._snap.symbol, collar=inp.collar, timeouts=self._t,
                                  day_ttl_s=inp.day_ttl_s, gateway_queue=inp.gateway_queue)
        return self._snap

    async def _late(self) -> None:
        """A run started for venue reports that came after the order's workflow ended: load the
        order as it is, book the reports (a fill reopens it into STUCK, for an operator), and wait
        like any order would. Nothing is sent to a venue on its own: a reopened order is for an
        operator (no expiry cancel)."""
        self._expiring = True
        snap = await self._local(OrderActivities.load_order, LoadOrderInput(self._inp.order_id))
        workflow.upsert_search_attributes([SYMBOL.value_set(snap.symbol),
                                           ACCOUNT_ID.value_set(snap.account_id),
                                           SHARD_ID.value_set(self._inp.shard)])
        await workflow.wait_condition(lambda: bool(self._reports))
        await self._work()

    async def _wait_for_open(self, queued_until: str) -> None:
        """Wait (a durable timer: a restarted worker resumes it) until the session's open, or
        until the customer cancels; :meth:`_route` then takes the cancel (CANCELED, hold
        released) or sends the order. The clock is the business clock (``market_clock_offset_s``);
        ``open_wait_max_s`` caps the wait (tests). Halts are re-checked by the gateway when it
        sends; a DAY order's expiry (the close of the session it waited for) starts once it is at
        the venue, as for any order."""
        now = workflow.now() + timedelta(seconds=self._t.market_clock_offset_s)
        wait = max(timedelta(0), datetime.fromisoformat(queued_until) - now)
        if self._t.open_wait_max_s is not None:
            wait = min(wait, timedelta(seconds=self._t.open_wait_max_s))
        self._publish_state()
        if wait <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: self._cancel_requested, timeout=wait,
                                          timeout_summary="queued for the open")
        except TimeoutError:
            pass

    async def _await_trigger(self) -> bool:
        """A trailing stop waits for its trigger (:func:`workflows.trailing.wait_for_trigger`).
        True: route it (fired, or a cancel :meth:`_route` takes); False: it has ended here
        (expired at the close or failed: CANCELED/EXPIRED/FAILED release the hold)."""
        while True:
            assert self._snap is not None
            self._publish_state()
            self._watching = True
            out = await wait_for_trigger(
                snap=self._snap, shard=self._inp.shard, request=self._inp.request, timeouts=self._t,
                cancel_requested=lambda: self._cancel_requested,
                replace_requested=lambda: self._replace_req is not None)
            self._watching = False
            if out.how != "replace":
                break
            await self._replace_at_broker()
            if self._snap.terminal:  # replaced: the replacement's own workflow watches now
                await workflow.wait_condition(workflow.all_handlers_finished)
                return False
        if out.how in ("fired", "canceled"):
            return True
        if out.how == "expired":
            await self._finish(S.EXPIRED, out.reason, actor="system")
        elif out.how == "failed":
            workflow.logger.error("order %s: %s", self._inp.order_id, out.reason)
            await self._finish(S.FAILED, out.reason, actor="system", code=INTERNAL_ERROR)
        else:  # the order no longer waits: as it stands
            await self._local(OrderActivities.load_order, LoadOrderInput(self._inp.order_id))
        return False

    def _has_work(self) -> bool:
        return (bool(self._reports) or self._cancel_requested or self._resolution is not None
                or self._replace_req is not None)

    async def _work(self) -> None:
        if self._reports:
            batch, self._reports = self._reports, []
            await self._local(OrderActivities.apply_reports,
                              ApplyReportsInput(order_id=self._inp.order_id, reports=batch))
            self._on_venue_answer()
            if self._snap is not None and self._snap.state == S.REPLACED and self._snap.replaced_by:
                await self._start_replacement(self._snap.replaced_by)
        if self._replace_req is not None:
            await self._replace()
        if self._resolution is not None:
            try:
                await self._local(OrderActivities.resolve_order, self._resolution, give_up=False)
            except ACTIVITY_FAILED as exc:
                workflow.logger.error("resolution refused: %s", _cause(exc))
            self._resolution = None  # releases the waiting update
        if self._cancel_requested:
            await self._request_cancel("canceled by the customer")
            self._cancel_requested = False
