"""A small chaos run (``python -m bench.chaos``) in the suite: 100 orders through a ``sherwood
dev`` stack while each of the shard worker, the gateway, the API, a venue, Redis and Temporal is
SIGKILLed once and Postgres restarted once, venue faults on. It passes only if every order ends
terminal or STUCK, each venue fill is booked exactly once, the audit is clean, no terminal order
keeps a hold and every child runs again (the run's own checks, its exit code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_small_chaos_run_keeps_the_books_right(tmp_path: Path) -> None:
    data = tmp_path / "chaos"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--orders", "100", "--seed", "7", "--shards", "2",
         "--accounts", "10", "--concurrency", "6", "--order-ttl", "8", "--quiesce-timeout", "120",
         "--data-dir", str(data)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    lines = {(d := json.loads(line))["kind"]: d for line in proc.stdout.splitlines()
             if line.startswith("{")}
    assert "result" in lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = lines["result"]
    assert proc.returncode == 0 and result["ok"], json.dumps(lines, indent=1)[-6000:] + proc.stderr[-3000:]
    kills = lines["kills"]["per_kind"]
    assert kills == {k: 1 for k in ("shard-worker", "gateway", "api", "venue", "redis", "temporal",
                                    "postgres")}
    assert lines["fills"]["venue_fills"] == lines["fills"]["booked"] > 0
    assert lines["invariants"]["violations"] == 0
    assert sum(lines["orders"]["by_state"].values()) >= 50  # the refused ones have no order row
