"""The order workflow's routing of an accepted order: filled by the firm (a fraction only, the
``fractional`` patch), or sent to a venue -- over the gateway's direct link in the same workflow
task, else through the gateway's ``send_new_order`` activity within the routing deadline (a
customer cancel taken while it tries, the order abandoned when no venue took it) -- and the move
to ROUTED booked with the venue's first answers.

A mixin of ``OrderWorkflow`` (``workflows.order``; see ``workflows.order_base`` for the chain).
Deliberately not here: waiting for the open or a trigger before routing (``workflows.order``,
``workflows.trailing``) and the deadlines after it (``workflows.order_venue``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimedOut

with workflow.unsafe.imports_passed_through():
    from activities.orders import (
        ApplyReportsInput,
        DirectAck,
        DirectSendInput,
        HouseFillInput,
        OrderActivities,
    )
    from domain.execution import VenueAck, VenueOrder
    from domain.fractional import house_only, venue_qty
    from domain.orders import TransitionInput
    from workflows.order_base import (
        ACTIVITY_FAILED,
        BOUNDED_FAILURES,
        FRACTIONAL,
        GATEWAY_RETRY,
        ORDER_FAILED,
        ROUTED_WITH_FIRST_ANSWERS,
        ROUTING_DEADLINE,
        S,
        _cause,
        _describe,
        _opt,
        _refused,
    )
    from workflows.order_venue import VenueTimeouts


class OrderRouting(VenueTimeouts):
    """The send of an accepted order (see the module docstring)."""

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
            pending = list(self._reports)  # what the direct send books with the ack, if it does
            if self._direct:
                # In this workflow task, over the gateway's direct link: no activity round trips
                # through the server. None (no link, down, slow) or a failure of our own: the
                # gateway's activity sends it, safe because a ClOrdID goes to a venue once, ever.
                try:
                    ack = await workflow.execute_local_activity_method(
                        OrderActivities.send_new_order_direct,
                        DirectSendInput(order=order, pending=pending, seen=sorted(self._seen)),
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
        if isinstance(ack, DirectAck) and ack.booked is not None:
            # The direct send booked the move to ROUTED with the venue's first answers and the
            # reports pending when it was scheduled, in its own local activity. No patch: a
            # history written before it recorded a bare ack here (booked None), and replays the
            # apply_reports step below, as written.
            # Signals taken while it ran stay for the main loop, but for copies of its reports.
            done = {r.key for r in ack.reports + pending}
            for r in ack.reports:
                self._first_time(r)
            self._reports = [r for r in self._reports if r.key not in done]
            self._set(ack.booked)
        elif self._direct or workflow.patched(ROUTED_WITH_FIRST_ANSWERS):
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
                self._take_report(r)  # as the execution_report signal does
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
