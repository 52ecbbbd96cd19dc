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
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimedOut
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import (
        ApplyReportsInput,
        GiveUpReplaceInput,
        HouseFillInput,
        LoadOrderInput,
        OrderActivities,
        RejectUnacceptedInput,
    )
    from domain.execution import (
        VenueAck,
        VenueCancel,
        VenueEvent,
        VenueOrder,
    )
    from domain.fractional import house_only, venue_qty
    from domain.order_replace import REPLACEABLE, ReplaceRecorded
    from domain.orders import (
        AT_VENUE,
        AcceptOrderInput,
        OrderSnapshot,
        OrderState,
        OrderTimeouts,
        PlaceOrderInput,
        ReplaceInput,
        RequestReplaceInput,
        ResolveInput,
        TransitionInput,
    )
    from sherwood.contracts import (
        ACCOUNT_ID,
        EXECUTION_REPORT_SIGNAL,
        GATEWAY_TASK_QUEUE,
        GROUP_CANCEL_SIGNAL,
        ORDER_STATE,
        SHARD_ID,
        SYMBOL,
    )
    from sherwood.faults import INTERNAL_ERROR, is_internal, retries_within
    from workflows.rebalance import start_rebalance
    from workflows.trailing import wait_for_trigger

S = OrderState
LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100),
                          maximum_interval=timedelta(seconds=5))
# The gateway keeps retrying while no venue is connected; the order waits (it is accepted).
GATEWAY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                            maximum_interval=timedelta(seconds=5))
MAX_CANCEL_ROUNDS = 3
# workflow.patched ids: a change of the steps an order takes, so that orders already running
# when it is deployed replay the steps they were written with
ROUTED_WITH_FIRST_ANSWERS = "routed-with-first-answers"
# implies ROUTED_WITH_FIRST_ANSWERS: one patch per order, not two (each costs the server a marker
# and a TemporalChangeVersion search-attribute update: measured ~10% of the floor's throughput)
DIRECT_SEND = "send-over-the-gateway-link"
# the gateway's activity sends within a routing deadline, a customer cancel is taken while it
# tries, and the order is abandoned (never sent later) when no venue took it
ROUTING_DEADLINE = "routing-deadline"
# a cancel is recorded (PENDING_CANCEL, the customer answered) before it is sent; a second one
# while it is on its way is the same request; sends to the gateway have deadlines
CANCEL_RECORDED_FIRST = "cancel-recorded-first"
# a step that fails for good (an internal error, or transient failures past the retry maximum)
# ends the order visibly: REJECTED before its hold, STUCK with it -- never retried forever
BOUNDED_FAILURES = "bounded-failures"
# an order accepted outside the regular session (its snapshot names the open) waits on a
# durable timer until the open, cancelable at once, then routes
QUEUED_FOR_OPEN = "queued-for-the-open"
# a customer's cancel/replace: recorded (PENDING_REPLACE, the replacement ROUTED) before the
# OrderCancelReplaceRequest is sent; once the venue replaced the order, its replacement's own
# workflow is started here (a child left running when this one ends)
CANCEL_REPLACE = "cancel-replace"
# a replace unanswered for replace_s -> OrderStatusRequest; still none within status_s -> the
# original STUCK (its hold kept), the replacement REJECTED (its extra hold released)
REPLACE_DEADLINE = "replace-deadline"
# a trailing stop waits, with its hold, for its broker-held trigger (workflows/trailing.py), then
# routes as a market order; cancelable at once, expiring (nothing sent) at a DAY order's close
TRAILING_STOP = "trailing-stop"
# an order with no whole share (qty < 1, or a notional order) is filled by the firm at the quote
# (domain.fractional) instead of being sent to a venue; only such orders take the patch
FRACTIONAL = "fractional"
ORDER_FAILED = "order_failed"  # the workflow fails: even the visible end could not be written
# What an awaited activity raises when it fails: an ActivityError wrapping the cause for a
# remote activity, but the activity's own ApplicationError, unwrapped, for a local one
# (temporalio 1.35; tests/workflows/test_order_faults.py sends a refused resolution through this).
ACTIVITY_FAILED = (ActivityError, ApplicationError, ActivityTimedOut)


@workflow.defn(name="Order")
class OrderWorkflow:
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
        if self._first_time(report):
            self._reports.append(report)

    def _first_time(self, report: VenueEvent) -> bool:
        key = f"{report.venue}:{report.exec_id}"
        if key in self._seen:
            return False  # a duplicate (PossDup / PossResend / redelivery): booked once, ever
        self._seen.add(key)
        return True

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

    async def _route(self) -> None:
        snap = self._snap
        assert snap is not None
        if self._cancel_requested:
            await self._finish(S.CANCELED, "canceled before it was sent to a venue", actor="customer")
            self._cancel_requested = False
            return
        if house_only(snap.qty) and workflow.patched(FRACTIONAL):
            # nothing for a venue: the firm fills it (or rejects it) in one shard transaction
            await self._local(OrderActivities.fill_from_house,
                              HouseFillInput(order_id=snap.order_id, symbol=snap.symbol))
            return
        req = self._inp.request
        # a trailing stop is routed once its trigger fired: the venue gets a market order; a venue
        # trades the whole part, the firm fills the fraction when that part is filled
        otype = "market" if req["type"] == "trailing_stop" else str(req["type"])
        order = VenueOrder(order_id=snap.order_id, account_id=snap.account_id, shard=self._inp.shard,
                           symbol=snap.symbol, side=snap.side, qty=venue_qty(snap.qty),
                           order_type=otype, time_in_force=str(req["time_in_force"]),
                           limit_price=_opt(req.get("limit_price")),
                           stop_price=_opt(req.get("stop_price")))
        try:
            ack: VenueAck | None = None
            if self._direct:
                # In this workflow task, over the gateway's direct link: no activity round trips
                # through the server. None (no link, down, slow) or a failure of our own: the
                # gateway's activity sends it, safe because a ClOrdID goes to a venue once, ever.
                try:
                    ack = await workflow.execute_local_activity_method(
                        OrderActivities.send_new_order_direct, order,
                        start_to_close_timeout=timedelta(seconds=10),
                        retry_policy=RetryPolicy(maximum_attempts=1))
                except ACTIVITY_FAILED as exc:
                    if _refused(exc):
                        raise
                    workflow.logger.warning("direct send failed (%s): the activity sends it",
                                            _cause(exc))
            if ack is None and workflow.patched(ROUTING_DEADLINE):
                ack = await self._send_within_deadline(order)
                if ack is None:
                    return  # abandoned: the order has ended, nothing was sent
            elif ack is None:
                ack = await self._gateway("send_new_order", order, VenueAck)
        except ACTIVITY_FAILED as exc:  # non-retryable: the gateway guarantees nothing was sent
            if isinstance(exc, ApplicationError) and exc.type == ORDER_FAILED:
                raise  # the workflow's own end (see _give_up), not the gateway's answer
            cause = _cause(exc)
            if isinstance(cause, ApplicationError) and cause.type == "symbol_halted":
                await self._finish(S.REJECTED, cause.message, actor="gateway", code="symbol_halted")
            else:
                await self._finish(S.FAILED, f"could not route: {cause or exc}", actor="gateway")
            return
        if self._direct or workflow.patched(ROUTED_WITH_FIRST_ANSWERS):
            # The move to ROUTED and the venue's first answers (which the gateway returns with
            # the ack when they come at once, e.g. a market order's New + Fill) are booked in one
            # shard transaction, in this workflow task: no separate signals, no extra workflow
            # task. Answers the ack carries come before any signalled while it was on its way.
            early = [r for r in ack.reports if self._first_time(r)]
            batch, self._reports = early + self._reports, []
            await self._local(OrderActivities.apply_reports, ApplyReportsInput(
                order_id=snap.order_id, reports=batch, routed_venue=ack.venue))
        else:
            # orders routed by the previous version replay its steps: ROUTED on its own; any
            # answers in the ack are booked by the main loop like signalled ones
            for r in ack.reports:
                self.execution_report(r)
            await self._local(OrderActivities.transition_order, TransitionInput(
                order_id=snap.order_id, to_state=S.ROUTED, reason=f"sent to {ack.venue}",
                actor="gateway", venue=ack.venue))
        if self._snap is not None and self._snap.state == S.ROUTED:
            self._phase = "await_ack"
            self._deadline = workflow.now() + timedelta(seconds=self._t.ack_s)
        else:
            self._on_venue_answer()

    async def _send_within_deadline(self, order: VenueOrder) -> VenueAck | None:
        """The gateway's activity sends the order, within its type's routing deadline; a customer
        cancel while it tries is taken at once. Past the deadline, or on the cancel, the gateway
        abandons the order (never sent, ever): it ends REJECTED (``venue_unavailable``) or
        CANCELED with its funds released -- unless a send got it to a venue first, which the
        gateway says: then it is routed as usual (and a cancel goes to the venue)."""
        market = order.order_type in ("market", "stop")
        limit_s = self._t.route_market_s if market else self._t.route_limit_s
        self._routing = True
        send = workflow.start_activity(
            "send_new_order", order, result_type=VenueAck, task_queue=self._gateway_queue(),
            schedule_to_close_timeout=timedelta(seconds=limit_s),
            start_to_close_timeout=timedelta(seconds=10), retry_policy=GATEWAY_RETRY)
        self._publish_state()
        await workflow.wait_condition(lambda: send.done() or self._cancel_requested)
        if send.done():
            try:
                ack: VenueAck = send.result()
                self._routing = False
                return ack
            except ActivityError as exc:
                if not isinstance(exc.cause, ActivityTimedOut) and not (
                        workflow.patched(BOUNDED_FAILURES) and not _refused(exc)):
                    self._routing = False
                    # a refusal: nothing was sent. Anything else (our bug, or a retryable error
                    # Temporal gave up on because the next try would pass the deadline) abandons.
                    raise
        else:
            send.cancel()
        if workflow.patched(BOUNDED_FAILURES):
            try:
                ack = await self._gateway("abandon_new_order", order, VenueAck,
                                          within_s=self._t.gateway_retry_s)
            except ACTIVITY_FAILED as exc:  # the gateway cannot say whether a venue has it
                self._routing = False
                await self._mark_stuck(f"the gateway could not say whether the order was sent: "
                                       f"{_describe(exc)}")
                return None
        else:
            ack = await self._gateway("abandon_new_order", order, VenueAck)
        self._routing = False
        if ack is not None:  # it reached a venue first: it lives on there
            return ack
        if self._cancel_requested:
            await self._finish(S.CANCELED, "canceled while no venue could take it", actor="customer")
            self._cancel_requested = False
        else:
            await self._finish(S.REJECTED, f"no venue took the order within {limit_s:g}s",
                               actor="gateway", code="venue_unavailable")
        return None

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

    async def _replace(self) -> None:
        """Record the replace (one shard transaction), answer the customer, then send the
        OrderCancelReplaceRequest; the venue's answer comes as a report of this order."""
        inp, self._replace_req = self._replace_req, None
        assert inp is not None
        workflow.patched(CANCEL_REPLACE)
        rec = await self._record_replace(inp)
        if rec is not None and rec.send is not None:
            if workflow.patched(REPLACE_DEADLINE):
                self._phase = "replace_sent"
                self._deadline = workflow.now() + timedelta(seconds=self._t.replace_s)
            await self._send_with_deadline("send_replace", rec.send, self._t.cancel_s)

    async def _replace_at_broker(self) -> None:
        """Replace a trailing stop waiting for its trigger: recorded in one transaction (the
        original REPLACED, the replacement FUNDS_HELD with its hold), the customer answered with
        the replacement, whose own workflow (a child left running) watches its trigger. A
        refusal changes nothing: the caller watches again."""
        inp, self._replace_req = self._replace_req, None
        assert inp is not None
        rec = await self._record_replace(inp)
        if rec is not None and rec.original.terminal and rec.request is not None:
            await self._start_replacement(rec.replacement.order_id, request=rec.request,
                                          snap=rec.replacement)

    async def _record_replace(self, inp: ReplaceInput) -> ReplaceRecorded | None:
        """The replace recorded and the customer's update answered with the replacement; None
        (the update answered with the refusal, nothing changed) when it is refused or fails."""
        try:
            rec: ReplaceRecorded = await workflow.execute_local_activity_method(
                OrderActivities.request_replace, RequestReplaceInput(
                    order_id=self._inp.order_id, new_order_id=inp.new_order_id, change=inp.change,
                    actor=inp.actor, shard=self._inp.shard, day_ttl_s=self._inp.day_ttl_s,
                    collar=self._inp.collar),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=retries_within(LOCAL_RETRY, self._t.store_retry_s))
        except ACTIVITY_FAILED as exc:
            cause = _cause(exc)
            self._replace_done[inp.new_order_id] = (
                ApplicationError(cause.message, type=cause.type, non_retryable=True)
                if isinstance(cause, ApplicationError) and _refused(exc)
                else ApplicationError(f"the replace could not be recorded: {_describe(exc)}",
                                      type=INTERNAL_ERROR, non_retryable=True))
            return None
        self._set(rec.original)
        self._replace_done[inp.new_order_id] = rec.replacement
        return rec

    async def _start_replacement(self, order_id: str, *, request: dict[str, Any] | None = None,
                                 snap: OrderSnapshot | None = None) -> None:
        """The venue replaced this order: its replacement (ACKED, holding what it needs) gets
        its own workflow, which books its reports from now on (they carry its ClOrdID). A
        trailing stop's replacement (``request``, ``snap``: FUNDS_HELD) waits for its trigger."""
        if snap is None:
            snap = await self._store(OrderActivities.load_order, LoadOrderInput(order_id))
        info = workflow.info()
        inp = self._inp
        await workflow.start_child_workflow(
            OrderWorkflow.run, PlaceOrderInput(
                order_id=order_id, account_id=snap.account_id, shard=inp.shard, request=request or {},
                request_hash="", actor=inp.actor, collar=inp.collar, timeouts=self._t,
                day_ttl_s=inp.day_ttl_s, snapshot=snap, gateway_queue=inp.gateway_queue),
            id=order_id, task_queue=info.task_queue, parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(ORDER_STATE, snap.state), SearchAttributePair(SYMBOL, snap.symbol),
                SearchAttributePair(ACCOUNT_ID, snap.account_id),
                SearchAttributePair(SHARD_ID, inp.shard)]))

    def _on_venue_answer(self) -> None:
        snap = self._snap
        if snap is None or snap.terminal:
            return
        if snap.state == S.PENDING_CANCEL:  # still waiting for the cancel's answer: venue alive
            self._deadline = workflow.now() + timedelta(seconds=self._t.cancel_s)
            self._phase = "cancel_sent"
        elif snap.state == S.PENDING_REPLACE and self._phase in ("replace_sent", "replace_status_sent"):
            pass  # a fill of the original is no answer to the replace: its deadline stands
        else:
            self._phase, self._deadline = "working", None

    def _timeout(self) -> timedelta | None:
        deadlines = [d for d in (self._deadline, self._expiry()) if d is not None]
        if not deadlines:
            return None
        return max(timedelta(0), min(deadlines) - workflow.now())

    def _expiry(self) -> datetime | None:
        snap = self._snap
        if (snap is None or not snap.expires_at or self._expiring
                or OrderState(snap.state) not in AT_VENUE):
            return None
        # expires_at is on the business clock (it runs market_clock_offset_s ahead: tests)
        return datetime.fromisoformat(snap.expires_at) + timedelta(
            seconds=self._t.expire_grace_s - self._t.market_clock_offset_s)

    async def _on_timeout(self) -> None:
        now = workflow.now()
        expiry = self._expiry()
        if expiry is not None and now >= expiry:
            self._expiring = True
            await self._request_cancel("DAY order expired at the close", expiry=True)
            return
        if self._deadline is None or now < self._deadline:
            return
        if self._phase == "await_ack":
            await self._request_cancel(f"no answer from the venue within {self._t.ack_s:g}s")
        elif self._phase == "cancel_sent":
            self._phase = "status_sent"
            self._deadline = now + timedelta(seconds=self._t.status_s)
            if self._cancel_first:
                await self._send_with_deadline("send_status", self._venue_cancel(), self._t.status_s)
            else:
                await self._gateway("send_status", self._venue_cancel(), str)
        elif self._phase == "status_sent":
            self._phase, self._deadline = "stuck", None
            await self._local(OrderActivities.transition_order, TransitionInput(
                order_id=self._inp.order_id, to_state=S.STUCK, actor="system",
                reason="no answer from the venue to cancel or status requests: needs an operator"))
        elif self._phase == "replace_sent":  # REPLACE_DEADLINE
            self._phase = "replace_status_sent"
            self._deadline = now + timedelta(seconds=self._t.status_s)
            await self._send_with_deadline("send_status", self._venue_cancel(), self._t.status_s)
        elif self._phase == "replace_status_sent":
            self._phase, self._deadline = "stuck", None
            await self._local(OrderActivities.give_up_replace, GiveUpReplaceInput(
                order_id=self._inp.order_id,
                reason="no answer from the venue to the replace or the status request after it"))

    async def _request_cancel(self, reason: str, *, expiry: bool = False) -> None:
        snap = self._snap
        assert snap is not None
        if snap.terminal:
            return
        if snap.state == S.FUNDS_HELD or snap.venue is None:
            await self._finish(S.CANCELED, reason, actor="customer")
            return
        if self._cancel_first is None:
            self._cancel_first = workflow.patched(CANCEL_RECORDED_FIRST)
        if (self._cancel_first and not expiry and snap.state == S.PENDING_CANCEL
                and self._phase in ("cancel_sent", "status_sent")):
            self._cancel_requested = False  # a cancel is on its way: this is the same request
            return
        self._cancel_rounds += 1
        if self._cancel_rounds > MAX_CANCEL_ROUNDS:
            self._phase, self._deadline = "stuck", None
            await self._local(OrderActivities.transition_order, TransitionInput(
                order_id=snap.order_id, to_state=S.STUCK, actor="system",
                reason=f"venue never confirmed {MAX_CANCEL_ROUNDS} cancel requests"))
            return
        if not self._cancel_first:  # histories written before CANCEL_RECORDED_FIRST
            await self._gateway("send_cancel", self._venue_cancel(expiry=expiry), str)
        await self._local(OrderActivities.transition_order, TransitionInput(
            order_id=snap.order_id, to_state=S.PENDING_CANCEL, reason=reason, actor="system"))
        self._phase = "cancel_sent"
        self._deadline = workflow.now() + timedelta(seconds=self._t.cancel_s)
        if self._cancel_first:
            self._cancel_requested = False  # recorded: the customer has their answer
            await self._send_with_deadline("send_cancel", self._venue_cancel(expiry=expiry),
                                           self._t.cancel_s)

    async def _send_with_deadline(self, name: str, arg: object, seconds: float) -> None:
        """A cancel or status request through the gateway, given up after ``seconds``: a venue
        that cannot be reached gets no answer either, and the order moves on (status request,
        then STUCK) instead of waiting for the gateway forever."""
        self._publish_state()
        try:
            await workflow.execute_activity(
                name, arg, result_type=str, task_queue=self._gateway_queue(),
                schedule_to_close_timeout=timedelta(seconds=max(seconds, 1.0)),
                start_to_close_timeout=timedelta(seconds=10), retry_policy=GATEWAY_RETRY)
        except ActivityError as exc:
            workflow.logger.warning("%s for %s not sent: %s", name, self._inp.order_id, _cause(exc))

    def _venue_cancel(self, *, expiry: bool = False) -> VenueCancel:
        snap = self._snap
        assert snap is not None and snap.venue is not None
        return VenueCancel(order_id=snap.order_id, venue=snap.venue, symbol=snap.symbol,
                           side=snap.side, qty=snap.qty, attempt=self._cancel_rounds or 1,
                           expiry=expiry)

    async def _finish(self, to: OrderState, reason: str, *, actor: str, code: str | None = None) -> None:
        await self._local(OrderActivities.finish_order, TransitionInput(
            order_id=self._inp.order_id, to_state=to, reason=reason, actor=actor, code=code))

    def _gateway_queue(self) -> str:
        return self._inp.gateway_queue or GATEWAY_TASK_QUEUE

    async def _gateway(self, name: str, arg: object, result_type: type, *,
                       within_s: float | None = None) -> Any:
        self._publish_state()
        return await workflow.execute_activity(
            name, arg, result_type=result_type,
            task_queue=self._gateway_queue(),
            schedule_to_close_timeout=timedelta(seconds=within_s) if within_s else None,
            start_to_close_timeout=timedelta(seconds=10), retry_policy=GATEWAY_RETRY)

    async def _local(self, fn: Any, arg: object, *, give_up: bool = True) -> OrderSnapshot:
        """One shard transaction. One that fails for good -- an internal error, or transient
        failures for longer than ``store_retry_s`` -- ends the order where an operator sees it
        (:meth:`_give_up`); a business refusal is raised to the caller."""
        try:
            snap: OrderSnapshot = await self._store(fn, arg)
        except ACTIVITY_FAILED as exc:
            if not give_up or _refused(exc) or not workflow.patched(BOUNDED_FAILURES):
                raise
            snap = await self._give_up(fn, arg, exc)
        self._set(snap)
        return snap

    async def _store(self, fn: Any, arg: object) -> OrderSnapshot:
        # bounded by attempts: with a schedule_to_close instead, the local activity stopped
        # being retried but never resolved (temporalio 1.35, measured here). Each attempt is
        # capped too, so that a hanging one (no answer at all) also ends in about that long.
        within = self._t.store_retry_s
        snap: OrderSnapshot = await workflow.execute_local_activity_method(
            fn, arg, start_to_close_timeout=timedelta(seconds=min(15.0, max(1.0, within / 8))),
            retry_policy=retries_within(LOCAL_RETRY, within))
        return snap

    async def _give_up(self, fn: Any, arg: object, exc: BaseException) -> OrderSnapshot:
        """The visible end of a step that failed for good (logged at ERROR: the alert). Before
        the order was accepted: REJECTED with nothing held (``internal_error``, or
        ``shard_unavailable`` after transient failures). After: STUCK with its hold, for an
        operator (reports that could not be booked stay in the gateway's record; the operator
        resolves with the venue's executions). When even that cannot be written the workflow
        fails -- listed by Temporal as failed, its OrderState STUCK -- and a late venue report
        starts a new run of it."""
        reason = f"{getattr(fn, '__name__', fn)} failed: {_describe(exc)}"[:400]
        workflow.logger.error("order %s: %s", self._inp.order_id, reason)
        if self._snap is None:
            if not isinstance(arg, AcceptOrderInput):
                raise exc
            code = INTERNAL_ERROR if is_internal(_cause(exc)) else "shard_unavailable"
            try:
                return await self._store(OrderActivities.reject_unaccepted,
                                         RejectUnacceptedInput(arg, code, reason))
            except ACTIVITY_FAILED as again:
                raise ApplicationError(f"order could not be accepted or rejected: {reason}",
                                       type=ORDER_FAILED, non_retryable=True) from again
        return await self._mark_stuck(reason, venue=getattr(arg, "routed_venue", None))

    async def _mark_stuck(self, reason: str, venue: str | None = None) -> OrderSnapshot:
        snap = self._snap
        assert snap is not None
        if snap.terminal or snap.state == S.STUCK:
            return snap  # already where an operator looks (or ended): the failure is logged
        self._phase, self._deadline = "stuck", None
        try:
            stuck = await self._store(OrderActivities.transition_order, TransitionInput(
                order_id=snap.order_id, to_state=S.STUCK, actor="system",
                reason=f"{reason}: needs an operator", venue=venue))
        except ACTIVITY_FAILED as exc:
            self._snap = dataclasses.replace(snap, state=S.STUCK.value)
            raise ApplicationError(f"order could not be marked STUCK after: {reason}",
                                   type=ORDER_FAILED, non_retryable=True) from exc
        self._set(stuck)
        return stuck

    def _set(self, snap: OrderSnapshot) -> None:
        self._snap = snap
        self._rebalance |= snap.rebalance
        if not self._direct:  # histories written before DIRECT_SEND: at every change
            self._publish_state()

    def _publish_state(self) -> None:
        """Upsert ``OrderState`` if it changed since the last upsert."""
        if self._snap is not None and self._snap.state != self._published:
            self._published = self._snap.state
            workflow.upsert_search_attributes([ORDER_STATE.value_set(self._published)])


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _cause(exc: BaseException) -> BaseException:
    """What an activity failed with (see :data:`ACTIVITY_FAILED`)."""
    return (exc.cause or exc) if isinstance(exc, ActivityError) else exc


def _refused(exc: BaseException) -> bool:
    """A business refusal (non-retryable, e.g. the gateway's: nothing was sent), not an internal
    error (which says nothing about what was done) or a timeout."""
    cause = _cause(exc)
    return isinstance(cause, ApplicationError) and cause.non_retryable and not is_internal(cause)


def _describe(exc: BaseException) -> str:
    cause = _cause(exc)
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}"
    return f"{type(cause).__name__}: {cause}"


