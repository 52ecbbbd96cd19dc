"""The Python children's fallback when the kernel's parent-death signal is not set
(sherwood.lifecycle.exit_with_parent): a child whose parent dies stops, even one that ignores
SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

# The middle process starts the watched child WITHOUT any parent-death signal, prints its pid and
# sleeps; the test SIGKILLs the middle process.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import os, signal, sys, time
from sherwood.lifecycle import exit_with_parent
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
exit_with_parent(os.getppid(), interval_s=0.1, grace_s=1.0)
time.sleep(600)
"""


@pytest.mark.parametrize("on_sigterm", ["default", "ignore"])
def test_a_child_stops_when_its_parent_dies(on_sigterm: str) -> None:
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, CHILD, on_sigterm],
                              stdout=subprocess.PIPE, text=True)
    assert middle.stdout is not None
    pid = int(middle.stdout.readline())
    child = psutil.Process(pid)
    time.sleep(1.0)  # the watchdog runs
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    middle.send_signal(signal.SIGKILL)
    middle.wait(5)
    try:
        child.wait(5)  # gone (re-parented to init, which reaps it)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the child outlived its parent")
