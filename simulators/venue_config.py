"""What a simulated venue (:class:`simulators.market_maker.MarketMaker`) can be told: its
configuration, and the parsers of the command line's lists (``sherwood sim``).

Only values: nothing here starts, reads or sends anything. Importable from
:mod:`simulators.market_maker` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from simulators.quote_sources import DEFAULT_HALTS_KEY, DEFAULT_QUOTES_KEY


@dataclass(frozen=True)
class MarketMakerConfig:
    """Everything a simulated venue can be told. Durations in seconds, prices/qty as Decimal.

    ``skip_seq_every``: with ``skip_seq``, one outbound sequence number is skipped before every
    N-th application message. ``day_close``: New York wall-clock time at which DAY orders expire
    (None = only when :meth:`MarketMaker.expire_day_orders` is called).
    """

    sender_comp_id: str = "MM1"
    target_comp_id: str = "SHERWOOD"
    host: str = "127.0.0.1"
    port: int = 9878
    heartbeat_interval: float = 30.0
    data_dir: Path | None = None
    redis_url: str | None = None
    quotes_key: str = DEFAULT_QUOTES_KEY
    halts_key: str = DEFAULT_HALTS_KEY
    seed: int | None = 0
    tick_interval: float = 1.0
    price_improvement_bps: Decimal = Decimal(0)
    # how this venue differs from the others (simulators/matching.py; draws seeded by ``seed``)
    price_improvement_cents: Decimal = Decimal(0)
    improvement_jitter_cents: Decimal = Decimal(0)
    reject_rate: float = 0.0
    partial_fill_rate: float = 0.0
    fill_slices: tuple[int, ...] = ()
    fill_delay: float = 0.0
    max_liquidity: int | None = None
    halted: frozenset[str] = frozenset()
    day_close: time | None = None
    # the venue's business clock runs this far ahead of the wall clock (like the order workers'
    # market_clock_offset_s): it decides when the opening and closing auctions run
    clock_offset_s: float = 0.0
    latency: float = 0.0
    never_ack: bool = False
    duplicate_reports: bool = False
    possresend_old: bool = False
    overfill: bool = False
    # a venue bug: trade reports carry these field texts instead (keys last_px, last_qty), e.g.
    # {"last_px": "187.12345"}; the venue's own order state is not affected
    garble_trades: dict[str, str] | None = None
    # the same for cancel confirmations (keys cum_qty, leaves_qty): a venue that ends an order with
    # another cumulative quantity than it reported in its trades
    garble_cancels: dict[str, str] | None = None
    drop_connection_after_ack: bool = False
    skip_seq: bool = False
    skip_seq_every: int = 3
    session_overrides: dict[str, Any] = field(default_factory=dict)


def parse_slices(text: str | None) -> tuple[int, ...]:
    """``"400,300,300"`` → (400, 300, 300); ``"250"`` is a max slice size; empty → ()."""
    if not text:
        return ()
    slices = tuple(int(part) for part in text.split(",") if part.strip())
    if any(s <= 0 for s in slices):
        raise ValueError(f"fill slices must be positive: {text}")
    return slices


def parse_symbols(text: str | None) -> frozenset[str]:
    return frozenset(s.strip().upper() for s in (text or "").split(",") if s.strip())
