"""FIX identities and timestamps of the gateway payloads (domain.execution)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.execution import order_id_of
from fix.messages import parse_utc_timestamp as parse_transact_time


@pytest.mark.parametrize(("raw", "expected"), [
    ("20261125-15:59:26.527", datetime(2026, 11, 25, 15, 59, 26, 527000, tzinfo=UTC)),
    ("20261125-15:59:26", datetime(2026, 11, 25, 15, 59, 26, tzinfo=UTC)),
    (None, None),
    ("", None),
    ("2026-11-25T15:59:26Z", None),  # not a FIX UTCTimestamp: unreadable, not guessed
])
def test_parse_transact_time(raw: str | None, expected: datetime | None) -> None:
    assert parse_transact_time(raw) == expected


def test_order_id_of_cancel_and_status_ids() -> None:
    assert order_id_of("abc:C2") == order_id_of("abc:S1") == order_id_of("abc") == "abc"
