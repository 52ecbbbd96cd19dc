"""The order workflow's shard transactions and the visible end of one that fails for good
(the ``bounded-failures`` patch): REJECTED before the order's hold, STUCK with it, and the
workflow failed only when even that cannot be written.

A mixin of ``OrderWorkflow`` (``workflows.order``; see ``workflows.order_base`` for the chain).
Deliberately not here: which transaction a step runs (its callers decide), business refusals
(raised to the caller unchanged), and the gateway's sends (``OrderCore``).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities, RejectUnacceptedInput
    from domain.orders import AcceptOrderInput, OrderSnapshot, OrderState, TransitionInput
    from sherwood.faults import INTERNAL_ERROR, is_internal, retries_within
    from workflows.order_base import (
        ACTIVITY_FAILED,
        BOUNDED_FAILURES,
        LOCAL_RETRY,
        ORDER_FAILED,
        OrderCore,
        S,
        _cause,
        _describe,
        _refused,
    )


class OrderFailures(OrderCore):
    """Shard transactions with a bounded end (see the module docstring)."""

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

    async def _finish(self, to: OrderState, reason: str, *, actor: str, code: str | None = None) -> None:
        await self._local(OrderActivities.finish_order, TransitionInput(
            order_id=self._inp.order_id, to_state=to, reason=reason, actor=actor, code=code))
