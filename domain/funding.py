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
from decimal import Decimal

from domain.money import plain

INCOMING, OUTGOING = "INCOMING", "OUTGOING"
TERMINAL = frozenset({"COMPLETE", "RETURNED", "REJECTED", "FAILED", "CANCELED"})


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
