"""The order-group workflow: one per bracket / oco / oto order, id ``group-<parent order id>``,
on the account's shard task queue. It owns the group (``domain.order_groups``):

1. accepts it in one shard transaction (the parent as any order, with its hold; the legs HELD
   at the broker, holding nothing) -- answered to the API through the ``accepted`` update, as
   the order workflow's accept is (update-with-start: a retried POST gets the same group);
2. bracket / oto: runs the entry as its own order workflow (a child, id = the order id: the
   gateway signals venue reports to it) and waits for its end; then activates the exits for
   what the entry filled (one transaction: the take-profit -- or an oto's lone stop-loss --
   holds the shares and goes to the venue as its own child order workflow; a stop-loss beside
   a take-profit stays HELD, resized). An entry ending with nothing filled cancels the legs.
   oco: the parent is the take-profit, run at once;
3. while the take-profit works, its fills shrink the HELD stop-loss in the transaction that
   books them (``db.order_groups.after_booking``); when it ends, what is still HELD is canceled.

``cancel`` (the customer canceling the parent or any leg): the group's working order is asked
to cancel (the ``group_cancel`` signal: its workflow sends the venue the cancel), the HELD legs
end CANCELED, and an entry that ends afterwards activates nothing.

UNFINISHED -- the stop-loss trigger: a HELD stop-loss beside a take-profit is meant to fire when
the bid reaches its stop (the broker-side trigger activity that follows quotes, being built on
branch ``trail``: ``domain.trigger`` is there, the activity is not yet); then the group cancels
the take-profit, waits for its end, and routes the stop-loss (market, or limit for a
stop-limit) for what the take-profit did not fill, taking over its share hold. None of that is
here yet: today such a stop-loss stays HELD until the take-profit ends, then it is canceled.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, ChildWorkflowError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import ActivateExitsInput, LoadOrderInput, OrderActivities
    from domain import order_groups as groups
    from domain.orders import (
        AcceptOrderInput,
        OrderRequest,
        OrderSnapshot,
        OrderState,
        OrderTimeouts,
        PlaceOrderInput,
        TransitionInput,
    )
    from sherwood.contracts import ACCOUNT_ID, ORDER_STATE, SHARD_ID, SYMBOL
    from sherwood.faults import retries_within
    from workflows.order import LOCAL_RETRY, OrderWorkflow

S = OrderState


@workflow.defn(name="OrderGroup")
class OrderGroupWorkflow:
    @workflow.init
    def __init__(self, inp: PlaceOrderInput) -> None:
        self._inp = inp
        self._t = inp.timeouts or OrderTimeouts()
        self._parent: OrderSnapshot | None = None
        self._cancel = False  # the customer asked to cancel the group
        self._cancel_done = False  # ... and the request has been carried out
        self._working: ChildWorkflowHandle[OrderWorkflow, OrderSnapshot] | None = None
        self._signalled: set[str] = set()
        self._done = False

    @workflow.update
    async def accepted(self, request_hash: str) -> OrderSnapshot:
        """The parent once the group is accepted (or rejected), as the order workflow's."""
        await workflow.wait_condition(lambda: self._parent is not None)
        assert self._parent is not None
        return self._parent

    @accepted.validator
    def _validate_accepted(self, request_hash: str) -> None:
        if request_hash != self._inp.request_hash:
            raise ApplicationError("this client_order_id was used for a different order",
                                   type="idempotency_conflict", non_retryable=True)

    @workflow.update
    async def cancel(self) -> OrderSnapshot:
        """Cancel the group's open orders: answered once the working order was asked to cancel
        and the HELD legs are canceled."""
        self._cancel = True
        await workflow.wait_condition(lambda: self._cancel_done)
        assert self._parent is not None
        return self._parent

    @cancel.validator
    def _validate_cancel(self) -> None:
        if self._done:
            raise ApplicationError("the order group has ended", type="not_cancelable",
                                   non_retryable=True)

    @workflow.run
    async def run(self, inp: PlaceOrderInput) -> OrderSnapshot:
        g = groups.parse_group_request(inp.request)  # validated by the API: pure, deterministic
        self._parent = parent = await self._store(OrderActivities.accept_order, AcceptOrderInput(
            order_id=inp.order_id, account_id=inp.account_id, request=g.parent.to_wire(),
            request_hash=inp.request_hash, actor=inp.actor, collar=inp.collar,
            day_ttl_s=inp.day_ttl_s, group=inp.request))
        if parent.terminal or parent.duplicate:
            self._done = True
            return parent
        try:
            if g.order_class == "oco":  # the parent is the take-profit: it works at once
                await self._follow(parent, g.parent)
            else:
                await self._entry_then_exits(g, parent)
            await self._end_held_legs(g, "the group's working order ended")
        finally:
            self._done = self._cancel_done = True
        return self._parent

    async def _entry_then_exits(self, g: groups.GroupRequest, parent: OrderSnapshot) -> None:
        entry = await self._follow(parent, g.parent)
        if entry is None:
            return
        filled = "0" if self._cancel else entry.filled_qty
        legs = await workflow.execute_local_activity_method(
            OrderActivities.activate_exits, ActivateExitsInput(parent.order_id, filled),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=retries_within(LOCAL_RETRY, self._t.store_retry_s))
        for leg in legs:
            if leg.state == S.FUNDS_HELD:  # the take-profit, or an oto's lone stop-loss
                which = groups.TAKE_PROFIT if leg.order_id == groups.leg_id(
                    parent.order_id, groups.TAKE_PROFIT) else groups.STOP_LOSS
                await self._follow(leg, g.leg_request(which, Decimal(leg.qty)))

    async def _follow(self, snap: OrderSnapshot, req: OrderRequest) -> OrderSnapshot | None:
        """Run one order of the group as its own order workflow (a child, id = the order id) and
        wait for its end, carrying out a cancel of the group meanwhile. None: its workflow
        failed (the order is where an operator sees it)."""
        inp = self._inp
        self._working = handle = await workflow.start_child_workflow(
            OrderWorkflow.run, PlaceOrderInput(
                order_id=snap.order_id, account_id=snap.account_id, shard=inp.shard,
                request=dict(req.to_wire()), request_hash="", actor=inp.actor, collar=inp.collar,
                timeouts=self._t, day_ttl_s=inp.day_ttl_s, snapshot=snap,
                gateway_queue=inp.gateway_queue),
            id=snap.order_id, task_queue=workflow.info().task_queue,
            # an order lives on whatever happens to its group: its funds are never left held
            # with no workflow
            parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(ORDER_STATE, snap.state), SearchAttributePair(SYMBOL, snap.symbol),
                SearchAttributePair(ACCOUNT_ID, snap.account_id),
                SearchAttributePair(SHARD_ID, inp.shard)]))
        while not handle.done():
            await workflow.wait_condition(
                lambda: handle.done() or (self._cancel and not self._cancel_done))
            if self._cancel and not self._cancel_done:
                await self._carry_out_cancel()
        self._working = None
        try:
            done: OrderSnapshot = handle.result()
        except ChildWorkflowError as exc:
            workflow.logger.error("order %s of group %s failed: %s", snap.order_id,
                                  inp.order_id, exc.cause or exc)
            return None
        if snap.order_id == inp.order_id:
            self._parent = done
        return done

    async def _carry_out_cancel(self) -> None:
        if self._working is not None and self._working.id not in self._signalled:
            self._signalled.add(self._working.id)
            await self._working.signal(OrderWorkflow.group_cancel)
        self._cancel_done = True

    async def _end_held_legs(self, g: groups.GroupRequest, reason: str) -> None:
        """Cancel the legs still HELD at the broker (nothing is held for them: no money moves)."""
        for leg in g.legs:
            oid = groups.leg_id(self._inp.order_id, leg)
            snap = await self._store(OrderActivities.load_order, LoadOrderInput(oid))
            if snap.state == S.HELD:
                await self._store(OrderActivities.finish_order, TransitionInput(
                    order_id=oid, to_state=S.CANCELED, reason=reason,
                    actor="customer" if self._cancel else "system"))

    async def _store(self, fn: object, arg: object) -> OrderSnapshot:
        snap: OrderSnapshot = await workflow.execute_local_activity_method(
            fn, arg, start_to_close_timeout=timedelta(seconds=15),  # type: ignore[call-overload]
            retry_policy=retries_within(LOCAL_RETRY, self._t.store_retry_s))
        return snap
