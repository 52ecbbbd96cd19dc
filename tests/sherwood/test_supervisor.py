"""The restart policy of `sherwood dev` (sherwood/supervisor.py): pure, no processes."""

from __future__ import annotations

import pytest

from sherwood.supervisor import ChildStatus, RestartPolicy, due, exited, started

POLICY = RestartPolicy(backoff_initial_s=0.5, backoff_max_s=8.0, backoff_factor=2.0, stable_s=60.0)


def test_delay_doubles_from_the_initial_backoff_up_to_the_maximum() -> None:
    assert [POLICY.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert POLICY.delay(10_000) == 8.0  # no overflow however many failures


def test_a_new_child_is_due_at_once_and_running_after_start() -> None:
    s = ChildStatus(name="gateway")
    assert s.state == "new" and due(s, now=0.0)
    s = started(s, now=10.0, pid=123)
    assert (s.state, s.pid, s.started_at, s.restarts) == ("running", 123, 10.0, 0)
    assert not due(s, now=1e9)


def test_quick_deaths_back_off_exponentially_and_count_restarts() -> None:
    s = started(ChildStatus(name="gateway"), now=0.0, pid=1)
    now = 0.0
    delays = []
    for pid in range(2, 7):
        now += 1.0  # each run lasts one second: far less than stable_s
        s = exited(POLICY, s, now=now, returncode=-9)
        assert s.state == "backoff" and s.pid is None and s.last_exit == -9
        assert s.restart_at is not None
        delays.append(s.restart_at - now)
        assert not due(s, now=s.restart_at - 0.01) and due(s, now=s.restart_at)
        now = s.restart_at
        s = started(s, now=now, pid=pid)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert s.restarts == 5 and s.failures == 5


def test_backoff_resets_after_the_child_stayed_up_a_while() -> None:
    s = started(ChildStatus(name="api"), now=0.0, pid=1)
    for _ in range(4):
        s = exited(POLICY, s, now=s.started_at + 1.0, returncode=1)  # type: ignore[operator]
        s = started(s, now=s.restart_at, pid=2)  # type: ignore[arg-type]
    assert s.failures == 4
    died = s.started_at + 60.0  # type: ignore[operator]
    s = exited(POLICY, s, now=died, returncode=-9)
    assert s.failures == 1 and s.restart_at == died + 0.5
    assert s.restarts == 4  # counted when the child is started again, not when it dies


def test_a_stopped_child_is_never_restarted() -> None:
    s = started(ChildStatus(name="mm1"), now=0.0, pid=1)
    s = s.stopping()
    assert s.state == "stopping" and not due(s, now=1e9)
    s = exited(POLICY, s, now=5.0, returncode=0)
    assert s.state == "stopped" and s.restart_at is None and not due(s, now=1e9)


def test_a_child_that_cannot_start_backs_off_like_one_that_died() -> None:
    s = exited(POLICY, ChildStatus(name="postgres", state="backoff", failures=2), now=7.0,
               returncode=None)
    assert (s.state, s.failures, s.restart_at, s.last_exit) == ("backoff", 3, 9.0, None)


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(backoff_initial_s=0, backoff_max_s=1, backoff_factor=2, stable_s=1)
    with pytest.raises(ValueError):
        RestartPolicy(backoff_initial_s=2, backoff_max_s=1, backoff_factor=2, stable_s=1)
    with pytest.raises(ValueError):
        RestartPolicy(backoff_initial_s=1, backoff_max_s=2, backoff_factor=0.5, stable_s=1)


def test_status_as_json_for_stack_file() -> None:
    s = started(ChildStatus(name="gateway"), now=3.0, pid=42)
    assert s.public() == {"name": "gateway", "pid": 42, "state": "running", "restarts": 0,
                          "last_exit": None}
