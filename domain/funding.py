"""ACH funding in the business's words (pure: no I/O): transfer directions and terminal statuses,
the payloads the Deposit and Withdrawal workflows exchange with their activities, and the hash
that makes a retried transfer request idempotent.

The workflows (:mod:`workflows.deposit`, :mod:`workflows.withdrawal`) import these types from
here, never from :mod:`db`; :mod:`db.funding` stores transfers and returns them. Amounts and dates
are strings on the wire (workflow payloads).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from domain.errors import DomainError
from domain.money import plain

INCOMING, OUTGOING = "INCOMING", "OUTGOING"
TERMINAL = frozenset({"COMPLETE", "RETURNED", "REJECTED", "FAILED", "CANCELED"})
# what the books can hold: amounts and balances are numeric(38, 10) (28 digits before the point)
MAX_AMOUNT = Decimal(10) ** 15
MAX_SCALE = 10
# the codes of a transfer that failed before anything moved (our failure, not the customer's)
INTERNAL_ERROR, SHARD_UNAVAILABLE = "internal_error", "shard_unavailable"
UNSTARTED_CODES = (INTERNAL_ERROR, SHARD_UNAVAILABLE)


@dataclass
class TransferInput:
    transfer_id: str
    account_id: str
    direction: str
    amount: str
    expected_settle_date: str | None = None


@dataclass
class TransferSnapshot:
    transfer_id: str
    account_id: str
    direction: str
    amount: str
    status: str
    reason: str | None = None
    expected_settle_date: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def request_hash(direction: str, amount: Decimal) -> str:
    """What identifies a transfer request (a retry with the same id must carry the same one)."""
    return hashlib.sha256(f"{direction}:{plain(amount)}".encode()).hexdigest()[:32]


def check_amount(amount: str | Decimal) -> Decimal:
    """The amount of a transfer as the books can carry it: positive, finite, at most
    :data:`MAX_SCALE` decimals and below :data:`MAX_AMOUNT` (far above any real transfer, far
    below what would overflow a balance). Raises ``amount_out_of_range`` otherwise: a refusal,
    the same on every try. The API's own, tighter bounds come first; this is the store's."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise DomainError(f"amount {amount!r} is not a number", code="amount_out_of_range") from None
    if not value.is_finite() or value <= 0 or value >= MAX_AMOUNT or \
            int(value.normalize().as_tuple().exponent) < -MAX_SCALE:
        raise DomainError(f"amount {amount} is out of range (0 < amount < {MAX_AMOUNT:f}, "
                          f"at most {MAX_SCALE} decimals)", code="amount_out_of_range")
    return value


def unstarted_reason(code: str, detail: str) -> str:
    """The reason recorded on a transfer that failed before anything moved: its code first."""
    return f"{code}: {detail}"[:500]


def unstarted_code(snap: TransferSnapshot) -> str | None:
    """The code of a transfer that failed before anything moved (None for any other transfer,
    e.g. a withdrawal the bank failed after its hold)."""
    if snap.status != "FAILED" or not snap.reason:
        return None
    code = snap.reason.split(":", 1)[0]
    return code if code in UNSTARTED_CODES else None
