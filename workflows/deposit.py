"""The ACH deposit workflow: one per transfer (id ``transfer-<transfer id>``), on the account's
``backoffice-shard-<n>`` queue, every step a local activity on that shard.

Provisional credit at once (the ``accepted`` update returns it), submit to the bank, wait the ACH
settlement time (``ach_settle_days`` business days; ``business_day_s`` simulates a business day
in seconds), then ask the bank until it answers: settled -> ``deposit_settled``; returned ->
reversal (``deposit_bounced``, cash may go negative -> account restricted, shortfall reported).

The transfer payloads are the domain's (:mod:`domain.funding`); the activities (transfer rows and
ledger in :mod:`db.funding`, the ACH bank behind the :class:`domain.ports.Bank` port, whose
answers are ``settle``/``return``/``hold``) are in :mod:`activities.funding`.

Failures (patch :data:`BOUNDED_FAILURES`): every step's retries are bounded. A first step that
fails for good (an internal error, or transient failures for longer than ``store_retry_s``)
ends the transfer FAILED with nothing moved, which the ``accepted`` update returns; a business
refusal of it (idempotency conflict, an amount the books cannot hold) is what the update raises.
A later step that fails for good (``step_retry_s``) is recorded on the transfer for an operator
and the workflow fails (Temporal lists it as failed), the money where the last step left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimedOut

with workflow.unsafe.imports_passed_through():
    from activities.funding import BankInput, FailUnstartedInput, FinishInput
    from domain.funding import (
        INTERNAL_ERROR,
        SHARD_UNAVAILABLE,
        TransferInput,
        TransferSnapshot,
        unstarted_reason,
    )
    from domain.ports import HOLD, RETURN
    from sherwood.faults import activity_cause as _cause
    from sherwood.faults import describe_failure as _describe
    from sherwood.faults import is_internal, retries_within

LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                          maximum_interval=timedelta(seconds=10))
# Patch ids of the transfer workflows. Every step's retries are bounded; one that fails for good
# ends the transfer FAILED before anything moved, or is recorded for an operator after.
BOUNDED_FAILURES = "transfer-bounded-failures"
TRANSFER_STUCK = "transfer_stuck"  # the workflow fails: a step after money moved needs an operator
TRANSFER_FAILED = "transfer_failed"  # the workflow fails: not even FAILED could be written
# what an awaited local activity raises when it fails (see workflows.order.ACTIVITY_FAILED)
ACTIVITY_FAILED = (ActivityError, ApplicationError, ActivityTimedOut)


@dataclass
class TransferWorkflowInput:
    transfer_id: str
    account_id: str
    shard: int
    direction: str
    amount: str
    settle_days: int = 2
    expected_settle_date: str | None = None
    settle_at: str | None = None  # ISO time the ACH is due (real mode)
    business_day_s: float | None = None  # simulated business day length (tests)
    poll_s: float = 60.0
    store_retry_s: float = 120.0  # the first step's transient failures, retried this long
    step_retry_s: float = 600.0  # a later step's


async def _local(fn: str, arg: object, result_type: type) -> object:
    return await workflow.execute_local_activity(
        fn, arg, result_type=result_type, start_to_close_timeout=timedelta(seconds=30),
        retry_policy=LOCAL_RETRY)


async def _bounded(fn: str, arg: object, result_type: type, within_s: float) -> Any:
    # bounded by attempts (as the order workflow's store steps: a schedule_to_close on a local
    # activity stops its retries without resolving it), each attempt capped too
    return await workflow.execute_local_activity(
        fn, arg, result_type=result_type,
        start_to_close_timeout=timedelta(seconds=min(30.0, max(1.0, within_s / 8))),
        retry_policy=retries_within(LOCAL_RETRY, within_s))


async def wait_for_bank(inp: TransferWorkflowInput, within_s: float | None = None) -> str:
    """Sleep until the ACH is due, then poll the bank until it decides (each poll's failures
    retried for ``within_s`` at most when given, else without end)."""
    if inp.business_day_s is not None:
        await workflow.sleep(timedelta(seconds=inp.settle_days * inp.business_day_s))
    elif inp.settle_at:
        due = datetime.fromisoformat(inp.settle_at)
        delay = (due - workflow.now()).total_seconds()
        if delay > 0:
            await workflow.sleep(timedelta(seconds=delay))
    bank = BankInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount)
    while True:
        outcome = str(await _local("bank_outcome", bank, str) if within_s is None
                      else await _bounded("bank_outcome", bank, str, within_s))
        if outcome != HOLD:
            return outcome
        await workflow.sleep(timedelta(seconds=inp.poll_s))


class TransferFlow:
    """The shape both ACH workflows share: commit the first step, hand the transfer to the bank,
    wait for its answer, then the success or failure step. Subclasses name the activities."""

    START = ""
    SUCCEED = ""
    FAIL = ""
    FAIL_REASON = ""

    def __init__(self) -> None:
        self._snap: TransferSnapshot | None = None
        self._refused: ApplicationError | None = None  # the first step's refusal, for the update
        self._step = ""

    @workflow.update  # ACCEPTED_UPDATE: the method's name
    async def accepted(self) -> TransferSnapshot:
        await workflow.wait_condition(lambda: self._snap is not None or self._refused is not None)
        if self._snap is None:
            assert self._refused is not None
            raise self._refused
        return self._snap

    @workflow.query(name="transfer")
    def transfer(self) -> TransferSnapshot | None:
        return self._snap

    async def _run(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        if workflow.patched(BOUNDED_FAILURES):
            return await self._run_bounded(inp)
        snap = await _local(self.START, TransferInput(
            inp.transfer_id, inp.account_id, inp.direction, inp.amount, inp.expected_settle_date),
            TransferSnapshot)
        assert isinstance(snap, TransferSnapshot)
        self._snap = snap
        if snap.terminal:
            return snap
        await _local("bank_submit", BankInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount),
                     str)
        outcome = await wait_for_bank(inp)
        if outcome == RETURN:
            done = await _local(self.FAIL, FinishInput(inp.transfer_id, self.FAIL_REASON), TransferSnapshot)
        else:
            done = await _local(self.SUCCEED, FinishInput(inp.transfer_id), TransferSnapshot)
        assert isinstance(done, TransferSnapshot)
        self._snap = done
        return done

    async def _run_bounded(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        snap = await self._start(inp)
        self._snap = snap
        if snap.terminal:
            return snap
        bank = BankInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount)
        try:
            await self._do("bank_submit", bank, str, inp.step_retry_s)
            self._step = "bank_outcome"
            outcome = await wait_for_bank(inp, inp.step_retry_s)
            if outcome == RETURN:
                done = await self._do(self.FAIL, FinishInput(inp.transfer_id, self.FAIL_REASON),
                                      TransferSnapshot, inp.step_retry_s)
            else:
                done = await self._do(self.SUCCEED, FinishInput(inp.transfer_id), TransferSnapshot,
                                      inp.step_retry_s)
        except ACTIVITY_FAILED as exc:
            await self._stuck(inp, exc)
        assert isinstance(done, TransferSnapshot)
        self._snap = done
        return done

    async def _do(self, fn: str, arg: object, result_type: type, within_s: float) -> Any:
        self._step = fn
        return await _bounded(fn, arg, result_type, within_s)

    async def _start(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        """The first step, or, when it fails for good, the transfer FAILED with nothing moved
        (``internal_error``; ``shard_unavailable`` after transient failures). A refusal of the
        request ends the workflow with it (the update raises it)."""
        tin = TransferInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount,
                            inp.expected_settle_date)
        try:
            snap: TransferSnapshot = await self._do(self.START, tin, TransferSnapshot, inp.store_retry_s)
            return snap
        except ACTIVITY_FAILED as exc:
            cause = _cause(exc)
            if isinstance(cause, ApplicationError) and cause.non_retryable and not is_internal(cause):
                await self._end_refused(ApplicationError(cause.message, type=cause.type,
                                                         non_retryable=True))
            code = INTERNAL_ERROR if is_internal(cause) else SHARD_UNAVAILABLE
            reason = unstarted_reason(code, f"{self.START} failed: {_describe(exc)}")
            workflow.logger.error("transfer %s: %s; ending it FAILED, nothing moved",
                                  inp.transfer_id, reason)
            try:
                failed: TransferSnapshot = await self._do(
                    "fail_unstarted_transfer", FailUnstartedInput(tin, reason), TransferSnapshot,
                    inp.store_retry_s)
                return failed
            except ACTIVITY_FAILED as again:
                await self._end_refused(ApplicationError(
                    f"transfer {inp.transfer_id} could not be started or marked failed: "
                    f"{_describe(again)}", type=code, non_retryable=True))

    async def _end_refused(self, refused: ApplicationError) -> NoReturn:
        """The update raises ``refused``; then the workflow fails with it (nothing was written,
        or not even FAILED could be)."""
        self._refused = refused
        await workflow.wait_condition(workflow.all_handlers_finished)
        raise ApplicationError(refused.message, type=refused.type if refused.type not in (
            INTERNAL_ERROR, SHARD_UNAVAILABLE) else TRANSFER_FAILED, non_retryable=True)

    async def _stuck(self, inp: TransferWorkflowInput, exc: BaseException) -> NoReturn:
        """A step after money moved failed for good: recorded on the transfer (its events) for an
        operator, logged at ERROR (the alert), and the workflow fails -- listed by Temporal as
        failed. Nothing is reversed or released on a guess: the money stays where it is."""
        reason = (f"{self._step} failed: {_describe(exc)}: needs an operator (the money stays "
                  f"where the last step left it; see docs/operations.md)")[:1000]
        workflow.logger.error("transfer %s: %s", inp.transfer_id, reason)
        try:
            await self._do("flag_transfer", FinishInput(inp.transfer_id, reason), TransferSnapshot,
                           inp.store_retry_s)
        except ACTIVITY_FAILED as again:
            workflow.logger.error("transfer %s: could not record it either: %s", inp.transfer_id,
                                  _describe(again))
        raise ApplicationError(f"transfer {inp.transfer_id}: {reason}", type=TRANSFER_STUCK,
                               non_retryable=True)


@workflow.defn(name="Deposit")
class DepositWorkflow(TransferFlow):
    START, SUCCEED, FAIL, FAIL_REASON = ("start_deposit", "settle_deposit", "bounce_deposit",
                                         "ACH returned (R01)")

    @workflow.init
    def __init__(self, inp: TransferWorkflowInput) -> None:
        super().__init__()

    @workflow.run
    async def run(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        return await self._run(inp)
