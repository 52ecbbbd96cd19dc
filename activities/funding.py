"""Funding activities of one shard: transfer rows + ledger (:mod:`db.funding`) and the ACH bank.
Run as local activities by the deposit and withdrawal workflows on ``backoffice-shard-<n>``
(served by the back-office worker, :mod:`workers.backoffice`).

The bank is the :class:`domain.ports.Bank` port: these activities never know which bank they
talk to. The entry point chooses it (:func:`sherwood.wiring.outside_world`; today the simulated
:class:`simulators.bank.AchBank`). Payloads: the transfer's from :mod:`domain.funding`, and
:class:`BankInput` / :class:`FinishInput` / :class:`FailUnstartedInput` below.

A business refusal (the ledger's, the amount's, an idempotency conflict) is a non-retryable
``ApplicationError`` whose type is its code; a transient infrastructure failure is retried within
the workflow's maximum; anything else is a non-retryable ``internal_error``
(:func:`sherwood.faults.final_unless_transient`), which the workflow ends visibly: FAILED with
nothing moved before the first step committed (:meth:`FundingActivities.fail_unstarted`),
recorded for an operator after (:meth:`FundingActivities.flag_transfer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.errors import LedgerRejected
from db.funding import FundingStore
from domain.errors import DomainError
from domain.funding import TransferInput, TransferSnapshot
from domain.ports import Bank
from sherwood.faults import final_unless_transient


@dataclass
class BankInput:
    transfer_id: str
    account_id: str
    direction: str
    amount: str


@dataclass
class FinishInput:
    transfer_id: str
    reason: str = ""


@dataclass
class FailUnstartedInput:
    transfer: TransferInput
    reason: str


def refusal(exc: DomainError | LedgerRejected) -> ApplicationError:
    return ApplicationError(exc.message, type=exc.code, non_retryable=True)


class FundingActivities:
    def __init__(self, store: FundingStore, bank: Bank) -> None:
        self.store = store
        self.bank = bank

    @activity.defn(name="start_deposit")
    @final_unless_transient
    async def start_deposit(self, inp: TransferInput) -> TransferSnapshot:
        try:
            return await self.store.start_deposit(inp)
        except (DomainError, LedgerRejected) as exc:
            raise refusal(exc) from exc

    @activity.defn(name="start_withdrawal")
    @final_unless_transient
    async def start_withdrawal(self, inp: TransferInput) -> TransferSnapshot:
        try:
            return await self.store.start_withdrawal(inp)
        except (DomainError, LedgerRejected) as exc:
            raise refusal(exc) from exc

    @activity.defn(name="settle_deposit")
    @final_unless_transient
    async def settle_deposit(self, inp: FinishInput) -> TransferSnapshot:
        return await self.store.settle_deposit(inp.transfer_id)

    @activity.defn(name="bounce_deposit")
    @final_unless_transient
    async def bounce_deposit(self, inp: FinishInput) -> TransferSnapshot:
        return await self.store.bounce_deposit(inp.transfer_id, inp.reason)

    @activity.defn(name="complete_withdrawal")
    @final_unless_transient
    async def complete_withdrawal(self, inp: FinishInput) -> TransferSnapshot:
        return await self.store.complete_withdrawal(inp.transfer_id)

    @activity.defn(name="fail_withdrawal")
    @final_unless_transient
    async def fail_withdrawal(self, inp: FinishInput) -> TransferSnapshot:
        return await self.store.fail_withdrawal(inp.transfer_id, inp.reason)

    @activity.defn(name="fail_unstarted_transfer")
    @final_unless_transient
    async def fail_unstarted(self, inp: FailUnstartedInput) -> TransferSnapshot:
        """FAILED with nothing moved (or the transfer as it stands if its first step did commit)."""
        try:
            return await self.store.fail_unstarted(inp.transfer, inp.reason)
        except (DomainError, LedgerRejected) as exc:
            raise refusal(exc) from exc

    @activity.defn(name="flag_transfer")
    @final_unless_transient
    async def flag_transfer(self, inp: FinishInput) -> TransferSnapshot:
        """Record that a step after money moved failed for good (for an operator)."""
        return await self.store.flag(inp.transfer_id, inp.reason)

    @activity.defn(name="bank_submit")
    @final_unless_transient
    async def bank_submit(self, inp: BankInput) -> str:
        return await self.bank.submit(inp.transfer_id, inp.account_id, inp.direction, inp.amount)

    @activity.defn(name="bank_outcome")
    @final_unless_transient
    async def bank_outcome(self, inp: BankInput) -> str:
        return await self.bank.outcome(inp.transfer_id, inp.account_id, inp.amount)

    def all(self) -> list[Callable[..., Any]]:
        return [self.start_deposit, self.start_withdrawal, self.settle_deposit, self.bounce_deposit,
                self.complete_withdrawal, self.fail_withdrawal, self.bank_submit, self.bank_outcome,
                self.fail_unstarted, self.flag_transfer]
