"""The pure folds of the audit reconstruction (domain.reconstruction) and the export line
(domain.cat_export): balances from entries, each order's state / qty / fill / hold from its
events and transactions (a replace carries the hold), positions' cost basis as the API folds it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.cat_export import cat_line
from domain.positions import Fill
from domain.reconstruction import (
    EventRow,
    HoldEntry,
    OrderFacts,
    balances_as_of,
    holds_by_order,
    order_of_txn,
    orders_as_of,
    positions_as_of,
    utc_micro,
)

T0 = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)
A, B = uuid.UUID(int=1), uuid.UUID(int=2)
D = Decimal


def ev(n: int, order: uuid.UUID, event: str, to: str | None, **data: object) -> EventRow:
    return EventRow(n, order, n, event, "x", None, None, to, None, data, T0 + timedelta(seconds=n))


def facts(order: uuid.UUID, side: str = "buy", qty: str | None = "10") -> OrderFacts:
    return OrderFacts(order, f"c{order.int}", "AAPL", side, "limit", "day",
                      None if qty is None else D(qty), None, D("100"), None, T0)


@pytest.mark.parametrize("txn, order", [
    (f"order:{A}:hold", A), (f"order:{A}:fill:MM1:e1", A), (f"order:{A}:release:canceled", A),
    ("t:abc:dep", None), ("order:not-a-uuid:hold", None), ("order", None),
])
def test_the_order_of_a_ledger_transaction(txn: str, order: uuid.UUID | None) -> None:
    assert order_of_txn(txn) == order


def test_balances_sum_entries_and_leave_out_zeros() -> None:
    assert balances_as_of([("cash", D(100)), ("cash", D(-40)), ("cash_held", D(40)),
                           ("cash_held", D(-40)), ("shares:AAPL", D(2))]) == {
        "cash": D(60), "shares:AAPL": D(2)}


def test_hold_is_the_orders_own_hold_entries() -> None:
    entries = [HoldEntry(f"order:{A}:hold", "cash", D(-1000)),
               HoldEntry(f"order:{A}:hold", "cash_held", D(1000)),
               HoldEntry(f"order:{A}:fill:MM1:1", "cash_held", D(-400)),
               HoldEntry(f"order:{B}:hold", "shares_held:AAPL", D(5)),
               HoldEntry("t:x:dep", "cash", D(5000))]
    assert holds_by_order(entries, []) == {A: D(600), B: D(5)}


def test_a_replace_carries_the_hold_to_the_replacement() -> None:
    entries = [HoldEntry(f"order:{A}:hold", "cash_held", D(1000)),
               HoldEntry(f"order:{B}:hold", "cash_held", D(200)),
               HoldEntry(f"order:{B}:release:replaced", "cash_held", D(-300))]
    events = [ev(1, A, "replaced", "REPLACED", replaced_by=str(B))]
    assert holds_by_order(entries, events) == {A: D(0), B: D(900)}
    assert holds_by_order(entries, []) == {A: D(1000), B: D(-100)}  # before the replace


def test_orders_stand_in_their_last_state_with_their_fills_and_holds() -> None:
    events = [ev(1, A, "created", "PENDING", request={"qty": "10"}), ev(2, A, "funds_held", "FUNDS_HELD"),
              ev(3, A, "routed", "ROUTED", venue="MM1"), ev(4, A, "partial_fill", "PARTIALLY_FILLED"),
              ev(5, A, "trailing_triggered", None),  # no state change
              ev(6, B, "created", "PENDING", request={"qty": "5"}), ev(7, B, "rejected", "REJECTED")]
    out = orders_as_of([facts(A), facts(B, "sell", "5"), facts(uuid.UUID(int=3))], events,
                       {A: D(4)}, {A: D(600)})
    assert [(o.id, o.state, o.filled_qty, o.hold_amount, o.open) for o in out] == [
        (str(A), "PARTIALLY_FILLED", D(4), D(600), True), (str(B), "REJECTED", D(0), D(0), False)]
    assert out[1].hold_currency == "AAPL" and out[0].hold_currency == "USD"


def test_the_quantity_is_the_requests_then_a_venue_replaces() -> None:
    events = [ev(1, A, "created", "PENDING", request={"qty": "10"}),
              ev(2, A, "new", "ACKED", exec_id="e", qty="7")]
    assert orders_as_of([facts(A, qty="99")], events[:1], {}, {})[0].qty == D(10)
    assert orders_as_of([facts(A, qty="99")], events, {}, {})[0].qty == D(7)
    # a notional order's request has no qty: the row's
    assert orders_as_of([facts(A, qty=None)], [ev(1, A, "created", "PENDING", request={})],
                        {}, {})[0].qty is None


def test_positions_have_the_average_cost_of_their_fills() -> None:
    fills = [(T0, "AAPL", Fill("buy", D(10), D("100"))),
             (T0 + timedelta(1), "AAPL", Fill("buy", D(5), D("130"))),
             (T0 + timedelta(2), "AAPL", Fill("sell", D(3), D("150")))]
    pos = positions_as_of({"shares:AAPL": D(10), "shares_held:AAPL": D(2), "cash": D(5)}, fills, [], {})
    assert [(p.symbol, p.qty, p.cost_basis, p.avg_entry_price) for p in pos] == [
        ("AAPL", D(12), D(1320), D(110))]


def test_utc_with_microseconds() -> None:
    assert utc_micro(datetime(2025, 3, 4, 9, 30, 0, 5, tzinfo=UTC)) == "2025-03-04T09:30:00.000005Z"


@pytest.mark.parametrize("event, kind, qty, price, venue", [
    ("created", "new_order", "10", "100", None),
    ("funds_held", "internal", "10", "100", None),
    ("routed", "route", "10", "100", "MM1"),
    ("partial_fill", "fill", "4", "99.5", "MM1"),
    ("house_fill", "fill", "4", "99.5", "house"),
    ("canceled", "cancel", "10", "100", "MM1"),
    ("rejected", "reject", "10", "100", None),
    ("replaced", "replace", "10", "100", "MM1"),
])
def test_export_lines(event: str, kind: str, qty: str, price: str, venue: str | None) -> None:
    line = cat_line(firm_id="F1", event_id="0:1", account_id=str(A), order_id=str(B),
                    client_order_id="c", event=event, symbol="AAPL", side="buy",
                    order_type="limit", time_in_force="day", order_qty=D("10.0000"),
                    notional=None, limit_price=D("100.00"), stop_price=None, venue="MM1",
                    to_state="X", data={"qty": "4", "price": "99.50"}, at=T0)
    assert (line["event_type"], line["qty"], line["price"], line["venue"]) == (kind, qty, price, venue)
    assert line["firm_id"] == "F1" and line["event_timestamp"] == "2025-03-04T15:00:00.000000Z"
