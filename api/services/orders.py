"""Placing, reading and canceling orders. Every write goes to the order's workflow (Temporal);
reads come from the account's shard.

Idempotency: the order id is derived from (account, client_order_id), and the workflow id is the
order id, so a retried POST reaches the same workflow (update-with-start, USE_EXISTING) and gets
the same order; the same client_order_id with a different body is refused (422).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.admission import Admission, Slot
from api.errors import ApiError
from db import sql
from db.engines import reading
from db.router import ShardRouter
from domain.admission import keeps_slot
from domain.alpaca import order_at_accept, order_object
from domain.errors import DomainError
from domain.order_groups import GroupRequest, is_group, parse_group_request
from domain.order_replace import parse_replace
from domain.order_row import OrderRow
from domain.orders import (
    OPEN_STATUSES,
    TERMINAL,
    OrderRequest,
    OrderSnapshot,
    OrderTimeouts,
    PlaceOrderInput,
    ReplaceInput,
    parse_order_request,
)
from sherwood import metrics
from sherwood.contracts import (
    ACCOUNT_ID,
    GROUP_WORKFLOW_PREFIX,
    ORDER_STATE,
    SHARD_ID,
    SYMBOL,
    shard_task_queue,
)
from sherwood.faults import INTERNAL_ERROR, sent_until_taken
from sherwood.settings import Settings
from workflows.order import OrderWorkflow
from workflows.order_group import OrderGroupWorkflow

MAX_LIST_LIMIT = 500  # Alpaca's: a larger list limit is clamped to it
ORDER_NS = uuid.UUID("0b5e6d3a-7c1f-4e8e-9a4b-2d6f8c1e0a57")
# Alpaca answers 403 for what the account may not do now; 422 for what is wrong with the order.
FORBIDDEN_CODES = {"insufficient_buying_power", "insufficient_qty", "trading_blocked", "account_close_only",
                   "symbol_halted",
                   "symbol_blocked", "symbol_close_only", "pattern_day_trader", "market_closed",
                   "auction_window_closed",
                   "shard_halted"}


def order_id_for(account_id: uuid.UUID, client_order_id: str) -> uuid.UUID:
    return uuid.uuid5(ORDER_NS, f"{account_id}:{client_order_id}")


def timeouts(settings: Settings) -> OrderTimeouts:
    return OrderTimeouts(ack_s=settings.venue_ack_timeout_s, cancel_s=settings.venue_cancel_timeout_s,
                         status_s=settings.venue_status_timeout_s,
                         replace_s=settings.venue_replace_timeout_s,
                         expire_grace_s=settings.day_expiry_grace_s,
                         route_market_s=settings.venue_route_market_timeout_s,
                         route_limit_s=settings.venue_route_limit_timeout_s,
                         store_retry_s=settings.order_store_retry_s,
                         gateway_retry_s=settings.order_gateway_retry_s,
                         open_wait_max_s=settings.queued_open_wait_max_s,
                         market_clock_offset_s=settings.market_clock_offset_s,
                         trigger_heartbeat_s=settings.trigger_heartbeat_timeout_s)


class OrderService:
    def __init__(self, router: ShardRouter, temporal: Client | None, settings: Settings,
                 admission: Admission | None = None) -> None:
        self.router = router
        self.temporal = temporal
        self.settings = settings
        self.admission = admission or Admission(None)

    def _client(self) -> Client:
        if self.temporal is None:
            raise ApiError(503, "temporal_unavailable", "order processing is not configured")
        return self.temporal

    async def place(self, account_id: uuid.UUID, body: Mapping[str, object]) -> dict[str, Any]:
        group: GroupRequest | None = None
        try:
            if is_group(body):  # bracket, oco, oto: the group's own workflow
                group = parse_group_request(body)
                req = group.parent
            else:
                req = parse_order_request(body)
        except DomainError as exc:
            raise ApiError(422, exc.code, exc.message, code=42210000) from exc
        client_order_id = req.client_order_id or str(uuid.uuid4())
        order_id = str(order_id_for(account_id, client_order_id))
        wire: dict[str, object] = {**(group or req).to_wire(), "client_order_id": client_order_id}
        request_hash = (group or req).hash()
        shard = await self.router.shard_for(account_id)
        # admission before anything is started or held; the slot stays taken while the order
        # is in transit (to the answer, and on until it rests or ends if it goes to a venue now)
        async with self.admission.admit(shard, order_id) as slot:
            return await self._place(account_id, shard, order_id, req, group, wire, request_hash,
                                     slot)

    async def _place(self, account_id: uuid.UUID, shard: int, order_id: str, req: OrderRequest,
                     group: GroupRequest | None, wire: dict[str, object],
                     request_hash: str, slot: Slot) -> dict[str, Any]:
        inp = PlaceOrderInput(
            order_id=order_id, account_id=str(account_id), shard=shard, request=wire,
            request_hash=request_hash, collar=str(self.settings.market_order_collar),
            timeouts=timeouts(self.settings), day_ttl_s=self.settings.day_order_ttl_s,
            gateway_queue=self.settings.gateway_task_queue)
        attrs = TypedSearchAttributes([
            SearchAttributePair(ORDER_STATE, "PENDING"), SearchAttributePair(SYMBOL, req.symbol),
            SearchAttributePair(ACCOUNT_ID, str(account_id)), SearchAttributePair(SHARD_ID, shard)])
        sent = asyncio.get_running_loop().time()
        deadline = sent + self.settings.order_accept_timeout_s
        delay = 0.1
        while True:
            try:
                # one operation object per attempt (it carries the attempt's outcome)
                # bounded: an accept that keeps failing is ended by the workflow (REJECTED or
                # STUCK), later than the customer should wait for an answer
                remaining = max(0.1, deadline - asyncio.get_running_loop().time())
                start: Any
                if group is not None:
                    start = WithStartWorkflowOperation(
                        OrderGroupWorkflow.run, inp, id=GROUP_WORKFLOW_PREFIX + order_id,
                        task_queue=shard_task_queue(shard),
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
                    update: Any = OrderGroupWorkflow.accepted
                else:
                    start = WithStartWorkflowOperation(
                        OrderWorkflow.run, inp, id=order_id, task_queue=shard_task_queue(shard),
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=attrs)
                    update = OrderWorkflow.accepted
                snap: OrderSnapshot = await asyncio.wait_for(
                    self._client().execute_update_with_start_workflow(
                        update, request_hash, start_workflow_operation=start),
                    remaining)
                break
            except TimeoutError as exc:
                raise _pending() from exc
            except WorkflowUpdateFailedError as exc:
                raise _update_error(exc) from exc
            except WorkflowAlreadyStartedError:
                # the workflow of this client_order_id already finished: the database answers
                return await self._existing(account_id, shard, order_id, request_hash)
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
                if isinstance(exc, RPCError) and exc.status == RPCStatusCode.ALREADY_EXISTS:
                    return await self._existing(account_id, shard, order_id, request_hash)
                # the order's worker is restarting (workflow task failed/timed out): same id,
                # same order, so retrying is safe; past the deadline the client retries
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise _pending() from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        metrics.ORDER_ACCEPT.observe(asyncio.get_running_loop().time() - sent)
        if snap.reject_code and S_REJECTED(snap):
            raise _rejected(snap.order_id, snap.reject_code, snap.reject_reason)
        if not snap.duplicate and keeps_slot(snap.state, req.type, queued_until=snap.queued_until):
            slot.keep()  # on its way to a venue: its shard gives the slot back (domain.admission)
        # the order as accepted (no read: the accept returned it); a duplicate is read (and its
        # request checked) as it is now, and so is a group (its legs were written with it)
        order = (None if group is not None else order_at_accept(snap, req)) or \
            await self._existing(account_id, shard, snap.order_id, request_hash)
        if snap.warnings:
            order["warnings"] = snap.warnings
        return order

    async def _existing(self, account_id: uuid.UUID, shard: int, order_id: str,
                        request_hash: str) -> dict[str, Any]:
        async with reading(self.router.engine(shard)) as conn:
            row = (await conn.execute(text("SELECT * FROM orders WHERE id = :id AND account_id = :a"),
                                      {"id": uuid.UUID(order_id), "a": account_id})).mappings().one_or_none()
        if row is None:
            raise ApiError(409, "order_in_flight", "the order is still being created; retry")
        if row["request_hash"] != request_hash:
            raise ApiError(422, "idempotency_conflict",
                           "this client_order_id was used for a different order", code=42210000)
        if (row["state"] in ("REJECTED", "FAILED") and row["reject_code"]
                and row["reject_code"] not in REJECTED_AFTER_ACCEPT):
            # a retry of a refused request (e.g. after a 504 order_pending) is answered as the
            # request was: the same refusal, not the refused order as if it had been placed
            raise _rejected(order_id, row["reject_code"], row["reject_reason"])
        return (await self._nest(shard, [row]))[0]

    async def _nest(self, shard: int, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """The order objects of ``rows``, each group parent with its legs (one more read when
        there is any)."""
        parents = [r["id"] for r in rows if r["order_class"] != "simple" and r["parent_id"] is None]
        legs: dict[uuid.UUID, list[OrderRow]] = {}
        if parents:
            async with reading(self.router.engine(shard)) as conn:
                found = (await conn.execute(text(
                    "SELECT * FROM orders WHERE parent_id = ANY(:p) ORDER BY leg DESC"),
                    {"p": parents})).mappings().all()
            for leg in found:
                legs.setdefault(leg["parent_id"], []).append(OrderRow.from_mapping(dict(leg)))
        return [order_object(OrderRow.from_mapping(r), legs.get(r["id"], [])
                             if r["id"] in parents else None) for r in rows]

    async def _row(self, shard: int, order_id: str) -> sql.Row:
        async with reading(self.router.engine(shard)) as conn:
            return await sql.one(conn, "SELECT * FROM orders WHERE id = :id", {"id": uuid.UUID(order_id)})

    async def get(self, account_id: uuid.UUID, order_id: str) -> dict[str, Any]:
        try:
            oid = uuid.UUID(order_id)
        except ValueError:
            raise ApiError(404, "not_found", "order not found", code=40410000) from None
        shard = await self.router.shard_for(account_id)
        async with reading(self.router.engine(shard)) as conn:
            row = (await conn.execute(text("SELECT * FROM orders WHERE id = :id AND account_id = :a"),
                                      {"id": oid, "a": account_id})).mappings().one_or_none()
        if row is None:
            raise ApiError(404, "not_found", "order not found", code=40410000)
        return (await self._nest(shard, [row]))[0]

    async def get_by_client_id(self, account_id: uuid.UUID, client_order_id: str) -> dict[str, Any]:
        shard = await self.router.shard_for(account_id)
        async with reading(self.router.engine(shard)) as conn:
            row = (await conn.execute(
                text("SELECT * FROM orders WHERE account_id = :a AND client_order_id = :c"),
                {"a": account_id, "c": client_order_id})).mappings().one_or_none()
        if row is None:
            raise ApiError(404, "not_found", "order not found", code=40410000)
        return (await self._nest(shard, [row]))[0]

    async def list_orders(
        self, account_id: uuid.UUID, *, status: str = "open", limit: int = 50,
        after: datetime | None = None, until: datetime | None = None, direction: str = "desc",
        symbols: list[str] | None = None, side: str | None = None, nested: bool = False,
    ) -> list[dict[str, Any]]:
        """The account's orders, newest first by default; ``limit`` is clamped to
        :data:`MAX_LIST_LIMIT`. ``nested`` (Alpaca): the legs of a group are not listed on their
        own but under their parent's ``legs``, and a group is open while any of its orders is."""
        shard = await self.router.shard_for(account_id)
        where = ["account_id = :a"]
        params: dict[str, Any] = {"a": account_id, "n": max(1, min(limit, MAX_LIST_LIMIT))}
        terminal = [s.value for s in TERMINAL]
        open_leg = ("EXISTS (SELECT 1 FROM orders l WHERE l.parent_id = orders.id "
                    "AND l.state <> ALL(:terminal))")
        if nested:
            where.append("parent_id IS NULL")
        if status == "open":
            where.append(f"(state <> ALL(:terminal) OR {open_leg})" if nested
                         else "state <> ALL(:terminal)")
            params["terminal"] = terminal
        elif status == "closed":
            where.append(f"(state = ANY(:terminal) AND NOT {open_leg})" if nested
                         else "state = ANY(:terminal)")
            params["terminal"] = terminal
        if after is not None:
            where.append("created_at > :after")
            params["after"] = after
        if until is not None:
            where.append("created_at < :until")
            params["until"] = until
        if symbols:
            where.append("symbol = ANY(:symbols)")
            params["symbols"] = symbols
        if side:
            where.append("side = :side")
            params["side"] = side
        order = "DESC" if direction == "desc" else "ASC"
        query = f"SELECT * FROM orders WHERE {' AND '.join(where)} ORDER BY created_at {order} LIMIT :n"
        async with reading(self.router.engine(shard)) as conn:
            rows = (await conn.execute(text(query), params)).mappings().all()
        if nested:
            return await self._nest(shard, rows)
        return [alpaca_order(r) for r in rows]

    async def cancel(self, account_id: uuid.UUID, order_id: str) -> dict[str, Any]:
        order = await self.get(account_id, order_id)  # 404 for another account's order
        # a group's parent is open while any of its orders is (a filled entry, its exits live)
        if order["status"] not in OPEN_STATUSES and not any(
                leg["status"] in OPEN_STATUSES for leg in order["legs"] or ()):
            raise ApiError(422, "not_cancelable", f"order is {order['status']} and cannot be canceled",
                           code=42210000)
        try:
            if order["order_class"] != "simple":
                # a group's order: the group cancels its open orders (Alpaca: canceling the
                # parent or a leg cancels the group)
                group = order_id if order["legs"] is not None else _parent_of(order)
                handle = self._client().get_workflow_handle(GROUP_WORKFLOW_PREFIX + group)
                await sent_until_taken(
                    lambda: handle.execute_update(OrderGroupWorkflow.cancel),
                    asyncio.get_running_loop().time() + self.settings.order_accept_timeout_s)
            else:
                await self._update(account_id, order, OrderWorkflow.cancel)
        except WorkflowUpdateFailedError as exc:
            raise _update_error(exc) from exc
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # The workflow ended since the read above. It may have ended by this very cancel: a
            # workflow task that ran it (committed CANCELED) but whose completion the server
            # refused drops the update, and the update sent again finds the workflow gone.
            # Canceled is what was asked: answered as done; any other end is the refusal.
            now = await self.get(account_id, order_id)
            if now["status"] == "canceled":
                return now
            why = ("the order cannot take a cancel right now: retry"
                   if now["status"] in OPEN_STATUSES else
                   f"order is {now['status']} and cannot be canceled")
            raise ApiError(422, "not_cancelable", why, code=42210000) from exc
        return await self.get(account_id, order_id)

    async def _update(self, account_id: uuid.UUID, order: dict[str, Any], update: Any,
                      *args: Any) -> Any:
        """Run a workflow update of the order. A replacement the venue has just made working
        gets its workflow from the original's right after that commit: until then (at most
        ``order_accept_timeout_s``) the update is retried; a replacement the venue has not
        answered yet has none to update (422 ``pending_replace``). An update the server
        dropped because the workflow task carrying it failed (:func:`update_dropped`) is sent
        again, the same one, until the same deadline."""
        deadline = asyncio.get_running_loop().time() + self.settings.order_accept_timeout_s
        while True:
            handle = self._client().get_workflow_handle(order["id"])
            try:
                return await sent_until_taken(functools.partial(handle.execute_update, update, *args),
                                              deadline)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND or not order.get("replaces") \
                        or order["status"] not in OPEN_STATUSES:
                    raise
                if order["state"] == "ROUTED":
                    raise ApiError(422, "pending_replace", "this order replaces another and the "
                                   "venue has not confirmed it yet: retry", code=42210000) from exc
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.05)
            order = await self.get(account_id, order["id"])

    async def replace(self, account_id: uuid.UUID, order_id: str,
                      body: Mapping[str, object]) -> dict[str, Any]:
        """Cancel/replace a working limit, stop or stop-limit order: the replacement (a new
        order, ``replaces`` the original) once the request is recorded, before the venue
        answers. Bad input, an order that cannot be replaced now, a client_order_id of another
        order: 422 with a code; what the account may not do now (the pre-trade rules of a new
        order, buying power or shares for a bigger replacement): 403. A refusal changes
        nothing."""
        try:
            change = parse_replace(body).to_wire()  # exact decimals, as strings
        except DomainError as exc:
            raise ApiError(422, exc.code, exc.message, code=42210000) from exc
        order = await self.get(account_id, order_id)  # 404 for another account's order
        if order["status"] not in OPEN_STATUSES:
            raise ApiError(422, "not_replaceable", f"order is {order['status']} and cannot be "
                           "replaced", code=42210000)
        if order["order_class"] != "simple":
            raise ApiError(422, "not_replaceable", f"a {order['order_class']} order's orders are "
                           "not replaced here: cancel the group and place a new one", code=42210000)
        new_id = str(uuid.uuid4())
        try:
            await self._update(account_id, order, OrderWorkflow.replace,
                               ReplaceInput(new_order_id=new_id, change=dict(change)))
        except WorkflowUpdateFailedError as exc:
            error = _update_error(exc)
            if error.reason in FORBIDDEN_CODES:
                error = ApiError(403, error.reason, error.message, code=40310000)
            raise error from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ApiError(422, "not_replaceable", "order is no longer open",
                               code=42210000) from exc
            raise
        return await self.get(account_id, new_id)

    async def cancel_all(self, account_id: uuid.UUID) -> list[dict[str, Any]]:
        results = []
        # nested: a group is canceled once, through its parent
        for order in await self.list_orders(account_id, status="open", limit=MAX_LIST_LIMIT,
                                            nested=True):
            try:
                body = await self.cancel(account_id, order["id"])
                results.append({"id": order["id"], "status": 200, "body": body})
            except ApiError as exc:
                results.append({"id": order["id"], "status": exc.status,
                                "body": {"code": exc.code, "message": exc.message, "reason": exc.reason}})
        return results


def _parent_of(order: dict[str, Any]) -> str:
    parent = order.get("parent_id")
    assert parent, "a group's leg names its parent"
    return str(parent)


def alpaca_order(row: sql.Row | Any) -> dict[str, Any]:
    """The Alpaca order object of an ``orders`` row as read."""
    return order_object(OrderRow.from_mapping(row))


# rejections of an order that was accepted (funds held) and then not taken: a retry of its
# request gets the order, as it would have had it waited
REJECTED_AFTER_ACCEPT = frozenset({"symbol_halted", "venue_unavailable", "venue_rejected"})
# an order rejected because we failed (nothing was held): the customer's request was fine
OUR_FAILURES = {INTERNAL_ERROR: 500, "shard_unavailable": 503}


def _rejected(order_id: str, reject_code: str, reject_reason: str | None) -> ApiError:
    """The answer to an order refused at accept: 403 for the account's limits, 500/503 for our
    own failures (their details are for operators), 422 for the rest."""
    status = 403 if reject_code in FORBIDDEN_CODES else OUR_FAILURES.get(reject_code, 422)
    if reject_code in OUR_FAILURES:
        return ApiError(status, reject_code, f"order {order_id} could not be processed and was "
                        "rejected; nothing was held")
    return ApiError(status, reject_code, reject_reason or "order rejected",
                    code=40310000 if status == 403 else 42210000)


def _pending() -> ApiError:
    return ApiError(504, "order_pending", "the order is accepted for processing but not "
                    "confirmed yet; retry with the same client_order_id",
                    headers={"Retry-After": "1"})


def S_REJECTED(snap: OrderSnapshot) -> bool:
    return snap.state in ("REJECTED", "FAILED")


def _update_error(exc: WorkflowUpdateFailedError) -> ApiError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        status = 422
        return ApiError(status, cause.type or "order_error", cause.message, code=42210000)
    return ApiError(500, "internal_error", "order update failed")
