"""Child processes of ``sherwood dev``: started so they never outlive it, watched, restarted
when they die (by :mod:`sherwood.supervisor`'s policy) and stopped within a bound.

- :func:`spawn` starts a process that gets ``death_signal`` when its parent dies (Linux
  ``prctl(PR_SET_PDEATHSIG)`` in the child before ``exec``). The kernel ties that signal to the
  *thread* that forked, so it is only set when spawning from the main thread; elsewhere (and off
  Linux) the Python children's own watchdog (:func:`sherwood.lifecycle.exit_with_parent`) is
  what takes them down.
- :class:`Supervisor` polls its children (call :meth:`Supervisor.poll` from one loop), logs and
  counts each death, restarts the child when the policy says it is due, and stops them all in
  tiers (Sherwood's processes first, then the servers they use): a signal, ``grace_s`` to exit,
  then SIGKILL.

What it does not do: decide what to run (``sherwood/dev.py`` does) or wait for a restarted
Sherwood process to be healthy (a child's ``start`` callable may block until its server is
ready; the embedded servers' do).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sherwood.supervisor import ChildStatus, RestartPolicy, due, exited, started

PR_SET_PDEATHSIG = 1

Progress = Callable[[str], None]


def _prctl() -> Any | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


def child_setup(death_signal: int | None, user: str | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn``: switch to ``user`` (when running as root), then ask for ``death_signal``
    when the parent dies (after the switch: a change of credentials clears it), and exit at once
    if the parent already died. Everything it needs is looked up before the fork."""
    prctl = _prctl() if death_signal is not None else None
    if threading.current_thread() is not threading.main_thread():
        prctl = None  # the signal would come when this thread ends, not the process
    ids = None
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        ids = (pw.pw_uid, pw.pw_gid)
    if prctl is None and ids is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    return setup


def spawn(cmd: Sequence[str], *, death_signal: int | None = signal.SIGTERM, user: str | None = None,
          stdout: IO[bytes] | int | None = subprocess.DEVNULL, env: dict[str, str] | None = None,
          stdin: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (a Ctrl-C in the terminal reaches only the parent, which
    stops its children in order) that gets ``death_signal`` if the parent dies first."""
    return subprocess.Popen(list(cmd), stdout=stdout, stderr=subprocess.STDOUT, env=env, stdin=stdin,
                            start_new_session=True, preexec_fn=child_setup(death_signal, user))


def stop_processes(procs: Sequence[tuple[subprocess.Popen[bytes], int]], grace_s: float) -> list[int]:
    """Send each process its signal, wait up to ``grace_s`` for all of them together, SIGKILL the
    rest and reap them. Returns the pids that had to be killed."""
    for proc, sig in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    killed = []
    for proc, _ in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            proc.kill()
            killed.append(proc.pid)
            proc.wait()
    return killed


@dataclass
class Child:
    """One supervised process: ``start`` starts it (again) and returns it; ``tier`` orders the
    stop (higher first); ``stop_signal`` asks it to stop."""

    start: Callable[[], subprocess.Popen[bytes]]
    status: ChildStatus
    tier: int = 1
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Supervisor:
    policy: RestartPolicy
    progress: Progress = print
    clock: Callable[[], float] = time.monotonic
    children: dict[str, Child] = field(default_factory=dict)

    def add(self, name: str, start: Callable[[], subprocess.Popen[bytes]], *, tier: int = 1,
            stop_signal: int = signal.SIGTERM, running: subprocess.Popen[bytes] | None = None,
            ) -> subprocess.Popen[bytes]:
        """Supervise ``name``: adopt ``running`` (already started by the caller) or start it now.
        A failure to start here raises (the stack is not up yet)."""
        proc = running if running is not None else start()
        child = Child(start=start, status=ChildStatus(name=name), tier=tier, stop_signal=stop_signal,
                      proc=proc)
        self.children[name] = child
        child.status = started(child.status, now=self.clock(), pid=proc.pid)
        return proc

    def exited(self) -> list[tuple[str, int | None]]:
        """The children that died since they were started: (name, exit status)."""
        return [(name, c.proc.returncode) for name, c in self.children.items()
                if c.proc is not None and c.status.state == "running" and c.proc.poll() is not None]

    def poll(self) -> bool:
        """Note the deaths, restart what is due. Returns whether any child changed."""
        changed = False
        for name, code in self.exited():
            c = self.children[name]
            c.status = exited(self.policy, c.status, now=self.clock(), returncode=code)
            c.proc = None
            delay = (c.status.restart_at or 0) - self.clock()
            self.progress(f"{name} exited with {code}; restarting in {max(delay, 0):.1f} s "
                          f"({c.status.failures} in a row)")
            changed = True
        for name, c in self.children.items():
            if not due(c.status, now=self.clock()):
                continue
            try:
                proc = c.start()
            except Exception as exc:
                c.status = exited(self.policy, c.status, now=self.clock(), returncode=None)
                self.progress(f"{name} could not be restarted: {exc}; next try in "
                              f"{max((c.status.restart_at or 0) - self.clock(), 0):.1f} s")
            else:
                c.proc = proc
                c.status = started(c.status, now=self.clock(), pid=proc.pid)
                self.progress(f"{name} restarted (pid {proc.pid}, restart {c.status.restarts})")
            changed = True
        return changed

    def public(self) -> list[dict[str, object]]:
        return [c.status.public() for c in self.children.values()]

    def stop(self, grace_s: float) -> None:
        """Stop every child, highest tier first, each tier given ``grace_s`` before SIGKILL."""
        for c in self.children.values():
            c.status = c.status.stopping()
        for tier in sorted({c.tier for c in self.children.values()}, reverse=True):
            group = [(name, c) for name, c in self.children.items()
                     if c.tier == tier and c.proc is not None]
            if not group:
                continue
            self.progress(f"stopping {', '.join(name for name, _ in group)} ...")
            killed = stop_processes([(c.proc, c.stop_signal) for _, c in group if c.proc], grace_s)
            for name, c in group:
                if c.proc is not None and c.proc.pid in killed:
                    self.progress(f"  {name} did not stop within {grace_s} s: killed")
                c.status = exited(self.policy, c.status, now=self.clock(),
                                  returncode=c.proc.returncode if c.proc else None)
                c.proc = None
