"""A running venue's fault switches come from ``<data_dir>/faults.json`` (what the chaos run
flips), over the configuration it started with; a bad file is refused and changes nothing."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from simulators.market_maker import MarketMaker, MarketMakerConfig
from simulators.venue_faults import FAULT_FILE, parse_faults, write_faults


def bump(path: Path) -> None:
    """A new mtime even within the file system's timestamp granularity."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_fault_file_switches_a_venue_and_removing_it_restores_the_start(tmp_path: Path) -> None:
    mm = MarketMaker(MarketMakerConfig(data_dir=tmp_path, latency=0.5, fill_delay=0.1))
    try:
        write_faults(tmp_path, {"never_ack": True, "duplicate_reports": True, "latency": 2,
                                "fill_slices": [3, 2], "fill_delay": 0.25,
                                "drop_connection_after_ack": True})
        mm.apply_fault_file()
        assert mm.config.never_ack and mm.config.duplicate_reports
        assert mm.config.latency == 2.0 and mm.config.drop_connection_after_ack
        assert mm.engine.fill_slices == [Decimal(3), Decimal(2)] and mm.engine.fill_delay == 0.25

        (tmp_path / FAULT_FILE).write_text("{not json")
        bump(tmp_path / FAULT_FILE)
        mm.apply_fault_file()  # logged and ignored: the venue keeps what it had
        assert mm.config.never_ack and mm.engine.fill_delay == 0.25

        (tmp_path / FAULT_FILE).unlink()
        mm.apply_fault_file()
        assert not mm.config.never_ack and not mm.config.duplicate_reports
        assert mm.config.latency == 0.5 and mm.engine.fill_slices == [] and mm.engine.fill_delay == 0.1
    finally:
        mm.store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", [[], {"overfill": True}, {"never_ack": 1}, {"latency": -1},
                                 {"latency": True}, {"fill_slices": [0]}, {"fill_slices": "3"}])
def test_bad_fault_switches_are_refused(tmp_path: Path, raw: object) -> None:
    with pytest.raises(ValueError, match="faults"):
        parse_faults(raw)
    with pytest.raises(ValueError):
        write_faults(tmp_path, raw)  # type: ignore[arg-type]
    assert not (tmp_path / FAULT_FILE).exists()
