"""The FIX session gauge speaks for every live session of the process: a gateway stopped (or
started) beside another -- tests run several in one process -- never hides the other's state."""

from __future__ import annotations

from prometheus_client import REGISTRY

from sherwood import metrics


def up(venue: str) -> float | None:
    return REGISTRY.get_sample_value("sherwood_fix_session_up", {"venue": venue})


def test_a_stopped_gateway_does_not_hide_a_live_one() -> None:
    live = metrics.fix_session("ZZT1", lambda: True)
    later = metrics.fix_session("ZZT1", lambda: False)  # another gateway, not logged on
    assert up("ZZT1") == 1
    later()  # that gateway stopped
    assert up("ZZT1") == 1
    live()
    assert up("ZZT1") == 0
    gone = metrics.fix_session("ZZT1", lambda: False)
    assert up("ZZT1") == 0
    gone()
