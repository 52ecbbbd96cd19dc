"""A test run ends when its session ends. Two guards, for what pytest-timeout cannot catch:

* **The session's last teardown** (the session fixtures: the stack's processes, Temporal, the
  databases) gets ``TEARDOWN_LIMIT_S``. pytest-timeout's timer covers each test with its
  fixtures, but once it has fired in one finalizer the next ones run without it, and its signal
  is never handled while the main thread is blocked inside native code. faulthandler's timer
  runs on a C thread: past the limit it prints every thread's stack and exits with status 1.
* **The interpreter's exit**: CPython joins every non-daemon thread at exit, with no timeout
  (a blocking call of a test that timed out, still running on asyncio's default executor, waits
  forever). ``EXIT_GRACE_S`` after the session, every thread's stack is printed and the process
  exits with the session's status.

Why: one stuck thread made a CI run whose tests had all run hang until CI's own limit, without
saying what it waited for. These print it instead. They do not hide a failure: a hung teardown
exits 1, and a hung exit keeps the session's status after printing the threads."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

TEARDOWN_LIMIT_S = float(os.environ.get("SHERWOOD_TEST_TEARDOWN_LIMIT_S", "600"))
EXIT_GRACE_S = float(os.environ.get("SHERWOOD_TEST_EXIT_GRACE_S", "60"))
_status: list[int] = []
_stderr: list[int] = []  # a copy of the real stderr: pytest's capture redirects fd 2 in tests


def pytest_configure(config: pytest.Config) -> None:
    _stderr.append(os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if nextitem is not None or not _stderr:
        yield
        return
    faulthandler.dump_traceback_later(TEARDOWN_LIMIT_S, exit=True, file=_stderr[0])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = _status[-1] if _status else 1

    def watch() -> None:
        time.sleep(EXIT_GRACE_S)
        sys.stdout.flush()  # the session's summary: which test failed, and why
        print(f"\n=== the test process is still running {EXIT_GRACE_S:.0f} s after its session "
              f"ended (exit status {status}); its threads: ===", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(status)

    threading.Thread(target=watch, name="exit-watchdog", daemon=True).start()
