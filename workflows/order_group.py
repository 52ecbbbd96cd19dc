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

The stop-loss beside a take-profit (bracket, oco) is held at the broker, never at a venue while
its sibling is: it watches the bid (``activities.trigger.watch_trigger``, the broker-side trigger
of trailing stops, with a fixed ``stop`` spec; durable across worker restarts) while the
take-profit works. When the bid reaches its stop, the group cancels the take-profit at the
venue and waits for its end; the transaction that books that end hands the take-profit's
remaining shares to the stop-loss (``db.order_groups.after_booking``), which is then routed as
its own child order workflow (market, or limit at its limit for a stop-limit) for what the
take-profit did not fill. A take-profit that filled everything first has canceled the
stop-loss (nothing left to route).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import (
        ActivateExitsInput,
        LoadOrderInput,
        OrderActivities,
        RejectUnacceptedInput,
    )
    from activities.trigger import TriggerActivities, TriggerFired, WatchTriggerInput
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
    from domain.trigger import TriggerSpec
    from sherwood.contracts import ACCOUNT_ID, ORDER_STATE, SHARD_ID, SYMBOL, trigger_task_queue
    from sherwood.faults import INTERNAL_ERROR, is_internal, retries_within
    from workflows.order import (
        ACTIVITY_FAILED,
        LOCAL_RETRY,
        OrderWorkflow,
        _cause,
        _describe,
        _refused,
    )
    from workflows.trailing import WATCH_MAX, WATCH_RETRY

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
        self._fired = False  # the stop-loss's trigger fired
        self._refused: ApplicationError | None = None  # the accept's refusal (nothing written)
        self._done = False

    @workflow.update
    async def accepted(self, request_hash: str) -> OrderSnapshot:
        """The parent once the group is accepted (or rejected), as the order workflow's."""
        await workflow.wait_condition(lambda: self._parent is not None or self._refused is not None)
        if self._refused is not None:
            raise self._refused
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
    async def run(self, inp: PlaceOrderInput) -> OrderSnapshot | None:
        g = groups.parse_group_request(inp.request)  # validated by the API: pure, deterministic
        accept = AcceptOrderInput(
            order_id=inp.order_id, account_id=inp.account_id, request=g.parent.to_wire(),
            request_hash=inp.request_hash, actor=inp.actor, collar=inp.collar,
            day_ttl_s=inp.day_ttl_s, group=inp.request)
        try:
            parent = await self._store(OrderActivities.accept_order, accept)
        except ACTIVITY_FAILED as exc:
            if _refused(exc):
                # nothing was written (e.g. the client_order_id names another order): the
                # caller gets the refusal with its code, and the workflow ends
                cause = _cause(exc)
                assert isinstance(cause, ApplicationError)
                self._refused = ApplicationError(cause.message, type=cause.type, non_retryable=True)
                self._done = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                return None
            # failed for good (an internal error, or the shard out of reach past the retry
            # maximum): the parent ends REJECTED with nothing held, no leg written, as an order's
            # accept does (workflows.order._give_up)
            code = INTERNAL_ERROR if is_internal(_cause(exc)) else "shard_unavailable"
            parent = await self._store(OrderActivities.reject_unaccepted, RejectUnacceptedInput(
                accept, code, f"accept_order failed: {_describe(exc)}"[:400]))
        self._parent = parent
        if parent.terminal or parent.duplicate:
            self._done = True
            return parent
        try:
            if parent.queued_until and not await self._wait_for_open(parent.queued_until):
                self._parent = await self._store(OrderActivities.finish_order, TransitionInput(
                    order_id=parent.order_id, to_state=S.CANCELED, actor="customer",
                    reason="canceled while queued for the open"))
            elif g.order_class == "oco":  # the parent is the take-profit: it works at once
                await self._take_profit(g, parent, g.parent)
            else:
                await self._entry_then_exits(g, parent)
            await self._end_held_legs(g, "the group's working order ended")
        finally:
            self._done = self._cancel_done = True
        return self._parent

    async def _wait_for_open(self, queued_until: str) -> bool:
        """The group was accepted outside the session: wait (a durable timer) until the open,
        as a queued order does (``workflows.order``: business clock, ``open_wait_max_s`` cap).
        False: the customer canceled meanwhile (nothing was sent)."""
        now = workflow.now() + timedelta(seconds=self._t.market_clock_offset_s)
        wait = max(timedelta(0), datetime.fromisoformat(queued_until) - now)
        if self._t.open_wait_max_s is not None:
            wait = min(wait, timedelta(seconds=self._t.open_wait_max_s))
        if wait > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._cancel, timeout=wait,
                                              timeout_summary="order group queued for the open")
            except TimeoutError:
                pass
        return not self._cancel

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
            if leg.state != S.FUNDS_HELD:
                continue
            if leg.order_id == groups.leg_id(parent.order_id, groups.TAKE_PROFIT):
                await self._take_profit(g, leg, g.leg_request(groups.TAKE_PROFIT, Decimal(leg.qty)))
            else:  # an oto's lone stop-loss: no sibling, it waits at the venue as a stop order
                await self._follow(leg, g.leg_request(groups.STOP_LOSS, Decimal(leg.qty)))

    async def _take_profit(self, g: groups.GroupRequest, snap: OrderSnapshot,
                           req: OrderRequest) -> None:
        """Run the take-profit while its HELD stop-loss (if any) watches the bid. When the
        stop-loss fires, the take-profit is canceled at the venue; once it has ended, the
        stop-loss (which took over its shares in the transaction that ended it) is routed for
        what the take-profit did not fill."""
        stop_id = groups.leg_id(self._inp.order_id, groups.STOP_LOSS) if g.stop_price else None
        await self._follow(snap, req, stop_id=stop_id, trigger=groups.stop_trigger(g) if stop_id else None)
        if not self._fired or stop_id is None or self._cancel:
            return
        stop = await self._store(OrderActivities.load_order, LoadOrderInput(stop_id))
        if stop.state == S.FUNDS_HELD:
            await self._follow(stop, groups.stop_route(g, Decimal(stop.qty)))

    async def _follow(self, snap: OrderSnapshot, req: OrderRequest, *, stop_id: str | None = None,
                      trigger: TriggerSpec | None = None) -> OrderSnapshot | None:
        """Run one order of the group as its own order workflow (a child, id = the order id) and
        wait for its end, carrying out a cancel of the group meanwhile. ``trigger``: the HELD
        stop-loss ``stop_id`` watches it meanwhile (``activities.trigger``); when it fires, this
        order is canceled at the venue. None: its workflow failed (the order is where an
        operator sees it)."""
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
        watch = None
        if trigger is not None and stop_id is not None and not self._cancel:
            watch = workflow.start_activity_method(
                TriggerActivities.watch_trigger, WatchTriggerInput(order_id=stop_id, spec=trigger.to_wire()),
                task_queue=trigger_task_queue(inp.shard), start_to_close_timeout=WATCH_MAX,
                heartbeat_timeout=timedelta(seconds=self._t.trigger_heartbeat_s),
                retry_policy=WATCH_RETRY, summary="stop-loss: following quotes")
        while not handle.done():
            watching = watch
            await workflow.wait_condition(
                lambda: handle.done() or (self._cancel and not self._cancel_done)
                or (watching is not None and watching.done()))  # noqa: B023 (awaited here)
            if self._cancel and not self._cancel_done:
                await self._carry_out_cancel()
            if watch is not None and (watch.done() or self._cancel):
                done_watch, watch = watch, None
                if not done_watch.done():
                    done_watch.cancel()
                elif await self._stop_fired(done_watch, stop_id):
                    self._fired = True
                    await self._cancel_working()  # the take-profit goes; the stop-loss follows
        if watch is not None:
            watch.cancel()  # the take-profit ended first: the stop-loss no longer watches
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
        await self._cancel_working()
        self._cancel_done = True

    async def _cancel_working(self) -> None:
        working = self._working
        if working is not None and not working.done() and working.id not in self._signalled:
            self._signalled.add(working.id)
            try:
                await working.signal(OrderWorkflow.group_cancel)
            except Exception as exc:  # it ended meanwhile: nothing left to cancel
                workflow.logger.warning("cancel of %s not delivered: %s", working.id, exc)

    async def _stop_fired(self, watch: workflow.ActivityHandle[TriggerFired | None],
                          stop_id: str | None) -> bool:
        """The stop-loss's watch ended: fired (True), or the stop-loss no longer waits (False:
        the take-profit's fills canceled it), or it failed for good -- then the stop-loss ends
        FAILED where the customer sees it (it held nothing; the take-profit works on)."""
        try:
            return watch.result() is not None
        except ActivityError as exc:
            assert stop_id is not None
            reason = f"the stop-loss trigger could not be followed: {exc.cause or exc}"[:400]
            workflow.logger.error("group %s: %s", self._inp.order_id, reason)
            await self._store(OrderActivities.finish_order, TransitionInput(
                order_id=stop_id, to_state=S.FAILED, reason=reason, actor="system"))
            return False

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
