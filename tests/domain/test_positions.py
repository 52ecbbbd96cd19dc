"""Average-cost basis and position valuation (pure)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.positions import (
    Fill,
    average_cost,
    position_figures,
    to_decimal,
    valuation_price,
)

D = Decimal


def buy(q: str, p: str) -> Fill:
    return Fill("buy", D(q), D(p))


def sell(q: str, p: str) -> Fill:
    return Fill("sell", D(q), D(p))


def test_buys_average_their_cost() -> None:
    b = average_cost([buy("10", "100.00"), buy("5", "106.00")])
    assert b.qty == 15 and b.cost == 1530 and b.average == Fraction(102)
    assert b.last_price == D("106.00") and b.realized_pl == 0


def test_a_sell_keeps_the_average_and_realizes_pl() -> None:
    b = average_cost([buy("10", "100.00"), buy("5", "106.00"), sell("6", "110.00")])
    assert b.qty == 9 and b.average == 102 and b.cost == 918
    assert b.realized_pl == 6 * 8
    assert b.last_price == D("110.00")


def test_non_terminating_average_stays_exact() -> None:
    b = average_cost([buy("1", "100.00"), buy("1", "100.00"), buy("1", "100.01")])
    assert b.average == Fraction("300.01") / 3
    b = average_cost([*[buy("1", "100.00")] * 2, buy("1", "100.01"), sell("1", "99"), sell("1", "99")])
    assert b.qty == 1 and b.cost == Fraction("300.01") / 3  # one share at the unchanged average
    fig = position_figures(D(1), b, D("100.02"))
    assert fig.avg_entry_price == D("100.003333") and fig.cost_basis == D("100.0033")
    assert fig.market_value == D("100.02") and fig.unrealized_pl == D("0.0167")


def test_selling_out_resets_the_basis() -> None:
    b = average_cost([buy("3", "10"), sell("3", "12"), buy("2", "20")])
    assert b.qty == 2 and b.average == 20 and b.realized_pl == 6


def test_oversell_closes_the_position() -> None:
    b = average_cost([buy("3", "10"), sell("5", "12")])
    assert b.qty == 0 and b.cost == 0 and b.realized_pl == 6


@pytest.mark.parametrize("fill", [Fill("buy", D(0), D(1)), Fill("buy", D(1), D(0)),
                                  Fill("short", D(1), D(1))])
def test_bad_fills_are_refused(fill: Fill) -> None:
    with pytest.raises(ValueError):
        average_cost([fill])


def test_figures_at_a_price() -> None:
    b = average_cost([buy("10", "100.00"), buy("5", "106.00"), sell("6", "110.00")])
    fig = position_figures(D(9), b, D("105.5"))
    assert fig.avg_entry_price == 102 and fig.cost_basis == 918
    assert fig.market_value == D("949.5") and fig.unrealized_pl == D("31.5")
    assert fig.unrealized_plpc == D("0.034314")  # 31.5 / 918 = 0.0343137...


def test_figures_without_a_price_or_a_cost() -> None:
    fig = position_figures(D(4), average_cost([]), None)
    assert fig.cost_basis == 0 and fig.avg_entry_price == 0
    assert fig.market_value is None and fig.unrealized_pl is None and fig.unrealized_plpc is None
    fig = position_figures(D(4), average_cost([]), D("2"))
    assert fig.market_value == 8 and fig.unrealized_pl == 8 and fig.unrealized_plpc == 0


def test_ledger_qty_wins_over_the_fills() -> None:
    b = average_cost([buy("10", "5")])
    fig = position_figures(D(12), b, D("6"))  # two shares arrived without a trade
    assert fig.qty == 12 and fig.cost_basis == 60 and fig.market_value == 72


def test_valuation_price_prefers_the_bid() -> None:
    assert valuation_price(D("9.99"), D("10.5")) == D("9.99")
    assert valuation_price(None, D("10.5")) == D("10.5")
    assert valuation_price(D(0), D("10.5")) == D("10.5")  # an empty bid side is no quote
    assert valuation_price(None, None) is None


@pytest.mark.parametrize("x,places,want", [
    (Fraction(5, 2), 0, "2"), (Fraction(7, 2), 0, "4"), (Fraction(-5, 2), 0, "-2"),
    (Fraction(-7, 2), 0, "-4"), (Fraction(1, 8), 2, "0.12"), (Fraction(3, 8), 2, "0.38"),
    (Fraction(100, 3), 6, "33.333333"), (Fraction(200, 3), 6, "66.666667"), (Fraction(0), 4, "0"),
    (Fraction(10**20 + 1, 10), 1, str(10**19) + ".1"),
])
def test_to_decimal_rounds_half_even_exactly(x: Fraction, places: int, want: str) -> None:
    assert to_decimal(x, places) == D(want)


@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 500),
                          st.integers(1, 10**7)), max_size=40))
def test_average_cost_invariants(steps: list[tuple[str, int, int]]) -> None:
    fills = [Fill(side, D(q), D(p).scaleb(-4)) for side, q, p in steps]
    b = average_cost(fills)
    bought = sum((f.qty for f in fills if f.side == "buy"), D(0))
    assert 0 <= b.qty <= bought
    assert b.cost >= 0 and (b.qty > 0 or b.cost == 0)
    # cost + cost of what was sold == everything paid for buys (money never appears or vanishes)
    spent = sum((Fraction(f.qty) * Fraction(f.price) for f in fills if f.side == "buy"), Fraction(0))
    proceeds = sum((Fraction(min(f.qty, q)) * Fraction(f.price) for f, q in _sold(fills)), Fraction(0))
    assert b.cost + proceeds - b.realized_pl == spent


def _sold(fills: list[Fill]) -> list[tuple[Fill, Decimal]]:
    """Each sell with the position it met (the part of it that actually sold)."""
    out, qty = [], D(0)
    for f in fills:
        if f.side == "buy":
            qty += f.qty
        else:
            out.append((f, qty))
            qty -= min(qty, f.qty)
    return out


def test_a_fill_by_the_firm_costs_what_it_moved() -> None:
    """$10 of a $187.45 stock (0.053347559 shares): the cost basis is the $10 paid, not qty x
    price; selling it all for $12 realizes $2 exactly."""
    from fractions import Fraction

    from domain.positions import Fill, average_cost

    q = Decimal("0.053347559")
    basis = average_cost([Fill("buy", q, Decimal("187.45"), Decimal("10"))])
    assert basis.cost == Fraction(10) and basis.qty == q
    sold = average_cost([Fill("buy", q, Decimal("187.45"), Decimal("10")),
                         Fill("sell", q, Decimal("224.94"), Decimal("12"))])
    assert sold.realized_pl == Fraction(2) and sold.qty == 0
