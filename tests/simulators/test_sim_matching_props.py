"""Property test of the matching engine: random orders, cancels, quotes, clock steps and expiries.

Invariants checked after every step, against the reports actually emitted:
* working orders: CumQty + LeavesQty == OrderQty; done orders: LeavesQty == 0;
* never overfilled, CumQty equals the sum of the LastQty of its fills;
* AvgPx equals the fills' notional / CumQty (to the 1e-8 it is rounded to);
* every ExecID is unique; every fill respects a limit price.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix.messages import NewOrderSingle
from simulators.market_maker import build_message
from simulators.matching import (
    MatchingEngine,
    Report,
    VenueCancelReject,
    VenueReport,
)

D = Decimal

new_order = st.tuples(
    st.just("new"),
    st.sampled_from(["1", "2"]),  # side
    st.integers(min_value=1, max_value=2500),  # qty
    st.sampled_from(["1", "2", "3", "4"]),  # ord type
    st.integers(min_value=-300, max_value=300),  # price offset in cents from 100.00
    st.sampled_from(["0", "1", "3", "4"]),  # tif
)
cancel = st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=40))
quote = st.tuples(st.just("quote"), st.integers(min_value=-400, max_value=400),
                  st.integers(min_value=1, max_value=5))
tick = st.tuples(st.just("tick"), st.floats(min_value=0, max_value=3, allow_nan=False))
expire = st.tuples(st.just("expire"))
status = st.tuples(st.just("status"), st.integers(min_value=0, max_value=40))
ops = st.lists(st.one_of(new_order, new_order, cancel, quote, quote, tick, expire, status),
               max_size=60)

engine_config = st.fixed_dictionaries({
    "price_improvement_bps": st.sampled_from([0, 1, 5]),
    "fill_slices": st.sampled_from([None, [400, 300, 300], [1, 7], [250]]),
    "fill_delay": st.sampled_from([0.0, 0.5, 2.0]),
    "max_liquidity": st.sampled_from([None, 100, 1000]),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=engine_config, steps=ops)
def test_engine_invariants(cfg: dict, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    eng = MatchingEngine("P", id_prefix="P", **cfg)
    eng.set_quote("XYZ", "99.99", "100.01")
    now = 0.0
    cl_ids: list[str] = []
    fills: dict[str, list[tuple[Decimal, Decimal]]] = {}
    limits: dict[str, tuple[str, Decimal | None]] = {}
    seen_exec_ids: set[str] = set()

    def check(reports: list[Report]) -> None:
        for r in reports:
            if isinstance(r, VenueCancelReject):
                continue
            assert isinstance(r, VenueReport)
            assert r.exec_id not in seen_exec_ids
            seen_exec_ids.add(r.exec_id)
            if r.exec_type == "F":
                fills.setdefault(r.order_id, []).append((r.last_qty, r.last_px))
                side, limit = limits[r.order_id]
                if limit is not None:
                    assert r.last_px <= limit if side == "1" else r.last_px >= limit
            if r.order_id == "NONE":
                continue
            own = fills.get(r.order_id, [])
            assert r.cum_qty == sum((q for q, _ in own), D(0))
            assert r.cum_qty <= r.order_qty
            if r.ord_status in ("0", "1"):
                assert r.cum_qty + r.leaves_qty == r.order_qty
            else:
                assert r.leaves_qty == 0
            if r.cum_qty:
                notional = sum((q * p for q, p in own), D(0))
                assert abs(r.avg_px * r.cum_qty - notional) <= r.cum_qty * D("0.5e-8")
            else:
                assert r.avg_px == 0

    for step in steps:
        kind = step[0]
        if kind == "new":
            _, side, qty, ord_type, off, tif = step
            px = str(D(100) + D(off) / 100)
            stop = str(D(100) + D(-off if ord_type == "4" else off) / 100)
            cl = f"c{len(cl_ids)}"
            cl_ids.append(cl)
            reports = eng.submit(NewOrderSingle(
                cl, "XYZ", side, str(qty), ord_type,
                px if ord_type in ("2", "4") else None,
                stop if ord_type in ("3", "4") else None, tif), now)
            order = eng.order(cl)
            if order is not None and order.order_id != "NONE":
                limits[order.order_id] = (side, order.price)
            check(reports)
        elif kind == "cancel" and cl_ids:
            orig = cl_ids[step[1] % len(cl_ids)]
            check(eng.cancel(orig, f"x{len(seen_exec_ids)}-{orig}"))
        elif kind == "quote":
            bid = D(100) + D(step[1]) / 100
            eng.set_quote("XYZ", bid, bid + D(step[2]) / 100)
            check(eng.match(now))
        elif kind == "tick":
            now += step[1]
            check(eng.match(now))
        elif kind == "expire":
            check(eng.expire_day_orders())
        elif kind == "status" and cl_ids:
            check([eng.status(cl_ids[step[1] % len(cl_ids)])])
        # engine-side invariants on every order
        for o in eng.orders():
            assert o.cum_qty <= o.order_qty
            assert o.cum_qty == sum((q for q, _ in o.fills), D(0))
            if o.working:
                assert o.cum_qty + o.leaves_qty == o.order_qty
            if o.time_in_force in ("3", "4"):
                assert not o.working
            if o.time_in_force == "4":
                assert o.cum_qty in (0, o.order_qty)
    assert len({o.cl_ord_id for o in eng.orders()}) == len(eng.orders())


field_text = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "1", "2", "3", "4", "0", "-1", "1e3", "1e40", "NaN", "Infinity",
                     "0.5", "187.12", "187.123", "0.0001", "1E+30", "abc", "AAPL", "XYZ"]),
    st.text(max_size=8).filter(lambda t: "\x01" not in t),  # SOH cannot arrive inside a field
)


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(field_text, min_size=8, max_size=8))
def test_submit_never_raises_on_garbage(fields: list[str | None]) -> None:
    """Whatever arrives in a NewOrderSingle, the engine answers with reports, never an exception."""
    eng = MatchingEngine("P", id_prefix="P")
    eng.set_quote("XYZ", "99.99", "100.01")
    reports = eng.submit(NewOrderSingle(*fields), 0.0)
    assert reports and all(isinstance(r, VenueReport) for r in reports)
    first = reports[0]
    assert isinstance(first, VenueReport) and first.exec_type in ("0", "8")
    if first.exec_type == "8":
        assert first.text and first.ord_status == "8" and len(reports) == 1
    for r in reports:
        msg = build_message(r)  # every report can go on the wire
        msg.append_pair(8, "FIX.4.4", header=True)
        assert msg.encode()
