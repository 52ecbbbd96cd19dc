"""Operator identity rules (pure): scopes, who may act, what needs a second operator.

What it does: the scope vocabulary of ops keys; bounds on operator names, reasons and key
lifetimes; whether a key may be used now; the notional of a STUCK order's resolution and whether
it needs a second operator's approval (four eyes), and whether a given operator may give it.

What it deliberately does not do: any I/O (db/ops.py loads and records, api/services/ops.py
carries the actions out), or authenticate secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

SCOPES = ("read", "halt", "restrict", "resolve", "settlement", "keys")
MAX_REASON = 500
MAX_KEY_DAYS = 366
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class OpsRefusal(ValueError):
    """An operations request refused by a rule; ``code`` is machine-readable, ``status`` the
    HTTP status the API answers (422 bad input, 403 not allowed, 404 unknown, 409 conflict)."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def parse_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in canonical order; an unknown or empty set is refused."""
    given = {s.strip().lower() for s in scopes}
    unknown = given - set(SCOPES)
    if unknown:
        raise OpsRefusal("invalid_scope", f"unknown scope(s) {sorted(unknown)}; "
                         f"known: {', '.join(SCOPES)}")
    if not given:
        raise OpsRefusal("invalid_scope", "an ops key needs at least one scope")
    return tuple(s for s in SCOPES if s in given)


def check_name(name: str, what: str = "operator") -> str:
    """An operator or key holder name: 1-64 of letters, digits and ``._@-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise OpsRefusal("invalid_operator", f"{what} must be 1-64 letters, digits or ._@-")
    return name


def check_operator(name: str, configured: Iterable[str]) -> str:
    """``--operator NAME`` of the CLI: must be one of the configured operators
    (``SHERWOOD_OPS_OPERATORS``)."""
    check_name(name)
    if name not in set(configured):
        raise OpsRefusal("unknown_operator",
                         f"operator {name!r} is not configured (SHERWOOD_OPS_OPERATORS)", 403)
    return name


def check_reason(reason: str | None) -> str:
    """Why an action is taken: required, at most MAX_REASON characters."""
    r = (reason or "").strip()
    if not r:
        raise OpsRefusal("reason_required", "a reason is required for every operations action")
    if len(r) > MAX_REASON:
        raise OpsRefusal("reason_too_long", f"reason is limited to {MAX_REASON} characters")
    return r


def check_lifetime_days(days: int) -> int:
    if not 1 <= days <= MAX_KEY_DAYS:
        raise OpsRefusal("invalid_expiry", f"an ops key lives 1 to {MAX_KEY_DAYS} days")
    return days


@dataclass(frozen=True)
class OpsKey:
    """An authenticated ops key: who holds it and what it may do."""

    key_id: str
    holder: str
    scopes: tuple[str, ...]
    expires_at: datetime
    revoked_at: datetime | None = None

    @property
    def actor(self) -> str:
        return self.holder


def key_refusal(key: OpsKey, now: datetime) -> str | None:
    """Why ``key`` cannot be used at ``now`` (``revoked`` / ``expired``), None when it can."""
    if key.revoked_at is not None and key.revoked_at <= now:
        return "revoked"
    if key.expires_at <= now:
        return "expired"
    return None


def has_scope(key: OpsKey, scope: str) -> bool:
    assert scope in SCOPES, scope
    return scope in key.scopes


def _dec(value: str | None, what: str) -> Decimal:
    try:
        d = Decimal(value if value is not None else "0")
    except (InvalidOperation, TypeError):
        raise OpsRefusal("invalid_resolution", f"{what} is not a number") from None
    if not d.is_finite() or d < 0 or d > Decimal("1e12") or len(d.as_tuple().digits) > 24:
        raise OpsRefusal("invalid_resolution", f"{what} is out of range")
    return d


def resolution_notional(filled_qty: str, avg_price: str | None,
                        fills: Iterable[tuple[str, str]] | None) -> Decimal:
    """What a resolution books, at most: the value of the venue's executions it lists
    (``fills``: qty, price), or ``filled_qty`` times ``avg_price``. An upper bound (part of
    ``filled_qty`` may be booked already), so the four-eyes threshold is never undercut."""
    fills = list(fills or [])
    if fills:
        return sum((_dec(q, "fill qty") * _dec(p, "fill price") for q, p in fills), Decimal(0))
    if avg_price is None:
        return Decimal(0)
    return _dec(filled_qty, "filled_qty") * _dec(avg_price, "avg_price")


def needs_second_approval(notional: Decimal, threshold: Decimal) -> bool:
    """Four eyes: a resolution booking more than ``threshold`` waits for a second operator."""
    return notional > threshold


def approval_refusal(requested_by: str, approver: str, status: str) -> OpsRefusal | None:
    """Why ``approver`` may not approve a resolution ``requested_by`` asked for, None if they
    may: only a pending one, and never by the operator who requested it."""
    if status != "pending":
        return OpsRefusal("not_pending", f"this resolution is already {status}", 409)
    if approver == requested_by:
        return OpsRefusal("same_operator",
                          "the operator who requested a resolution cannot approve it", 403)
    return None
