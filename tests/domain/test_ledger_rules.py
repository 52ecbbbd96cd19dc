"""Pure ledger rules: templates balance, amounts parse exactly, the chart is closed."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import ledger as rules
from domain.errors import InvalidAmount, UnbalancedTransaction, UnknownCurrency, UnknownLedgerAccount
from domain.money import money_str, parse_decimal, plain, positive_amount

A = uuid.UUID(int=1)


def sums(txn: rules.LedgerTxn) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for e in txn.entries:
        out[e.currency] += e.amount
    return dict(out)


@given(qty=st.integers(1, 10**6), price=st.decimals("0.0001", "99999", places=4))
def test_fill_templates_balance_per_currency(qty: int, price: Decimal) -> None:
    for build in (rules.buy_fill, rules.sell_fill):
        txn = build("t", A, "AAPL", qty, price)
        assert all(v == 0 for v in sums(txn).values())
        usd = [e.amount for e in txn.entries if e.currency == "USD" and e.account.is_customer]
        assert abs(usd[0]) == qty * price


def test_payload_hash_ignores_entry_order_and_trailing_zeros() -> None:
    t1 = rules.hold_cash("x", A, "10.50")
    t2 = rules.LedgerTxn.build("x", "hold_cash", reversed(rules.hold_cash("x", A, "10.5").entries),
                               account_id=A)
    assert t1.payload_hash() == t2.payload_hash()
    assert t1.payload_hash() != rules.hold_cash("x", A, "10.51").payload_hash()


@pytest.mark.parametrize("value", ["NaN", "inf", "-Infinity", "1e", "", " ", 1.0, True, None, [1]])
def test_non_numbers_refused(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_decimal(value)


@pytest.mark.parametrize("value,ok", [("0.0001", True), ("0.00001", False), ("10.00000", True),
                                      ("-1", False), ("0", False), ("1E+3", True)])
def test_usd_scale_and_sign(value: str, ok: bool) -> None:
    if ok:
        assert positive_amount(value, "USD") == Decimal(value)
    else:
        with pytest.raises(InvalidAmount):
            positive_amount(value, "USD")


def test_chart_of_accounts_is_closed() -> None:
    with pytest.raises(UnknownLedgerAccount):
        rules.customer(A, "bank")  # a house account name on a customer
    with pytest.raises(UnknownLedgerAccount):
        rules.house("cash")
    with pytest.raises(UnknownLedgerAccount):
        rules.customer(A, "shares")  # shares need a symbol
    with pytest.raises(UnknownCurrency):
        rules.customer(A, "shares:not a symbol")
    with pytest.raises(UnknownCurrency):
        rules.Entry.of(rules.customer(A, "cash"), "1", "AAPL")


def test_unbalanced_and_single_entry_refused() -> None:
    with pytest.raises(UnbalancedTransaction):
        rules.LedgerTxn.build("x", "k", [rules.Entry.of(rules.customer(A, "cash"), "1"),
                                         rules.Entry.of(rules.house("bank"), "-2")])
    with pytest.raises(UnbalancedTransaction):
        rules.LedgerTxn.build("x", "k", [rules.Entry.of(rules.customer(A, "cash"), "1")])


def test_reversal_negates_and_may_go_negative() -> None:
    t = rules.hold_cash("x", A, "5")
    r = t.reversed("x:rev")
    assert [e.amount for e in r.entries] == [-e.amount for e in t.entries]
    assert r.allow_negative and r.memo["reverses"] == "x"


def test_display_helpers() -> None:
    assert str(plain(Decimal("400.000"))) == "400"
    assert str(plain(Decimal("4E+2"))) == "400"
    assert money_str(Decimal("12.5")) == "12.50"
    assert money_str(Decimal("12.3456")) == "12.3456"
