"""Operator identity rules (domain/ops.py), as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.ops import (
    OpsKey,
    OpsRefusal,
    approval_refusal,
    check_operator,
    check_reason,
    key_refusal,
    needs_second_approval,
    parse_scopes,
    resolution_notional,
)

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(("given", "want"), [
    (["halt", "read"], ("read", "halt")),
    (["READ", " read"], ("read",)),
    (["keys", "settlement", "resolve", "restrict"], ("restrict", "resolve", "settlement", "keys")),
    (["root"], None), ([], None), (["read", "admin"], None),
])
def test_scopes(given: list[str], want: tuple[str, ...] | None) -> None:
    if want is None:
        with pytest.raises(OpsRefusal) as e:
            parse_scopes(given)
        assert e.value.code == "invalid_scope"
    else:
        assert parse_scopes(given) == want


@pytest.mark.parametrize(("expires", "revoked", "want"), [
    (NOW + timedelta(seconds=1), None, None),
    (NOW, None, "expired"),
    (NOW - timedelta(days=1), None, "expired"),
    (NOW + timedelta(days=1), NOW, "revoked"),
    (NOW + timedelta(days=1), NOW + timedelta(seconds=5), None),  # revoked later than now
    (NOW - timedelta(days=1), NOW - timedelta(days=2), "revoked"),
])
def test_key_refusal(expires: datetime, revoked: datetime | None, want: str | None) -> None:
    assert key_refusal(OpsKey("OKX", "alice", ("read",), expires, revoked), NOW) == want


@pytest.mark.parametrize(("filled", "avg", "fills", "want"), [
    ("0", None, None, Decimal(0)),
    ("6", "187.45", None, Decimal("1124.70")),
    ("6", None, None, Decimal(0)),  # nothing new to book
    ("6", None, [("4", "187.45"), ("2", "187.46")], Decimal("1124.72")),
    ("6", "1", [("4", "10")], Decimal(40)),  # the fills win over avg_price
])
def test_resolution_notional(filled: str, avg: str | None, fills: list[tuple[str, str]] | None,
                             want: Decimal) -> None:
    assert resolution_notional(filled, avg, fills) == want


@pytest.mark.parametrize(("filled", "avg"), [("-1", "10"), ("1", "NaN"), ("1", "1e30"),
                                             ("x", "1"), ("1", "Infinity")])
def test_resolution_notional_bounds_its_input(filled: str, avg: str) -> None:
    with pytest.raises(OpsRefusal):
        resolution_notional(filled, avg, None)


@pytest.mark.parametrize(("notional", "threshold", "want"), [
    ("10000", "10000", False), ("10000.01", "10000", True), ("0", "0", False), ("1", "0", True),
])
def test_four_eyes_threshold(notional: str, threshold: str, want: bool) -> None:
    assert needs_second_approval(Decimal(notional), Decimal(threshold)) is want


@pytest.mark.parametrize(("requested_by", "approver", "status", "code"), [
    ("alice", "bob", "pending", None),
    ("alice", "alice", "pending", "same_operator"),
    ("alice", "bob", "approved", "not_pending"),
])
def test_approval(requested_by: str, approver: str, status: str, code: str | None) -> None:
    refusal = approval_refusal(requested_by, approver, status)
    assert (refusal.code if refusal else None) == code


@pytest.mark.parametrize(("name", "code"), [
    ("alice", None), ("mallory", "unknown_operator"), ("", "invalid_operator"),
    ("a" * 65, "invalid_operator"), ("al ice", "invalid_operator"),
])
def test_operator_must_be_configured(name: str, code: str | None) -> None:
    try:
        check_operator(name, ["alice", "bob"])
        got = None
    except OpsRefusal as e:
        got = e.code
    assert got == code


@pytest.mark.parametrize(("reason", "code"), [
    ("news pending", None), ("", "reason_required"), ("   ", "reason_required"),
    (None, "reason_required"), ("x" * 501, "reason_too_long"),
])
def test_reason_is_required_and_bounded(reason: str | None, code: str | None) -> None:
    try:
        check_reason(reason)
        got = None
    except OpsRefusal as e:
        got = e.code
    assert got == code
