"""Benchmark of the ``sherwood`` command's start-up, against a bare interpreter.

Run: ``python -m bench.cli [--runs N]``. Every CLI command, every test that runs one as a process
and every child of ``sherwood dev`` pays the start-up before doing anything, so it measures, as
the median wall time of ``N`` runs of a fresh process each:

* ``python -c pass`` (the baseline: the interpreter alone),
* ``python -m sherwood --help`` and ``python -m sherwood ops --help`` (what every command
  imports before it runs),

and prints which of the heavy libraries ``import sherwood.cli`` loads (none should: each command
imports what it uses when it runs). One JSON line per result, ``ratio`` = ours / baseline.

What it does not measure: a command's own work (its database or Temporal calls).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("pandas", "exchange_calendars", "numpy", "psycopg", "sqlalchemy", "temporalio",
         "redis", "fastapi", "prometheus_client")


def _median_s(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = _median_s([sys.executable, "-c", "pass"], args.runs)
    for name, argv in (("help", ["--help"]), ("ops_help", ["ops", "--help"])):
        ours = _median_s([sys.executable, "-m", "sherwood", *argv], args.runs)
        print(json.dumps({"bench": "cli_startup", "case": name, "median_s": round(ours, 3),
                          "baseline_s": round(base, 3), "ratio": round(ours / base, 1)}))
    probe = ("import sys, sherwood.cli; "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                            text=True).stdout.strip()
    print(json.dumps({"bench": "cli_startup", "case": "heavy_imports",
                      "loaded": loaded.split(",") if loaded else []}))


if __name__ == "__main__":
    main()
