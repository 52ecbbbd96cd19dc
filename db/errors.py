"""Errors of the persistence layer. Each has a stable ``code`` the API and workflows can map.

``LedgerRejected`` subclasses are business outcomes (not retryable); ``ShardUnavailable`` is an
infrastructure failure (retryable by the caller's policy).
"""

from __future__ import annotations


class DbError(Exception):
    code = "db_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class LedgerRejected(DbError):
    """The ledger refused a transaction; replaying it gives the same answer."""

    code = "ledger_rejected"


class InsufficientFunds(LedgerRejected):
    code = "insufficient_funds"


class IdempotencyConflict(LedgerRejected):
    """The transaction id exists with different entries: never a second effect."""

    code = "idempotency_conflict"


class UnknownAccount(LedgerRejected):
    code = "unknown_account"


class UnknownCurrency(LedgerRejected):
    code = "unknown_currency"


class UnbalancedAtCommit(LedgerRejected):
    """The database's own sum-to-zero check refused the commit."""

    code = "unbalanced_transaction"


class AppendOnlyViolation(DbError):
    code = "append_only"


class ShardUnavailable(DbError):
    code = "shard_unavailable"
