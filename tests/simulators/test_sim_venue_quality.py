"""How simulated venues differ (simulators.matching): fixed and jittered price improvement in
cents, reject and partial-fill rates, all drawn from the engine's seeded RNG."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fix.messages import ExecType, NewOrderSingle
from simulators.matching import MatchingEngine, VenueReport

D = Decimal


def nos(cl: str, qty: str = "100", side: str = "1", tif: str | None = None) -> NewOrderSingle:
    return NewOrderSingle(cl, "AAPL", side, qty, "1", None, None, tif)


def engine(**kw: object) -> MatchingEngine:
    eng = MatchingEngine("MM1", id_prefix="MM1-t", **kw)  # type: ignore[arg-type]
    eng.set_quote("AAPL", "187.10", "187.12")
    return eng


def fills(reports: list[object]) -> list[VenueReport]:
    return [r for r in reports if isinstance(r, VenueReport) and r.exec_type == ExecType.TRADE]


@pytest.mark.parametrize(("cents", "side", "px"), [
    ("0", "1", "187.12"), ("1", "1", "187.11"), ("0.1", "1", "187.119"),
    ("1", "2", "187.11"), ("0.1", "2", "187.101"),
    ("5", "1", "187.10"),  # never past the other side of the quote
    ("5", "2", "187.12"),
])
def test_fixed_improvement_in_cents(cents: str, side: str, px: str) -> None:
    eng = engine(price_improvement_cents=cents)
    [fill] = fills(eng.submit(nos("a", side=side), 0.0))
    assert fill.last_px == D(px)


def test_jitter_stays_in_range_and_is_seeded() -> None:
    def prices(seed: int) -> list[Decimal]:
        eng = engine(price_improvement_cents="0.5", improvement_jitter_cents="1", seed=seed)
        return [fills(eng.submit(nos(f"o{i}"), 0.0))[0].last_px or D(0) for i in range(50)]

    a = prices(7)
    assert a == prices(7)  # same seed, same draws
    assert a != prices(8)
    assert all(D("187.105") <= p <= D("187.115") for p in a)
    assert len(set(a)) > 5


def test_reject_rate_declines_that_share() -> None:
    eng = engine(reject_rate=0.3, seed=1)
    rejected = sum(
        1 for i in range(400)
        if any(r.exec_type == ExecType.REJECTED for r in eng.submit(nos(f"o{i}"), 0.0)
               if isinstance(r, VenueReport)))
    assert 80 <= rejected <= 160
    assert engine(reject_rate=0.0).submit(nos("x"), 0.0)[0].exec_type == ExecType.NEW
    with pytest.raises(ValueError):
        engine(reject_rate=1.5)


def test_partial_fill_rate_fills_in_two_halves() -> None:
    eng = engine(partial_fill_rate=1.0, fill_delay=1.0)
    first = fills(eng.submit(nos("a", qty="101"), 0.0))
    assert [f.last_qty for f in first] == [D(51)]
    assert fills(eng.match(0.5)) == []
    assert [f.last_qty for f in fills(eng.match(1.0))] == [D(50)]
    whole = engine(partial_fill_rate=0.0)
    assert [f.last_qty for f in fills(whole.submit(nos("b", qty="101"), 0.0))] == [D(101)]
