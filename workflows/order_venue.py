"""The order workflow's watch of the venue: a silent venue (``ack_s`` -> OrderCancelRequest,
``cancel_s`` -> OrderStatusRequest, ``status_s`` -> STUCK), an unanswered cancel/replace
(``replace_s`` -> OrderStatusRequest, then the original STUCK and the replacement REJECTED), the
customer's and the DAY expiry's cancels, and what a venue answer does to those deadlines.

A mixin of ``OrderWorkflow`` (``workflows.order``; see ``workflows.order_base`` for the chain).
It never assumes a fill and never releases funds the venue may still use. Deliberately not here:
booking the answers (``OrderWorkflow._work``) and sending a new order (``workflows.order_routing``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orders import GiveUpReplaceInput, OrderActivities
    from domain.orders import AT_VENUE, OrderState, TransitionInput
    from workflows.order_base import CANCEL_RECORDED_FIRST, MAX_CANCEL_ROUNDS, S
    from workflows.order_failures import OrderFailures


class VenueTimeouts(OrderFailures):
    """Deadlines on the venue's answers, and cancels (see the module docstring)."""

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
