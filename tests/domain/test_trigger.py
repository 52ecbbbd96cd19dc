"""Broker-held triggers (domain.trigger): trailing stops and fixed stops folded over quotes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.trigger import TriggerSpec, on_quote, round_stop

D = Decimal


def spec(side: str, kind: str, value: str, hwm: str | None = None) -> TriggerSpec:
    return TriggerSpec("AAPL", side, kind, D(value), None if hwm is None else D(hwm))


def run(s: TriggerSpec, quotes: list[tuple[str, str]]) -> tuple[TriggerSpec, int | None]:
    """Fold quotes (bid, ask); the index of the first that fired."""
    for i, (bid, ask) in enumerate(quotes):
        s, fired = on_quote(s, D(bid), D(ask))
        if fired:
            return s, i
    return s, None


@pytest.mark.parametrize(("s", "quotes", "hwm", "stop", "fired_at"), [
    # sell, $2 trail: follows the bid up, fires when the bid falls to hwm - 2
    (spec("sell", "trail_price", "2"), [("100", "100.1"), ("103", "103.1"), ("101.5", "101.6"),
                                        ("101", "101.1")], "103", "101", 3),
    (spec("sell", "trail_price", "2"), [("100", "100.1"), ("98.01", "98.1")], "100", "98", None),
    # sell, 1% trail: 103 x 0.99 = 101.97
    (spec("sell", "trail_percent", "1"), [("100", "100.1"), ("103", "103.1"), ("101.97", "102")],
     "103", "101.97", 2),
    # rounded away from the market: 101.23 x 0.99 = 100.2177 -> 100.21 (a sell's stop goes down)
    (spec("sell", "trail_percent", "1"), [("101.23", "101.3"), ("100.22", "100.3")],
     "101.23", "100.21", None),
    # buy, $0.50 trail: follows the ask down, fires when the ask rises to low + 0.5
    (spec("buy", "trail_price", "0.5"), [("99.9", "100"), ("98.9", "99"), ("99.4", "99.49")],
     "99", "99.5", None),
    (spec("buy", "trail_price", "0.5"), [("99.9", "100"), ("98.9", "99"), ("99.4", "99.5")],
     "99", "99.5", 2),
    # buy, 1% trail: 101.23 x 1.01 = 102.2423 -> 102.25 (a buy's stop goes up)
    (spec("buy", "trail_percent", "1"), [("101.2", "101.23"), ("102.2", "102.24")],
     "101.23", "102.25", None),
    # a fixed stop: the hwm is followed (shown), the stop never moves
    (spec("sell", "stop", "95"), [("100", "100.1"), ("110", "110.1"), ("95.01", "95.1"),
                                  ("95", "95.1")], "110", "95", 3),
    # a sell trail wider than the price: stop 0, never fires
    (spec("sell", "trail_price", "5"), [("4", "4.1"), ("0.01", "0.02")], "4", "0", None),
    # below $1 the stop has 4 decimals
    (spec("sell", "trail_percent", "3"), [("0.5", "0.51")], "0.5", "0.485", None),
    # a resumed spec (hwm from before a restart): the first quote that crosses fires
    (spec("sell", "trail_price", "2", hwm="110"), [("109", "109.1"), ("108", "108.1")],
     "110", "108", 1),
])
def test_trigger_table(s: TriggerSpec, quotes: list[tuple[str, str]], hwm: str, stop: str,
                       fired_at: int | None) -> None:
    after, at = run(s, quotes)
    assert at == fired_at
    assert after.hwm == D(hwm)
    assert after.stop == D(stop)


@pytest.mark.parametrize(("bid", "ask"), [(None, D(1)), (D(1), None), (D(0), D(1)), (D(-1), D(1)),
                                          (D(2), D(1))])
def test_missing_or_bad_quotes_change_nothing(bid: Decimal | None, ask: Decimal | None) -> None:
    s = spec("sell", "stop", "1000", hwm="5")  # a stop above any price: fires on any real quote
    assert on_quote(s, bid, ask) == (s, False)


def test_no_stop_before_the_first_quote_and_wire_round_trip() -> None:
    s = spec("buy", "trail_percent", "2.5")
    assert s.stop is None
    s2, _ = on_quote(s, D("10"), D("10.01"))
    assert TriggerSpec.from_wire(s2.to_wire()) == s2
    with pytest.raises(ValueError):
        spec("sell", "trail_price", "0")


@pytest.mark.parametrize(("raw", "side", "out"), [
    (D("1.005"), "sell", D("1.00")), (D("1.005"), "buy", D("1.01")),
    (D("0.99995"), "sell", D("0.9999")), (D("0.99995"), "buy", D("1.0000")),
    (D("-3"), "sell", D(0)),
])
def test_round_stop(raw: Decimal, side: str, out: Decimal) -> None:
    assert round_stop(raw, side) == out


prices = st.decimals(min_value=D("0.5"), max_value=D("500"), places=2)
kinds = st.sampled_from([("trail_price", st.decimals(min_value=D("0.01"), max_value=D("20"), places=2)),
                         ("trail_percent", st.decimals(min_value=D("0.01"), max_value=D("50"), places=2))])


@settings(max_examples=300, deadline=None)
@given(side=st.sampled_from(["buy", "sell"]), kind=kinds, data=st.data(),
       quotes=st.lists(prices, min_size=1, max_size=40))
def test_stop_never_moves_against_the_customer_and_fires_first_time(
        side: str, kind: tuple[str, st.SearchStrategy[Decimal]], data: st.DataObject,
        quotes: list[Decimal]) -> None:
    name, values = kind
    value = data.draw(values)
    s = TriggerSpec("AAPL", side, name, value)
    best: Decimal | None = None
    last_stop: Decimal | None = None
    for mid in quotes:
        bid, ask = mid, mid + D("0.01")
        s, fired = on_quote(s, bid, ask)
        price = bid if side == "sell" else ask
        best = price if best is None else (max(best, price) if side == "sell" else min(best, price))
        assert s.hwm == best
        stop = s.stop
        assert stop is not None
        if last_stop is not None:  # a sell's stop only rises, a buy's only falls
            assert (stop >= last_stop) if side == "sell" else (stop <= last_stop)
        last_stop = stop
        # the reference condition, computed without rounding: the rounded stop is never
        # tighter than the trail asked
        trail = value if name == "trail_price" else best * value / 100
        exact = best - trail if side == "sell" else best + trail
        assert (stop <= max(exact, D(0))) if side == "sell" else (stop >= exact)
        assert stop == round_stop(exact, side)
        ref = round_stop(exact, side)  # the stop from the best price, computed here
        crossed = price <= ref if side == "sell" else price >= ref
        assert fired == crossed
        if fired:
            break  # the first quote that crosses fires; the order stops watching
