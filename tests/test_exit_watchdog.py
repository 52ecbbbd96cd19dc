"""The test process exits when its session is over, even with a thread that never returns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STUCK = '''
import threading

def test_leaves_a_thread_that_never_returns():
    threading.Thread(target=threading.Event().wait, name="stuck-forever").start()
'''


def run_alone(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the test module ``source`` in a pytest process of its own with only the watchdog
    (and not pytest-timeout), ``env`` added; it must end within 30 s."""
    (tmp_path / "test_it.py").write_text(source)
    repo = Path(__file__).resolve().parents[1]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.exit_watchdog",
         "-p", "no:timeout", "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_it.py")],
        cwd=tmp_path, env={**os.environ, **env, "PYTHONPATH": str(repo)},
        capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    return done


def test_a_thread_that_never_returns_does_not_hold_the_run_past_its_session(tmp_path: Path) -> None:
    done = run_alone(tmp_path, STUCK, SHERWOOD_TEST_EXIT_GRACE_S="1")
    assert done.returncode == 0, done.stderr  # the session passed: its status is kept
    assert "1 passed" in done.stdout  # the summary was flushed before the exit
    assert "still running 1 s after its session ended" in done.stderr
    assert " in wait" in done.stderr, done.stderr  # the stuck thread's stack


HUNG_TEARDOWN = '''
import threading
import pytest

@pytest.fixture(scope="session")
def hangs_at_teardown():
    yield
    threading.Event().wait()

def test_uses_it(hangs_at_teardown):
    pass
'''


def test_a_session_teardown_that_never_returns_is_ended_with_its_stacks(tmp_path: Path) -> None:
    done = run_alone(tmp_path, HUNG_TEARDOWN, SHERWOOD_TEST_TEARDOWN_LIMIT_S="2")
    assert done.returncode == 1
    assert "Timeout" in done.stderr and "hangs_at_teardown" in done.stderr, done.stderr
