"""The funding rules the store applies before any statement: which amounts the books can hold,
and how a transfer that failed before anything moved carries its code."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.errors import DomainError
from domain.funding import (
    MAX_AMOUNT,
    TransferSnapshot,
    check_amount,
    unstarted_code,
    unstarted_reason,
)


@pytest.mark.parametrize("amount", ["0.01", "2500", "1.2500000000", "999999999999999.99"])
def test_amounts_the_books_hold(amount: str) -> None:
    assert check_amount(amount) == Decimal(amount)


@pytest.mark.parametrize("amount", ["1E+30", "1e26", str(MAX_AMOUNT), "0", "-5", "NaN", "Infinity",
                                    "sNaN", "0.00000000001", "", "ten"])
def test_amounts_refused_before_any_statement(amount: str) -> None:
    with pytest.raises(DomainError) as refused:
        check_amount(amount)
    assert refused.value.code == "amount_out_of_range"


def snap(status: str, reason: str | None) -> TransferSnapshot:
    return TransferSnapshot("t", "a", "INCOMING", "10", status, reason)


def test_a_transfer_failed_before_anything_moved_carries_its_code() -> None:
    reason = unstarted_reason("internal_error", "start_deposit failed: ZeroDivisionError: x")
    assert unstarted_code(snap("FAILED", reason)) == "internal_error"
    assert unstarted_code(snap("FAILED", unstarted_reason("shard_unavailable", "..."))) == \
        "shard_unavailable"
    # a withdrawal the bank failed after its hold is not ours: no code
    assert unstarted_code(snap("FAILED", "ACH send failed at the bank")) is None
    assert unstarted_code(snap("PENDING", reason)) is None
    assert len(unstarted_reason("internal_error", "x" * 2000)) == 500
