"""The ACH withdrawal workflow: hold from withdrawable cash (settled, not provisional), send to
the bank, wait, then complete (cash_held -> bank) or fail (hold released). Same shape and queue
as :mod:`workflows.deposit`."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.funding import TransferSnapshot
    from workflows.deposit import TransferFlow, TransferWorkflowInput


@workflow.defn(name="Withdrawal")
class WithdrawalWorkflow(TransferFlow):
    START, SUCCEED, FAIL, FAIL_REASON = ("start_withdrawal", "complete_withdrawal", "fail_withdrawal",
                                         "ACH send failed at the bank")

    @workflow.init
    def __init__(self, inp: TransferWorkflowInput) -> None:
        super().__init__()

    @workflow.run
    async def run(self, inp: TransferWorkflowInput) -> TransferSnapshot:
        return await self._run(inp)
