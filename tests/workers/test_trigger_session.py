"""The trigger watch's session gate (workers.shard.regular_session): quotes count only during
the regular session on the business clock, always when market hours are not enforced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import calendar
from sherwood.settings import Settings
from workers.shard import regular_session


def offset_to(at: datetime) -> float:
    return (at - datetime.now(UTC)).total_seconds()


def test_quotes_count_only_in_the_regular_session() -> None:
    opens = calendar.next_open(datetime.now(UTC) + timedelta(days=1))
    base = Settings(enforce_market_hours=True)
    inside = base.model_copy(update={"market_clock_offset_s": offset_to(opens + timedelta(hours=1))})
    before = base.model_copy(update={"market_clock_offset_s": offset_to(opens - timedelta(hours=1))})
    after = base.model_copy(update={"market_clock_offset_s": offset_to(
        calendar.next_close(opens) + timedelta(hours=1))})
    assert regular_session(inside)() is True
    assert regular_session(before)() is False
    assert regular_session(after)() is False
    assert regular_session(before.model_copy(update={"enforce_market_hours": False}))() is True
