"""When ``sherwood dev`` restarts a child that died: the restart policy, as pure functions.

A child that exits while it was meant to run is restarted after a delay that grows
exponentially with the deaths in a row (``backoff_initial_s``, times ``backoff_factor`` per
death, at most ``backoff_max_s``); a child that had stayed up at least ``stable_s`` before it
died starts the count again. A child being stopped on purpose is never restarted.

What this module does not do: start, signal or wait for processes, read the clock, or log (that
is :mod:`sherwood.processes`, which feeds the times and exit codes in). It never gives up on a
child either: a process manager keeps trying, slowly, and says so each time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

State = Literal["new", "running", "backoff", "stopping", "stopped"]


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    stable_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.backoff_factor < 1 or self.stable_s < 0:
            raise ValueError("need backoff_factor >= 1 and stable_s >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start after ``failures`` quick deaths in a row (>= 1)."""
        delay = self.backoff_initial_s
        for _ in range(max(failures, 1) - 1):
            delay *= self.backoff_factor
            if delay >= self.backoff_max_s:
                return self.backoff_max_s
        return min(delay, self.backoff_max_s)


@dataclass(frozen=True)
class ChildStatus:
    """What the supervisor knows about one child. Times are the caller's monotonic clock."""

    name: str
    state: State = "new"
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0  # starts after the first one
    failures: int = 0  # deaths in a row, each after less than stable_s up
    restart_at: float | None = None
    last_exit: int | None = None  # the last exit status (-N: killed by signal N), None: never/failed to start

    def stopping(self) -> ChildStatus:
        return dataclasses.replace(self, state="stopping", restart_at=None)

    def public(self) -> dict[str, object]:
        """The fields ``stack.json`` shows."""
        return {"name": self.name, "pid": self.pid, "state": self.state, "restarts": self.restarts,
                "last_exit": self.last_exit}


def started(s: ChildStatus, *, now: float, pid: int) -> ChildStatus:
    """The child was started (again) and runs as ``pid``."""
    restarts = s.restarts if s.state == "new" else s.restarts + 1
    return dataclasses.replace(s, state="running", pid=pid, started_at=now, restart_at=None,
                               restarts=restarts)


def exited(policy: RestartPolicy, s: ChildStatus, *, now: float, returncode: int | None) -> ChildStatus:
    """The child exited with ``returncode`` (None: it could not even be started). Unless it was
    being stopped, it is due again after the policy's delay."""
    if s.state in ("stopping", "stopped"):
        return dataclasses.replace(s, state="stopped", pid=None, last_exit=returncode,
                                   restart_at=None)
    up = now - s.started_at if s.state == "running" and s.started_at is not None else 0.0
    failures = 1 if up >= policy.stable_s else s.failures + 1
    return dataclasses.replace(s, state="backoff", pid=None, started_at=None, last_exit=returncode,
                               failures=failures, restart_at=now + policy.delay(failures))


def due(s: ChildStatus, *, now: float) -> bool:
    """Whether the child should be started now."""
    if s.state == "new":
        return True
    return s.state == "backoff" and s.restart_at is not None and now >= s.restart_at
