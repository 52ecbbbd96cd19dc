"""Unit tests of the pure matching engine (simulators.matching): no I/O, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from fix.messages import ExecType, NewOrderSingle, OrderCancelReplaceRequest, OrdStatus
from simulators.matching import (
    MatchingEngine,
    Report,
    VenueCancelReject,
    VenueReport,
    fmt_decimal,
    improve,
    tick_size,
)

D = Decimal


def nos(
    cl: str,
    qty: str = "100",
    side: str = "1",
    ord_type: str = "1",
    symbol: str = "AAPL",
    price: str | None = None,
    stop: str | None = None,
    tif: str | None = None,
) -> NewOrderSingle:
    return NewOrderSingle(cl, symbol, side, qty, ord_type, price, stop, tif)


def engine(**kw: object) -> MatchingEngine:
    eng = MatchingEngine("MM1", id_prefix="MM1-t", **kw)  # type: ignore[arg-type]
    eng.set_quote("AAPL", "187.10", "187.12")
    eng.set_quote("SIRI", "0.5000", "0.5004")
    return eng


def execs(reports: Sequence[Report]) -> list[VenueReport]:
    assert all(isinstance(r, VenueReport) for r in reports), reports
    return [r for r in reports if isinstance(r, VenueReport)]


def kinds(reports: Sequence[Report]) -> list[tuple[str, str]]:
    return [(r.exec_type, r.ord_status) for r in execs(reports)]


# --------------------------------------------------------------------------- prices


def test_tick_and_improvement_rounding() -> None:
    assert tick_size(D("1.00")) == D("0.01")
    assert tick_size(D("0.9999")) == D("0.0001")
    # 1 bp off 187.12 = 187.101288 -> rounded towards the quote
    assert improve(D("187.12"), "1", D(1)) == D("187.1013")
    assert improve(D("187.10"), "2", D(1)) == D("187.1187")
    assert improve(D("187.12"), "1", D(0)) == D("187.12")
    assert fmt_decimal(D("1E+3")) == "1000"
    assert fmt_decimal(D("187.1200")) == "187.12"
    assert fmt_decimal(D("0.00001")) == "0.00001"


def test_market_buy_fills_at_improved_ask() -> None:
    eng = engine(price_improvement_bps=1)
    r = execs(eng.submit(nos("c1", "100"), 0))
    assert kinds(r) == [("0", "0"), ("F", "2")]
    ack, fill = r
    assert ack.leaves_qty == 100 and ack.cum_qty == 0 and ack.order_id == fill.order_id
    assert fill.last_px == D("187.1013") and fill.last_qty == 100
    assert fill.avg_px == D("187.1013") and fill.cum_qty == 100 and fill.leaves_qty == 0
    assert ack.exec_id != fill.exec_id


def test_market_sell_fills_at_bid() -> None:
    eng = engine()
    fill = execs(eng.submit(nos("c1", "5", side="2"), 0))[-1]
    assert fill.last_px == D("187.10") and fill.ord_status == "2"


def test_sub_dollar_improvement_keeps_four_decimals() -> None:
    eng = engine(price_improvement_bps=10)
    fill = execs(eng.submit(nos("c1", "1000", symbol="SIRI"), 0))[-1]
    # 0.5004 * (1 - 0.001) = 0.4998996, rounded up (towards the ask) to the $0.0001
    assert fill.last_px == D("0.4999")


def test_limit_marketable_fills_immediately_no_worse_than_limit() -> None:
    eng = engine()
    r = execs(eng.submit(nos("c1", "10", ord_type="2", price="190.00"), 0))
    assert kinds(r) == [("0", "0"), ("F", "2")]
    assert r[-1].last_px == D("187.12")


def test_limit_rests_then_fills_when_price_crosses() -> None:
    eng = engine()
    r = execs(eng.submit(nos("c1", "10", ord_type="2", price="186.00", tif="1"), 0))
    assert kinds(r) == [("0", "0")]
    eng.set_quote("AAPL", "186.10", "186.12")
    assert eng.match(1) == []
    eng.set_quote("AAPL", "185.98", "186.00")
    fills = execs(eng.match(2))
    assert kinds(fills) == [("F", "2")]
    assert fills[0].last_px == D("186.00") and fills[0].avg_px == D("186.00")


def test_sell_limit_rests_then_fills() -> None:
    eng = engine()
    assert kinds(eng.submit(nos("s1", "10", side="2", ord_type="2", price="188.00"), 0)) == [
        ("0", "0")]
    eng.set_quote("AAPL", "188.05", "188.07")
    assert execs(eng.match(1))[0].last_px == D("188.05")


def test_stop_triggers_then_fills_as_market() -> None:
    eng = engine()
    assert kinds(eng.submit(nos("c1", "10", ord_type="3", stop="188.00"), 0)) == [("0", "0")]
    eng.set_quote("AAPL", "187.90", "187.95")
    assert eng.match(1) == []
    eng.set_quote("AAPL", "188.01", "188.03")
    fills = execs(eng.match(2))
    assert kinds(fills) == [("F", "2")] and fills[0].last_px == D("188.03")


def test_sell_stop_limit_triggers_then_rests_as_limit() -> None:
    eng = engine()
    eng.submit(nos("c1", "10", side="2", ord_type="4", stop="186.00", price="185.90"), 0)
    eng.set_quote("AAPL", "185.80", "185.85")  # triggers (bid <= stop) but bid < limit
    assert eng.match(1) == []
    assert eng.order("c1") is not None and eng.order("c1").triggered  # type: ignore[union-attr]
    eng.set_quote("AAPL", "185.95", "185.97")  # back above the limit: the sell limit fills
    fills = execs(eng.match(2))
    assert kinds(fills) == [("F", "2")] and fills[0].last_px == D("185.95")


def test_partial_fill_slices_400_300_300_exact_totals() -> None:
    eng = engine(fill_slices=[400, 300, 300])
    r = execs(eng.submit(nos("c1", "1000", ord_type="2", price="200.00"), 0))
    assert kinds(r) == [("0", "0"), ("F", "1"), ("F", "1"), ("F", "2")]
    assert [x.last_qty for x in r[1:]] == [400, 300, 300]
    assert [x.cum_qty for x in r[1:]] == [400, 700, 1000]
    assert [x.leaves_qty for x in r[1:]] == [600, 300, 0]
    assert len({x.exec_id for x in r}) == 4


def test_partial_fills_with_delay_and_moving_prices_avg_px_exact() -> None:
    eng = engine(fill_slices=[400, 300, 300], fill_delay=1.0)
    r = execs(eng.submit(nos("c1", "1000"), 0))
    assert kinds(r) == [("0", "0"), ("F", "1")] and r[1].last_px == D("187.12")
    assert eng.next_fill_due() == 1.0
    assert eng.match(0.5) == []
    eng.set_quote("AAPL", "187.20", "187.21")
    r2 = execs(eng.match(1.0))
    assert [(x.last_qty, x.last_px) for x in r2] == [(300, D("187.21"))]
    eng.set_quote("AAPL", "187.30", "187.33")
    r3 = execs(eng.match(2.5))
    assert r3[0].cum_qty == 1000 and r3[0].leaves_qty == 0 and r3[0].ord_status == "2"
    expected = (400 * D("187.12") + 300 * D("187.21") + 300 * D("187.33")) / 1000
    assert r3[0].avg_px == expected == D("187.21")
    # 131011 / 700 does not terminate: AvgPx is rounded to 8 places, half-even
    assert r2[0].avg_px == D("187.15857143")


def test_cancel_between_delayed_slices_cancels_the_rest() -> None:
    eng = engine(fill_slices=[400], fill_delay=5)
    eng.submit(nos("c1", "1000"), 0)
    r = execs(eng.cancel("c1", "x1"))
    assert kinds(r) == [("4", "4")]
    assert r[0].cum_qty == 400 and r[0].leaves_qty == 0 and r[0].orig_cl_ord_id == "c1"
    assert r[0].cl_ord_id == "x1"
    assert eng.match(100) == []


def test_ioc_partial_then_cancel_rest() -> None:
    eng = engine(max_liquidity=700, fill_slices=[400, 300, 300])
    r = execs(eng.submit(nos("c1", "1000", tif="3"), 0))
    assert kinds(r) == [("0", "0"), ("F", "1"), ("F", "1"), ("4", "4")]
    assert r[-1].cum_qty == 700 and r[-1].leaves_qty == 0
    assert r[-1].avg_px == D("187.12")


def test_ioc_not_marketable_cancels_all() -> None:
    eng = engine()
    r = execs(eng.submit(nos("c1", "10", ord_type="2", price="150.00", tif="3"), 0))
    assert kinds(r) == [("0", "0"), ("4", "4")] and r[-1].cum_qty == 0


def test_fok_all_or_nothing() -> None:
    eng = engine(max_liquidity=500)
    r = execs(eng.submit(nos("c1", "1000", tif="4"), 0))
    assert kinds(r) == [("0", "0"), ("4", "4")] and r[-1].cum_qty == 0
    r = execs(eng.submit(nos("c2", "500", tif="4"), 0))
    assert kinds(r) == [("0", "0"), ("F", "2")] and r[-1].cum_qty == 500


def test_day_orders_expire_gtc_rest() -> None:
    eng = engine()
    eng.submit(nos("day", "10", ord_type="2", price="150.00"), 0)
    eng.submit(nos("gtc", "10", ord_type="2", price="150.00", tif="1"), 0)
    r = execs(eng.expire_day_orders())
    assert [(x.cl_ord_id, x.exec_type, x.ord_status, x.leaves_qty) for x in r] == [
        ("day", "C", "C", 0)]
    assert eng.order("gtc").working  # type: ignore[union-attr]
    assert eng.expire_day_orders() == []


def test_cancel_resting_filled_and_unknown() -> None:
    eng = engine()
    eng.submit(nos("rest", "10", ord_type="2", price="150.00"), 0)
    r = execs(eng.cancel("rest", "x1"))
    assert kinds(r) == [("4", "4")] and r[0].leaves_qty == 0 and r[0].cum_qty == 0

    eng.submit(nos("done", "10"), 0)
    rej = eng.cancel("done", "x2")
    assert len(rej) == 1 and isinstance(rej[0], VenueCancelReject)
    assert rej[0].cxl_rej_reason == 0 and rej[0].ord_status == "2" and rej[0].order_id != "NONE"

    rej = eng.cancel("nope", "x3")
    assert isinstance(rej[0], VenueCancelReject)
    assert rej[0].cxl_rej_reason == 1 and rej[0].order_id == "NONE"
    assert rej[0].orig_cl_ord_id == "nope" and rej[0].cl_ord_id == "x3"

    rej = eng.cancel("rest", "x4")  # already canceled -> too late
    assert isinstance(rej[0], VenueCancelReject) and rej[0].ord_status == "4"
    assert rej[0].cxl_rej_reason == 0


def test_status_request() -> None:
    eng = engine(fill_slices=[400], fill_delay=10)
    eng.submit(nos("c1", "1000"), 0)
    st = eng.status("c1")
    assert (st.exec_type, st.ord_status, st.cum_qty, st.leaves_qty) == ("I", "1", 400, 600)
    assert st.avg_px == D("187.12")
    unknown = eng.status("zzz", symbol="AAPL", side="1")
    assert (unknown.exec_type, unknown.ord_status, unknown.text, unknown.order_id) == (
        "I", "8", "unknown order", "NONE")
    eng.cancel("c1", "x1")
    assert eng.status("x1").ord_status == "4" and eng.status("c1").cum_qty == 400


@pytest.mark.parametrize(
    ("req", "reason", "text"),
    [
        (nos("r1", symbol="ZZZZ"), 1, "unknown symbol"),
        (nos("r2", qty="0"), 13, "invalid quantity"),
        (nos("r3", qty="-5"), 13, "invalid quantity"),
        (nos("r4", qty="1.5"), 13, "invalid quantity"),
        (nos("r5", qty="abc"), 13, "invalid quantity"),
        (nos("r6", ord_type="2", price="-1"), 0, "invalid price"),
        (nos("r7", ord_type="2", price="187.123"), 0, "not on a 0.01 tick"),
        (nos("r8", ord_type="2"), 0, "Price(44)"),
        (nos("r9", ord_type="3"), 0, "StopPx(99)"),
        (nos("r10", ord_type="7"), 11, "OrdType(40)"),
        (nos("r11", tif="6"), 11, "TimeInForce(59)"),
        (NewOrderSingle("r12", "AAPL", "1", None, "1"), 0, "OrderQty(38)"),
        (NewOrderSingle("r13", None, "1", "10", "1"), 0, "Symbol(55)"),
        (NewOrderSingle("r14", "AAPL", None, "10", "1"), 0, "Side(54)"),
        (NewOrderSingle(None, "AAPL", "1", "10", "1"), 0, "ClOrdID(11)"),
    ],
)
def test_rejects(req: NewOrderSingle, reason: int, text: str) -> None:
    r = execs(engine().submit(req, 0))
    assert len(r) == 1
    assert (r[0].exec_type, r[0].ord_status, r[0].ord_rej_reason) == ("8", "8", reason)
    assert r[0].text is not None and text in r[0].text
    assert r[0].leaves_qty == 0 and r[0].cum_qty == 0


def test_halted_symbol_rejects_and_resting_orders_wait() -> None:
    eng = engine(halted=["AAPL"])
    r = execs(eng.submit(nos("h1"), 0))
    assert (r[0].exec_type, r[0].ord_rej_reason) == ("8", 2) and "halted" in (r[0].text or "")
    eng.halted.clear()
    eng.submit(nos("h2", ord_type="2", price="150.00"), 0)
    eng.halted.add("AAPL")
    eng.set_quote("AAPL", "149.00", "149.01")
    assert eng.match(1) == []
    eng.halted.clear()
    assert kinds(eng.match(2)) == [("F", "2")]
    # an external halt (e.g. Redis) rejects too
    r = execs(eng.submit(nos("h3"), 3, halted=True))
    assert r[0].exec_type == "8" and "halted" in (r[0].text or "")


def test_duplicate_clordid_never_creates_second_order() -> None:
    eng = engine()
    first = execs(eng.submit(nos("c1", "10", ord_type="2", price="150.00"), 0))
    again = execs(eng.submit(nos("c1", "999"), 1))
    assert len(eng.orders()) == 1
    assert len(again) == 1 and again[0].exec_type == ExecType.ORDER_STATUS
    assert again[0].order_id == first[0].order_id and again[0].ord_status == OrdStatus.NEW
    assert again[0].order_qty == 10 and again[0].text == "duplicate ClOrdID"
    # a filled one too, and a rejected one
    eng.submit(nos("c2", "10"), 0)
    assert execs(eng.submit(nos("c2", "10"), 0))[0].ord_status == "2"
    eng.submit(nos("c3", "10", symbol="NOPE"), 0)
    dup = execs(eng.submit(nos("c3", "10"), 0))
    assert dup[0].ord_status == "8" and len(eng.orders()) == 2
    # a cancel may not reuse an order's ClOrdID
    rej = eng.cancel("c1", "c2")
    assert isinstance(rej[0], VenueCancelReject) and rej[0].cxl_rej_reason == 6


def test_exec_ids_unique_and_prefixed_per_run() -> None:
    a = MatchingEngine("MM1")
    b = MatchingEngine("MM1")
    assert a.id_prefix != b.id_prefix and a.id_prefix.startswith("MM1-")
    eng = engine(fill_slices=[1])
    ids = [r.exec_id for r in execs(eng.submit(nos("c1", "50"), 0))]
    assert len(ids) == len(set(ids)) == 51


# --------------------------------------------------------------------------- cancel/replace


def ocrr(orig: str, cl: str, qty: str, price: str | None = "150.00", ord_type: str = "2",
         side: str = "1", symbol: str = "AAPL", tif: str | None = None) -> OrderCancelReplaceRequest:
    return OrderCancelReplaceRequest(orig, cl, symbol, side, qty, ord_type, price, None, tif)


def test_replace_resting_limit_takes_new_terms_and_clordid() -> None:
    eng = engine()
    eng.submit(nos("c1", "10", ord_type="2", price="150.00"), 0)
    r = execs(eng.replace(ocrr("c1", "c2", "20", "151.00"), 0))
    assert kinds(r) == [("5", "0")]
    assert (r[0].cl_ord_id, r[0].orig_cl_ord_id, r[0].order_qty, r[0].price) == (
        "c2", "c1", 20, D("151.00"))
    assert r[0].leaves_qty == 20 and r[0].cum_qty == 0
    order = eng.order("c2")
    assert order is not None and order is eng.order("c1") and order.cl_ord_id == "c2"
    # the new terms work: a limit at the ask fills, reported under the new ClOrdID
    r = execs(eng.replace(ocrr("c2", "c3", "20", "187.12"), 0))
    assert kinds(r) == [("5", "0"), ("F", "2")] and r[1].cl_ord_id == "c3"


def test_replace_after_a_partial_fill_keeps_the_fill_and_total() -> None:
    eng = engine(fill_slices=[4], fill_delay=5)
    r = execs(eng.submit(nos("c1", "10", ord_type="2", price="187.12"), 0))
    assert r[-1].cum_qty == 4
    r = execs(eng.replace(ocrr("c1", "c2", "6", "150.00"), 1))
    assert kinds(r) == [("5", "1")] and r[0].cum_qty == 4 and r[0].leaves_qty == 2
    # a total at or below what filled is refused, the order lives on
    rej = eng.replace(ocrr("c2", "c3", "4", "150.00"), 2)
    assert isinstance(rej[0], VenueCancelReject) and rej[0].response_to == "2"
    assert "not above the 4 filled" in rej[0].text and eng.order("c2").working  # type: ignore[union-attr]


def test_replace_refusals_answer_cancel_reject_response_to_2() -> None:
    eng = engine()
    eng.submit(nos("done", "10"), 0)  # a market order: filled at once
    eng.submit(nos("rest", "10", ord_type="2", price="150.00"), 0)
    cases = [
        (ocrr("nope", "x1", "10"), 1, "unknown order"),
        (ocrr("done", "x2", "10"), 0, "too late to replace: order is filled"),
        (ocrr("rest", "done", "10"), 6, "duplicate ClOrdID"),
        (ocrr("rest", "x3", "10", side="2"), 2, "symbol and side cannot be replaced"),
        (ocrr("rest", "x4", "0"), 2, "invalid quantity"),
        (ocrr("rest", "x5", "10", price=None), 2, "Price"),
    ]
    eng.halted.add("AAPL")
    [rej] = eng.replace(ocrr("rest", "x6", "10", "149.00"), 0)
    assert isinstance(rej, VenueCancelReject) and "halted" in rej.text
    eng.halted.clear()
    for req, reason, text in cases:
        [rej] = eng.replace(req, 0)
        assert isinstance(rej, VenueCancelReject), req
        assert (rej.cxl_rej_reason, rej.response_to) == (reason, "2") and text in rej.text, rej
    eng.replace(ocrr("rest", "r2", "10", "149.00"), 0)
    [rej] = eng.replace(ocrr("rest", "r3", "10"), 0)  # the old ClOrdID is no longer the order's
    assert isinstance(rej, VenueCancelReject) and rej.cxl_rej_reason == 0
    order = eng.order("r2")
    assert order is not None and order.working and order.price == D("149.00")


# --------------------------------------------------------------------------- auctions


def test_auction_orders_wait_for_their_auction_then_execute_or_expire() -> None:
    """TimeInForce 2 (AtTheOpening) / 7 (AtTheClose): acknowledged, never matched before their
    auction, however marketable; at it, a market order or a marketable limit fills its whole
    quantity at one price; the rest expires (ExecType C)."""
    eng = engine(fill_slices=[10])
    assert kinds(eng.submit(nos("O1", qty="30", tif="2"), 0.0)) == [("0", "0")]
    assert kinds(eng.submit(nos("O2", ord_type="2", price="180.00", tif="2"), 0.0)) == [("0", "0")]
    assert kinds(eng.submit(nos("C1", qty="5", side="2", tif="7"), 0.0)) == [("0", "0")]
    assert eng.match(1.0) == []  # nothing trades before its auction
    opened = execs(eng.auction("open", 2.0))
    assert [(r.cl_ord_id, r.exec_type, r.ord_status) for r in opened] == [
        ("O1", ExecType.TRADE, OrdStatus.FILLED), ("O2", ExecType.EXPIRED, OrdStatus.EXPIRED)]
    assert opened[0].last_qty == 30 and opened[0].last_px == D("187.12")  # one print, no slices
    assert "opening auction" in (opened[1].text or "")
    assert eng.order("C1").working  # the close's
    closed = execs(eng.auction("close", 3.0))
    assert [(r.cl_ord_id, r.exec_type, r.last_px) for r in closed] == [("C1", ExecType.TRADE,
                                                                        D("187.10"))]
    assert eng.auction("close", 4.0) == []


def test_auction_orders_are_market_or_limit_and_a_halted_symbol_expires_them() -> None:
    eng = engine()
    rej = execs(eng.submit(nos("S1", ord_type="3", stop="190.00", tif="2"), 0.0))
    assert (rej[0].exec_type, rej[0].text) == (ExecType.REJECTED, "auction orders are market or limit orders")
    eng.submit(nos("O1", tif="2"), 0.0)
    eng.halted.add("AAPL")
    out = execs(eng.auction("open", 1.0))
    assert [(r.exec_type, r.ord_status) for r in out] == [(ExecType.EXPIRED, OrdStatus.EXPIRED)]
