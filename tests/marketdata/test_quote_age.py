"""A quote's age at routing (marketdata.quotes.Quote.age_ms): from ingest time, else its own
timestamp, else none."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketdata.quotes import Quote, parse_quote

NOW = 1_780_000_000_000_000_000  # ns


@pytest.mark.parametrize(("t", "it", "expected"), [
    (None, NOW - 250_000_000, 250),
    ("2026-05-28T20:26:40Z", NOW - 5_000_000, 5),  # ingest time wins over the timestamp
    ("2026-05-28T20:26:40Z", None, 0),
    ("2026-05-28T20:26:39.5+00:00", None, 500),
    ("2026-05-28T20:26:40", None, None),  # no zone: no age
    ("not a time", None, None),
    (None, None, None),  # a reference quote
    (None, NOW + 1_000_000, 0),  # a clock ahead: never negative
])
def test_age_ms(t: str | None, it: int | None, expected: int | None) -> None:
    assert Quote("AAPL", Decimal(1), Decimal(2), t, it).age_ms(NOW) == expected


def test_parse_keeps_ingest_time() -> None:
    q = parse_quote("AAPL", '{"bp": "1", "ap": "2", "it": 123}', max_age_s=float("inf"))
    assert q is not None and q.it == 123
