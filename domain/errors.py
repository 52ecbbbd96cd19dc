"""Errors raised by pure domain rules. Each carries a stable machine-readable ``code``."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation. ``code`` is stable and machine-readable; the message is human."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidAmount(DomainError):
    """An amount is not a finite positive decimal within the currency's scale."""

    code = "invalid_amount"


class UnknownLedgerAccount(DomainError):
    """A ledger account name is not in the chart of accounts."""

    code = "unknown_ledger_account"


class UnknownCurrency(DomainError):
    """A currency is neither USD nor a known symbol, or does not match the account."""

    code = "unknown_currency"


class UnbalancedTransaction(DomainError):
    """Entries of a ledger transaction do not sum to zero per currency."""

    code = "unbalanced_transaction"
