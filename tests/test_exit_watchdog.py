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


def test_a_thread_that_never_returns_does_not_hold_the_run_past_its_session(tmp_path: Path) -> None:
    (tmp_path / "test_stuck.py").write_text(STUCK)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SHERWOOD_TEST_EXIT_GRACE_S": "1", "PYTHONPATH": str(repo)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.exit_watchdog",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_stuck.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode == 0, done.stderr  # the session passed: its status is kept
    assert "1 passed" in done.stdout  # the summary was flushed before the exit
    assert "still running 1 s after its session ended" in done.stderr
    assert "stuck-forever" in done.stderr or "wait" in done.stderr, done.stderr


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
    (tmp_path / "test_hung.py").write_text(HUNG_TEARDOWN)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SHERWOOD_TEST_TEARDOWN_LIMIT_S": "2", "PYTHONPATH": str(repo)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.exit_watchdog",
         "-p", "no:timeout", "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_hung.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert "Timeout" in done.stderr and "hangs_at_teardown" in done.stderr, done.stderr
