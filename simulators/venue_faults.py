"""Fault switches of a running market maker process, flipped from outside it.

A venue started with a ``data_dir`` (as ``sherwood dev`` starts MM1 and MM2) watches
``<data_dir>/faults.json``: on every tick it re-reads the file when its modification time
changed and applies it over the configuration it was started with, so another process (the
chaos run, an engineer with an editor) can make it misbehave while it runs and the setting
survives a restart of the venue. A missing or emptied file means "as started". The keys:

- ``never_ack`` (drop: order messages get no answer), ``duplicate_reports``, ``possresend_old``,
  ``drop_connection_after_ack`` (disconnect once after the next ack), ``skip_seq``: booleans;
- ``latency``: seconds added before each report (delay);
- ``fill_slices`` (partial fills: a list of positive slice sizes, cycled) and ``fill_delay``
  (seconds between slices), the matching engine's.

What it does not do: venue *bugs* (``overfill``, ``garble_*``: reports Sherwood must refuse) are
not switchable here, and a file that does not parse is logged and ignored (the venue keeps its
current behaviour) rather than stopping the venue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

FAULT_FILE = "faults.json"
BOOL_SWITCHES = ("never_ack", "duplicate_reports", "possresend_old", "drop_connection_after_ack",
                 "skip_seq")
ENGINE_SWITCHES = ("fill_slices", "fill_delay")


@dataclass(frozen=True)
class Faults:
    """Parsed switches: ``config`` for :class:`MarketMakerConfig`, ``engine`` for the engine."""

    config: dict[str, Any]
    engine: dict[str, Any]


def parse_faults(raw: object) -> Faults:
    """Validate the file's JSON object. Raises ValueError naming the first bad key."""
    if not isinstance(raw, dict):
        raise ValueError("faults: expected a JSON object")
    config: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    for key, value in raw.items():
        if key in BOOL_SWITCHES:
            if not isinstance(value, bool):
                raise ValueError(f"faults: {key} must be true or false")
            config[key] = value
        elif key == "latency" or key == "fill_delay":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ValueError(f"faults: {key} must be seconds between 0 and 3600")
            (config if key == "latency" else engine)[key] = float(value)
        elif key == "fill_slices":
            if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ValueError("faults: fill_slices must be a list of positive integers")
            engine[key] = [Decimal(v) for v in value]
        else:
            raise ValueError(f"faults: unknown switch {key!r}")
    return Faults(config, engine)


def write_faults(data_dir: Path, switches: dict[str, Any]) -> None:
    """Replace a venue's fault file atomically (validated first); ``{}`` turns every fault off."""
    parse_faults(switches)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{FAULT_FILE}.tmp"
    tmp.write_text(json.dumps(switches))
    os.replace(tmp, data_dir / FAULT_FILE)


class FaultFile:
    """Watches one venue's fault file; :meth:`changed` returns the new switches once per change."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FAULT_FILE
        self._seen: int | None = None  # st_mtime_ns of what was applied; None: no file

    def changed(self) -> Faults | None:
        """The file's switches if it changed since the last call (an absent file: none), else
        None. Raises ValueError for a file that does not parse (it is not read again until it
        changes)."""
        try:
            mtime: int | None = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._seen:
            return None
        self._seen = mtime
        if mtime is None:
            return Faults({}, {})
        text = self.path.read_text().strip()
        try:
            raw = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"faults: not JSON: {exc}") from exc
        return parse_faults(raw)
