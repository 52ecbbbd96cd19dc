"""The ACH withdrawal workflow: hold from withdrawable cash (settled, not provisional), send to
the bank, wait, then complete (cash_held -> bank) or fail (hold released). Same shape and queue
as :mod:`workflows.deposit`."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.funding import BankInput, FinishInput
    from db.funding import TransferInput, TransferSnapshot
    from workflows.deposit import TransferWorkflowInput, _local, wait_for_bank


@workflow.defn(name="Withdrawal")
class WithdrawalWorkflow:
    @workflow.init
    def __init__(self, inp: TransferWorkflowInput) -> None:
        self._snap: TransferSnapshot | None = None

    @workflow.update(name="accepted")
    async def accepted(self) -> TransferSnapshot:
        await workflow.wait_condition(lambda: self._snap is not None)
        assert self._snap is not None
        return self._snap

    @workflow.query(name="transfer")
    def transfer(self) -> TransferSnapshot | None:
        return self._snap

    @workflow.run
    async def run(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        snap = await _local("start_withdrawal", TransferInput(
            inp.transfer_id, inp.account_id, inp.direction, inp.amount, inp.expected_settle_date),
            TransferSnapshot)
        assert isinstance(snap, TransferSnapshot)
        self._snap = snap
        if snap.terminal:
            return snap
        await _local("bank_submit", BankInput(inp.transfer_id, inp.account_id, inp.direction, inp.amount),
                     str)
        outcome = await wait_for_bank(inp)
        if outcome == "return":
            done = await _local("fail_withdrawal",
                                FinishInput(inp.transfer_id, "ACH send failed at the bank"), TransferSnapshot)
        else:
            done = await _local("complete_withdrawal", FinishInput(inp.transfer_id), TransferSnapshot)
        assert isinstance(done, TransferSnapshot)
        self._snap = done
        return done
