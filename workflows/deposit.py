"""The ACH deposit workflow: one per transfer (id ``transfer-<transfer id>``), on the account's
``backoffice-shard-<n>`` queue, every step a local activity on that shard.

Provisional credit at once (the ``accepted`` update returns it), submit to the bank, wait the ACH
settlement time (``ach_settle_days`` business days; ``business_day_s`` simulates a business day
in seconds), then ask the bank until it answers: settled -> ``deposit_settled``; returned ->
reversal (``deposit_bounced``, cash may go negative -> account restricted, shortfall reported).

The transfer payloads are the domain's (:mod:`domain.funding`); the activities (transfer rows and
ledger in :mod:`db.funding`, the ACH bank behind the :class:`domain.ports.Bank` port, whose
answers are ``settle``/``return``/``hold``) are in :mod:`activities.funding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.funding import BankInput, FinishInput
    from domain.funding import TransferInput, TransferSnapshot
    from domain.ports import HOLD, RETURN

LOCAL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                          maximum_interval=timedelta(seconds=10))


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


async def _local(fn: str, arg: object, result_type: type) -> object:
    return await workflow.execute_local_activity(
        fn, arg, result_type=result_type, start_to_close_timeout=timedelta(seconds=30),
        retry_policy=LOCAL_RETRY)


async def wait_for_bank(inp: TransferWorkflowInput) -> str:
    """Sleep until the ACH is due, then poll the bank until it decides."""
    if inp.business_day_s is not None:
        await workflow.sleep(timedelta(seconds=inp.settle_days * inp.business_day_s))
    elif inp.settle_at:
        due = datetime.fromisoformat(inp.settle_at)
        delay = (due - workflow.now()).total_seconds()
        if delay > 0:
            await workflow.sleep(timedelta(seconds=delay))
    bank = BankInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount)
    while True:
        outcome = str(await _local("bank_outcome", bank, str))
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

    @workflow.update  # ACCEPTED_UPDATE: the method's name
    async def accepted(self) -> TransferSnapshot:
        await workflow.wait_condition(lambda: self._snap is not None)
        assert self._snap is not None
        return self._snap

    @workflow.query(name="transfer")
    def transfer(self) -> TransferSnapshot | None:
        return self._snap

    async def _run(self, inp: TransferWorkflowInput) -> TransferSnapshot:
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
