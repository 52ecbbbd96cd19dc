"""The order workflow's cancel/replace (the ``cancel-replace`` and ``replace-deadline``
patches): the replace recorded in one shard transaction (the original PENDING_REPLACE, the
replacement ROUTED with its extra hold) and the customer answered before the
OrderCancelReplaceRequest is sent; a trailing stop waiting for its trigger is replaced at the
broker (nothing sent); once replaced, the replacement's own workflow is started as a child left
running when this one ends.

A mixin of ``OrderWorkflow`` (``workflows.order``; see ``workflows.order_base`` for the chain).
Deliberately not here: whether a replace is allowed and what it holds (``domain.order_replace``,
``activities.orders``), and the replace's deadline handling (``workflows.order_venue``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import LoadOrderInput, OrderActivities
    from domain.order_replace import ReplaceRecorded
    from domain.orders import OrderSnapshot, PlaceOrderInput, ReplaceInput, RequestReplaceInput
    from sherwood.contracts import ACCOUNT_ID, ORDER_STATE, SHARD_ID, SYMBOL
    from sherwood.faults import INTERNAL_ERROR, retries_within
    from workflows.order_base import (
        ACTIVITY_FAILED,
        CANCEL_REPLACE,
        LOCAL_RETRY,
        REPLACE_DEADLINE,
        _cause,
        _describe,
        _refused,
    )
    from workflows.order_routing import OrderRouting


class OrderReplaces(OrderRouting):
    """Cancel/replace of the order (see the module docstring)."""

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
        # OrderWorkflow.run (this is one of its mixins: workflows.order imports this module)
        run = getattr(type(self), "run")  # noqa: B009 (typed Any: the class is not importable here)
        await workflow.start_child_workflow(
            run, PlaceOrderInput(
                order_id=order_id, account_id=snap.account_id, shard=inp.shard, request=request or {},
                request_hash="", actor=inp.actor, collar=inp.collar, timeouts=self._t,
                day_ttl_s=inp.day_ttl_s, snapshot=snap, gateway_queue=inp.gateway_queue),
            id=order_id, task_queue=info.task_queue, parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(ORDER_STATE, snap.state), SearchAttributePair(SYMBOL, snap.symbol),
                SearchAttributePair(ACCOUNT_ID, snap.account_id),
                SearchAttributePair(SHARD_ID, inp.shard)]))
