"""What each venue event does to the venue scores (``GatewayActivities.observe``): fills,
refusals and the venue's own ends decide an order; a customer's cancel counts in the cancel rate
only; our own expiry at the close counts nowhere; a replacement's events count for its route."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from activities.gateway import GatewayActivities
from db.gateway import GatewayStore
from domain.execution import VenueEvent, VenueEventKind
from fix.session import FixSession

D = Decimal
K = VenueEventKind


def ev(order_id: str, kind: VenueEventKind, cl: str | None = None, **kw: Any) -> VenueEvent:
    return VenueEvent(venue="MM1", exec_id=f"{order_id}-{kind}-{cl}", order_id=order_id, kind=kind,
                      cl_ord_id=cl if cl is not None else order_id, **kw)


def acts() -> GatewayActivities:
    a = GatewayActivities(cast(GatewayStore, None), {"MM1": cast(FixSession, object())},
                          routing="smart", clock=lambda: 1.0)
    for oid in ("a", "b", "c", "d", "e", "f"):
        a.quality.routed(oid, "MM1", "buy", at=0.0, bid=D("10.00"), ask=D("10.02"))
    return a


def test_each_event_counts_once_where_it_belongs() -> None:
    a = acts()
    a.observe(ev("a", K.FILL, last_qty="5", last_px="10.01"))
    a.observe(ev("b", K.REJECTED))
    a.observe(ev("c", K.CANCELED, cl="c:C1"))  # our cancel request's answer: the customer's
    a.observe(ev("d", K.CANCELED))  # the venue canceled it on its own
    a.observe(ev("e", K.CANCELED, cl="e:X1"))  # our expiry of a DAY order at the close
    a.observe(ev("f", K.STATUS, cl="f:S1"))
    s = a.quality.stats("MM1", True)
    assert (s.orders, s.decided, s.filled, s.rejected, s.canceled) == (6, 3, 1, 1, 2)
    assert s.improvement_per_share == D("0.01") and s.latency_s == 1.0


def test_a_replacements_events_count_for_its_route() -> None:
    a = acts()
    # the venue's Replaced names the new ClOrdID; its fills and cancel come under it
    a.observe(ev("a", K.REPLACED, cl="a2", orig_cl_ord_id="a"))
    a.observe(ev("a2", K.FILL, last_qty="5", last_px="10.00"))
    a.observe(ev("a2", K.CANCELED, cl="a2:C1"))
    s = a.quality.stats("MM1", True)
    assert (s.filled, s.canceled, s.improvement_per_share) == (1, 1, D("0.02"))
    # a warm start replays with the recorded arrival time
    a.observe(ev("b", K.FILL, last_qty="1", last_px="10.02"), at=3.0)
    assert a.quality.stats("MM1", True).latency_s == 2.0  # (1 + 3) / 2


class _Up:
    """A FIX session that is logged on, as far as routing looks."""

    def __init__(self) -> None:
        import asyncio

        self.logged_on = asyncio.Event()
        self.logged_on.set()


def test_round_robin_and_first_route_without_a_pass_over_the_window() -> None:
    """Only smart routing reads the venue scores: the others look at who is logged on, so an
    order's route does not walk each venue's last orders (it did, in the gateway's profile)."""
    for policy, expected in (("round_robin", ["MM1", "MM2", "MM1"]), ("first", ["MM1"] * 3)):
        a = GatewayActivities(cast(GatewayStore, None),
                              {"MM1": cast(FixSession, _Up()), "MM2": cast(FixSession, _Up())},
                              routing=policy, clock=lambda: 1.0)

        def no_scores(*args: Any, policy: str = policy, **kw: Any) -> Any:
            raise AssertionError(f"{policy} read the venue scores")

        a.quality.stats = no_scores  # type: ignore[method-assign]
        assert [a.route(None).venue for _ in range(3)] == expected
