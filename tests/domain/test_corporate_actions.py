"""Corporate-action rules (pure): announcements validated, dividends to the cent, splits to
whole shares with exact cash in lieu, cost basis across a split."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import corporate_actions as ca
from domain.errors import DomainError
from domain.positions import Fill, Split, average_cost

D = Decimal
DIV = {"id": "div-1", "ca_type": "dividend", "symbol": "AAPL", "ex_date": "2026-12-01",
       "payable_date": "2026-12-10", "cash": "0.24"}
SPLIT = {"id": "split-1", "ca_type": "split", "symbol": "AAPL", "ex_date": "2026-12-01",
         "old_rate": "1", "new_rate": "2"}


def test_announcements_parse() -> None:
    d = ca.parse_announcement(DIV)
    assert (d.cash, d.payable_date, d.sub_type) == (D("0.24"), date(2026, 12, 10), "cash")
    assert ca.parse_announcement(SPLIT).sub_type == "stock_split"
    assert ca.parse_announcement({**SPLIT, "old_rate": "3", "new_rate": "1"}).sub_type == "reverse_split"


@pytest.mark.parametrize(("change", "code"), [
    ({"ca_type": "merger"}, "unsupported_corporate_action"),
    ({"id": ""}, "invalid_id"),
    ({"id": "x" * 65}, "invalid_id"),
    ({"id": "a b"}, "invalid_id"),
    ({"symbol": "aapl!"}, "invalid_symbol"),
    ({"ex_date": "12/01/2026"}, "invalid_date"),
    ({"payable_date": "2026-11-01"}, "invalid_date"),
    ({"cash": "-1"}, "invalid_cash"),
    ({"cash": "1e9"}, "cash_out_of_range"),
    ({"cash": 0.24}, "invalid_cash"),  # a float: the feed decodes numbers to Decimal
])
def test_bad_dividends_are_refused_with_a_code(change: dict[str, object], code: str) -> None:
    with pytest.raises(DomainError) as err:
        ca.parse_announcement({**DIV, **change})
    assert err.value.code == code, err.value


@pytest.mark.parametrize(("change", "code"), [
    ({"new_rate": "1"}, "invalid_rate"),
    ({"new_rate": "1.5"}, "invalid_new_rate"),
    ({"old_rate": None}, "invalid_old_rate"),
])
def test_bad_splits_are_refused_with_a_code(change: dict[str, object], code: str) -> None:
    with pytest.raises(DomainError) as err:
        ca.parse_announcement({**SPLIT, **change})
    assert err.value.code == code, err.value


def test_a_dividend_is_qty_times_rate_down_to_the_cent() -> None:
    ann = ca.parse_announcement(DIV)
    acct = uuid.uuid4()
    txn = ca.dividend_txn(ann, acct, D("10"))
    assert txn is not None and txn.id == f"div:div-1:{acct}"
    assert {(str(e.account), e.amount) for e in txn.entries} == {
        ("house:dividend_receivable", D("-2.40")), (f"{acct}:cash", D("2.40"))}
    assert ca.dividend_credit(D("3"), D("0.333333")) == D("0.99")
    assert ca.dividend_txn(ann, acct, D("0.01")) is None  # below a cent: nothing to post


def test_splits_forward_and_reverse() -> None:
    fwd = ca.parse_announcement(SPLIT)
    assert ca.split_position(fwd, D("10"), None) == ca.SplitResult(D("10"), D("20"), D("0"), D("0"))
    rev = ca.parse_announcement({**SPLIT, "old_rate": "3", "new_rate": "1"})
    r = ca.split_position(rev, D("10"), D("187.45"))
    assert (r.new_qty, r.in_lieu_old, r.cash_in_lieu) == (D("3"), D("1"), D("187.45"))
    three_two = ca.parse_announcement({**SPLIT, "old_rate": "2", "new_rate": "3"})
    r = ca.split_position(three_two, D("5"), D("10"))  # 7.5 new: 7, a third of an old share left
    assert (r.new_qty, r.in_lieu_old, r.cash_in_lieu) == (D("7"), D("0.333333333"), D("3.33"))
    with pytest.raises(DomainError) as err:
        ca.split_position(rev, D("10"), None)
    assert err.value.code == "no_closing_price"
    acct = uuid.uuid4()
    txn = ca.split_txn(rev, acct, ca.split_position(rev, D("10"), D("100")))
    assert txn is not None
    assert {(str(e.account), e.amount) for e in txn.entries} == {
        (f"{acct}:shares:AAPL", D("-7")), ("house:reorg:AAPL", D("7")),
        ("house:reorg_cash", D("-100.00")), (f"{acct}:cash", D("100.00"))}


@given(st.integers(1, 10_000), st.integers(1, 20), st.integers(1, 20))
def test_a_split_keeps_whole_shares_and_pays_the_rest(qty: int, old: int, new: int) -> None:
    if old == new:
        return
    ann = ca.parse_announcement({**SPLIT, "old_rate": str(old), "new_rate": str(new)})
    r = ca.split_position(ann, D(qty), D("9.99"))
    assert r.new_qty == r.new_qty.to_integral_value() and r.new_qty * old <= qty * new
    assert (r.new_qty + 1) * old > qty * new  # as many whole new shares as the old ones make
    assert D(0) <= r.cash_in_lieu <= D("9.99") * old  # less than a new share's worth


def test_cost_basis_across_splits() -> None:
    two_for_one = Split(D("2"), D("1"), D("10"), D("20"))
    b = average_cost([Fill("buy", D("10"), D("100")), two_for_one])
    assert (b.qty, b.cost, b.average, b.last_price) == (D("20"), 1000, 50, D("50"))
    one_for_three = Split(D("1"), D("3"), D("10"), D("3"), D("100"))
    b = average_cost([Fill("buy", D("10"), D("90")), one_for_three])
    # 9 of the 10 old shares kept (cost 810), the tenth paid 100 in lieu (cost 90: +10 realized)
    assert (b.qty, b.cost, b.realized_pl, b.average) == (D("3"), 810, 10, 270)


def test_a_symbol_change() -> None:
    ann = ca.parse_announcement({"id": "sc-1", "ca_type": "symbol_change", "symbol": "FB",
                                 "new_symbol": "META", "ex_date": "2026-12-01"})
    acct = uuid.uuid4()
    txn = ca.symbol_change_txn(ann, acct, D("7"))
    assert {(str(e.account), e.amount) for e in txn.entries} == {
        (f"{acct}:shares:FB", D("-7")), ("house:reorg:FB", D("7")),
        ("house:reorg:META", D("-7")), (f"{acct}:shares:META", D("7"))}
    for bad in ("", "FB", "meta!"):
        with pytest.raises(DomainError) as err:
            ca.parse_announcement({"id": "sc-1", "ca_type": "symbol_change", "symbol": "FB",
                                   "new_symbol": bad, "ex_date": "2026-12-01"})
        assert err.value.code == "invalid_new_symbol"
