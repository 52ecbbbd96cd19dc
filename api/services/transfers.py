"""ACH transfers: create (a Deposit or Withdrawal workflow per transfer, update-with-start so the
response carries the first step's outcome), list and read (from the account's shard).

Idempotency: an ``Idempotency-Key`` header (or ``client_transfer_id`` in the body) derives the
transfer id, so a retried POST reaches the same workflow; the same key with a different body is
refused (422).

Bounded: the POST answers within ``transfer_accept_timeout_s`` -- the transfer as its first step
left it, 504 ``transfer_pending`` (retry with the same key), or, when the first step failed for
good (the transfer FAILED, nothing moved), 500 ``internal_error`` / 503 ``shard_unavailable``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from db.funding import FundingStore
from db.router import ShardRouter
from domain import calendar
from domain.alpaca import transfer_object
from domain.errors import DomainError
from domain.funding import (
    INCOMING,
    INTERNAL_ERROR,
    OUTGOING,
    SHARD_UNAVAILABLE,
    TransferSnapshot,
    request_hash,
    unstarted_code,
)
from domain.money import AMOUNT_BOUNDS, bounded_decimal, parse_decimal
from sherwood.contracts import backoffice_shard_queue
from sherwood.settings import Settings
from workflows.deposit import DepositWorkflow, TransferFlow, TransferWorkflowInput
from workflows.withdrawal import WithdrawalWorkflow

TRANSFER_NS = uuid.UUID("5d0f1c2e-3b7a-4f51-9e0c-8a2b6d4e1f37")
MAX_TRANSFER_KEY = 128
MAX_LIST_LIMIT = 500  # a larger list limit is clamped to it
# a transfer that failed before anything moved because we failed: the request was fine
OUR_FAILURES = {INTERNAL_ERROR: 500, SHARD_UNAVAILABLE: 503}
# the first step's refusals of the request itself (nothing written): 422
REFUSALS = frozenset({"idempotency_conflict", "amount_out_of_range"})


def workflow_id(transfer_id: str) -> str:
    return f"transfer-{transfer_id}"


class TransferService:
    def __init__(self, router: ShardRouter, temporal: Client | None, settings: Settings) -> None:
        self.router = router
        self.temporal = temporal
        self.settings = settings

    async def create(self, account_id: uuid.UUID, body: Mapping[str, Any],
                     idempotency_key: str | None = None) -> dict[str, Any]:
        direction = str(body.get("direction", "")).upper()
        if direction not in (INCOMING, OUTGOING):
            raise ApiError(422, "invalid_direction", "direction must be INCOMING or OUTGOING", code=42210000)
        ttype = str(body.get("transfer_type", "ach")).lower()
        if ttype != "ach":
            raise ApiError(422, "invalid_transfer_type", "only ach transfers are supported", code=42210000)
        try:
            # bounded before anything else is done with it: at most AMOUNT_BOUNDS, 2 decimals
            amount = bounded_decimal(body.get("amount"), AMOUNT_BOUNDS, field="amount")
        except DomainError as exc:
            raise ApiError(422, exc.code, exc.message, code=42210000) from exc
        if self.temporal is None:
            raise ApiError(503, "temporal_unavailable", "funding is not configured")
        key = idempotency_key or body.get("client_transfer_id")
        if key is not None and not 0 < len(str(key)) <= MAX_TRANSFER_KEY:
            raise ApiError(422, "invalid_idempotency_key",
                           f"Idempotency-Key / client_transfer_id must be 1..{MAX_TRANSFER_KEY} characters",
                           code=42210000)
        tid = str(uuid.uuid5(TRANSFER_NS, f"{account_id}:{key}") if key else uuid.uuid4())
        shard = await self.router.shard_for(account_id)
        s = self.settings
        today = calendar.trade_date(datetime.now(UTC))
        # ACH settles on bank days (the Federal Reserve's calendar, not the NYSE's)
        expected = calendar.next_bank_day(today, s.ach_settle_days)
        settle_at = datetime.combine(expected, time(9, 0), ZoneInfo(calendar.NY)).astimezone(UTC)
        inp = TransferWorkflowInput(
            transfer_id=tid, account_id=str(account_id), shard=shard, direction=direction,
            amount=format(amount, "f"), settle_days=s.ach_settle_days,
            expected_settle_date=expected.isoformat(), settle_at=settle_at.isoformat(),
            business_day_s=s.ach_business_day_s, poll_s=s.ach_poll_interval_s,
            store_retry_s=s.transfer_store_retry_s, step_retry_s=s.transfer_step_retry_s)
        wf = DepositWorkflow.run if direction == INCOMING else WithdrawalWorkflow.run
        start = WithStartWorkflowOperation(
            wf, inp, id=workflow_id(tid), task_queue=backoffice_shard_queue(shard),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        store = FundingStore(self.router.engine(shard))
        try:
            # bounded: a first step that keeps failing is ended by the workflow (FAILED), later
            # than the customer should wait for an answer
            snap: TransferSnapshot = await asyncio.wait_for(
                self.temporal.execute_update_with_start_workflow(
                    TransferFlow.accepted, start_workflow_operation=start),
                s.transfer_accept_timeout_s)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            # (the client turns the cancel of its wait into the latter)
            raise ApiError(504, "transfer_pending",
                           f"transfer {tid} is still being processed: see GET /v2/transfers/"
                           f"{tid}, or retry with the same Idempotency-Key",
                           headers={"Retry-After": "1"}) from exc
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type in OUR_FAILURES:
                raise _failed(tid, cause.type) from exc
            if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
                raise ApiError(422, cause.type, cause.message, code=42210000) from exc
            raise ApiError(500, INTERNAL_ERROR, f"transfer {tid} could not be processed; see "
                           f"GET /v2/transfers/{tid}") from exc
        except (RPCError, WorkflowAlreadyStartedError) as exc:
            if isinstance(exc, RPCError) and exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
            existing = await store.get(tid)  # the workflow already finished: the database answers
            if existing is None:
                raise ApiError(409, "transfer_in_flight", "the transfer is being created; retry") from exc
            snap = existing
        if snap.account_id != str(account_id) or snap.direction != direction or \
                request_hash(snap.direction, amount) != request_hash(direction, parse_decimal(snap.amount)):
            raise ApiError(422, "idempotency_conflict", "this key was used for a different transfer",
                           code=42210000)
        failed = unstarted_code(snap)
        if failed is not None:
            raise _failed(tid, failed)
        got = await store.get_for(account_id, uuid.UUID(tid))
        assert got is not None
        if snap.status == "REJECTED":
            raise ApiError(403, "insufficient_withdrawable_cash", snap.reason or "rejected", code=40310000)
        return transfer_object(got)

    async def list(self, account_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
        shard = await self.router.shard_for(account_id)
        rows = await FundingStore(self.router.engine(shard)).list_for(
            account_id, limit=max(1, min(limit, MAX_LIST_LIMIT)))
        return [transfer_object(r) for r in rows]

    async def get(self, account_id: uuid.UUID, transfer_id: str) -> dict[str, Any]:
        try:
            tid = uuid.UUID(transfer_id)
        except ValueError:
            raise ApiError(404, "not_found", "transfer not found", code=40410000) from None
        shard = await self.router.shard_for(account_id)
        got = await FundingStore(self.router.engine(shard)).get_for(account_id, tid)
        if got is None:
            raise ApiError(404, "not_found", "transfer not found", code=40410000)
        return transfer_object(got)


def _failed(transfer_id: str, code: str) -> ApiError:
    """Our failure before anything moved: the details are for operators (the transfer's reason)."""
    return ApiError(OUR_FAILURES[code], code, f"transfer {transfer_id} could not be processed and "
                    "failed; nothing was moved")
