"""Smart routing in the execution gateway over real loopback FIX venues, real Redis quotes and
the real gateway database: the venue that improves more gets the flow after warm-up, and a venue
that logs out gets no order from then on (no order fails); the scores survive a restart, and a
replacement's fills count for the route it belongs to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from db.gateway import GatewayStore
from db.migrate import drop_database_as, migrate_gateway
from domain.execution import VenueReplace
from domain.routing import RoutingWeights
from marketdata.quotes import LatestQuotes
from sherwood.redis_client import RedisTimeouts, redis_from_url
from sherwood.settings import Settings
from tests.workers.test_gateway import (  # noqa: F401  (module fixtures)
    Venue,
    client,
    gateway_settings,
    new_order,
)
from workers.gateway import ExecutionGateway

D = Decimal
WARM_UP = 10
NBBO = (D("187.10"), D("187.12"))


@pytest.fixture
async def store(gateway_settings: Settings) -> AsyncIterator[GatewayStore]:  # noqa: F811
    """A gateway database of the test's own: a starting gateway warms its venue scores from the
    recorded routes, so another test's routes to venues of the same names would count."""
    url = f"{gateway_settings.gateway_db_url_resolved()}_{uuid.uuid4().hex[:8]}"
    owner = gateway_settings.db_owner()
    await asyncio.to_thread(migrate_gateway, url, owner)
    s = GatewayStore.from_url(url)
    yield s
    await s.dispose()
    await asyncio.to_thread(drop_database_as, url, owner)


@contextlib.asynccontextmanager
async def quoted_venues(*venues: Venue, settings: Settings, symbol: str) -> AsyncIterator[None]:
    """The venues running, quoting ``symbol`` at NBBO, which is also the gateway's quote."""
    assert settings.redis_url
    redis = redis_from_url(settings.redis_url, RedisTimeouts())
    quotes = LatestQuotes(redis, settings.redis_prefix)
    await quotes.put(symbol, *NBBO)  # the NBBO the gateway records
    try:
        for v in venues:
            await v.mm.start()
            v.mm.set_quote(symbol, str(NBBO[0]), str(NBBO[1]))
        yield
    finally:
        for v in venues:
            with contextlib.suppress(Exception):
                await v.mm.stop()
        await redis.hdel(quotes.key, symbol)
        await redis.aclose()


@contextlib.asynccontextmanager
async def gateway(*venues: Venue, settings: Settings, client: Client,  # noqa: F811
                  store: GatewayStore, tmp: Path,
                  weights: RoutingWeights = RoutingWeights(explore_rate=0.05, min_orders=5),
                  ) -> AsyncIterator[ExecutionGateway]:
    gw = ExecutionGateway(
        venues=[v.venue_config() for v in venues], store=store, client=client, data_dir=tmp,
        task_queue=f"gw-smart-{uuid.uuid4().hex[:8]}", routing="smart",
        routing_weights=weights, routing_seed=7,
        redis_url=settings.redis_url, redis_prefix=settings.redis_prefix,
        # the fill rides in the ack even on a loaded machine (the wait ends at the final report)
        first_report_wait_s=5.0, report_linger_s=5.0, delivery_interval=0.05)
    await gw.start()
    try:
        await gw.wait_logged_on(10)
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def smart_gateway(*venues: Venue, settings: Settings, client: Client,  # noqa: F811
                        store: GatewayStore, tmp: Path,
                        symbol: str) -> AsyncIterator[ExecutionGateway]:
    async with quoted_venues(*venues, settings=settings, symbol=symbol), \
            gateway(*venues, settings=settings, client=client, store=store, tmp=tmp) as gw:
        yield gw


async def test_better_venue_gets_the_flow_and_failover_is_immediate(
        gateway_settings: Settings, client: Client, store: GatewayStore,  # noqa: F811
        tmp_path: Path) -> None:
    symbol = f"Z{random.randint(0, 10**6):06d}"  # its own quote key: no other test's quote
    mm1 = Venue("MM1", price_improvement_cents=D(1))
    mm2 = Venue("MM2", price_improvement_cents=D("0.1"))
    async with smart_gateway(mm1, mm2, settings=gateway_settings, client=client, store=store,
                             tmp=tmp_path, symbol=symbol) as gw:
        acts = gw.activities
        acks = []
        for _ in range(WARM_UP + 60):
            ack = await acts.send_new_order(new_order("10", symbol=symbol))
            assert any(r.kind == "fill" for r in ack.reports)
            acks.append(ack)
        after = [a.venue for a in acks[WARM_UP:]]
        assert {a.venue for a in acks[:WARM_UP]} == {"MM1", "MM2"}  # both warmed up
        assert after.count("MM1") >= 0.8 * len(after), after
        # the fills: MM1 one cent under the ask, MM2 a tenth of a cent
        px = {a.venue: D(next(r.last_px for r in a.reports if r.kind == "fill") or "0")
              for a in acks}
        assert px == {"MM1": D("187.11"), "MM2": D("187.119")}
        # every route recorded with its NBBO and why
        rows = await store.read(
            "SELECT venue, reason, bid, ask FROM gateway_routes WHERE symbol = :s", {"s": symbol})
        assert len(rows) == len(acks)
        assert all((r["bid"], r["ask"]) == (D("187.10"), D("187.12")) for r in rows)
        assert {r["reason"] for r in rows} >= {"warm_up", "best"}

        await mm1.mm.stop()  # MM1 logs out
        assert not gw.sessions["MM1"].logged_on.is_set()
        failover = [await acts.send_new_order(new_order("10", symbol=symbol)) for _ in range(10)]
        assert [a.venue for a in failover] == ["MM2"] * 10
        assert all(any(r.kind == "fill" for r in a.reports) for a in failover)


async def test_a_venue_refusal_ends_there_and_lowers_its_score(
        gateway_settings: Settings, client: Client, store: GatewayStore,  # noqa: F811
        tmp_path: Path) -> None:
    symbol = f"Z{random.randint(0, 10**6):06d}"
    # MM1 would improve more, but declines every order
    mm1 = Venue("MM1", price_improvement_cents=D(1), reject_rate=1.0)
    mm2 = Venue("MM2", price_improvement_cents=D("0.1"))
    async with smart_gateway(mm1, mm2, settings=gateway_settings, client=client, store=store,
                             tmp=tmp_path, symbol=symbol) as gw:
        acks = [await gw.activities.send_new_order(new_order("10", symbol=symbol))
                for _ in range(WARM_UP + 30)]
    refused = [a for a in acks if a.venue == "MM1"]
    assert refused and all(any(r.kind == "rejected" for r in a.reports) for a in refused)
    # a refused order is never sent again elsewhere: it ends where it was refused
    assert all(mm2.d_count(a.cl_ord_id) == 0 for a in refused)
    after = [a.venue for a in acks[WARM_UP:]]
    assert after.count("MM2") >= 0.8 * len(after), after


async def wait_until(pred: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


async def test_a_replaced_orders_fill_counts_for_its_venue(
        gateway_settings: Settings, client: Client, store: GatewayStore,  # noqa: F811
        tmp_path: Path) -> None:
    """The venue fills the replacement (a new ClOrdID after 35=G): the fill is the route's, so it
    counts for the venue the order was routed to (filled, improvement, latency)."""
    symbol = f"Z{random.randint(0, 10**6):06d}"
    mm1 = Venue("MM1", price_improvement_cents=D(1))
    async with smart_gateway(mm1, settings=gateway_settings, client=client, store=store,
                             tmp=tmp_path, symbol=symbol) as gw:
        acts = gw.activities
        order = new_order("10", symbol=symbol, order_type="limit", limit_price="150",
                          time_in_force="gtc")
        ack = await acts.send_new_order(order)  # rests: below the bid
        assert ack.venue == "MM1" and not any(r.kind == "fill" for r in ack.reports)
        assert acts.quality.stats("MM1", True).filled == 0
        repl = dataclasses.replace(order, order_id=str(uuid.uuid4()), limit_price="187.12")
        await acts.send_replace(VenueReplace(repl, order.order_id, "MM1"))
        await wait_until(lambda: acts.quality.stats("MM1", True).filled == 1)
        s = acts.quality.stats("MM1", True)
        assert (s.orders, s.decided, s.filled) == (1, 1, 1)
        assert s.improvement_per_share == D("0.01")  # vs the ask at routing
        # a restarted gateway knows it too (the chain is in gateway_orders)
        await gw.stop()
        async with gateway(mm1, settings=gateway_settings, client=client, store=store,
                           tmp=tmp_path) as again:
            s = again.activities.quality.stats("MM1", True)
            assert (s.orders, s.filled, s.improvement_per_share) == (1, 1, D("0.01"))


async def test_venue_scores_survive_a_gateway_restart(
        gateway_settings: Settings, client: Client, store: GatewayStore,  # noqa: F811
        tmp_path: Path) -> None:
    """Route until MM1 scores higher, restart the gateway: it warms its scores from the recorded
    routes and reports, so its first orders go to MM1 by score, not to a cold warm-up round."""
    symbol = f"Z{random.randint(0, 10**6):06d}"
    mm1 = Venue("MM1", price_improvement_cents=D(1))
    mm2 = Venue("MM2", price_improvement_cents=D("0.1"))
    no_explore = RoutingWeights(explore_rate=0.0, min_orders=5)  # deterministic choices
    kw: dict[str, Any] = dict(settings=gateway_settings, client=client, store=store,
                              tmp=tmp_path, weights=no_explore)
    async with quoted_venues(mm1, mm2, settings=gateway_settings, symbol=symbol):
        async with gateway(mm1, mm2, **kw) as gw:
            acks = [await gw.activities.send_new_order(new_order("10", symbol=symbol))
                    for _ in range(WARM_UP + 10)]
            assert [a.venue for a in acks[WARM_UP:]] == ["MM1"] * 10
            before = {v: gw.activities.quality.stats(v, True) for v in ("MM1", "MM2")}
        async with gateway(mm1, mm2, **kw) as gw:
            after = {v: gw.activities.quality.stats(v, True) for v in ("MM1", "MM2")}
            # the same record as before the restart (latency: the database clock's)
            strip = {v: dataclasses.replace(s, latency_s=0.0) for v, s in before.items()}
            assert {v: dataclasses.replace(s, latency_s=0.0) for v, s in after.items()} == strip
            first = [await gw.activities.send_new_order(new_order("10", symbol=symbol))
                     for _ in range(5)]
    assert [a.venue for a in first] == ["MM1"] * 5
    rows = await store.read("SELECT reason FROM gateway_routes WHERE order_id = ANY(:ids)",
                            {"ids": [a.cl_ord_id for a in first]})
    assert [r["reason"] for r in rows] == ["best"] * 5


async def test_routing_settings_reach_the_router(gateway_settings: Settings, client: Client,  # noqa: F811
                                                 tmp_path: Path) -> None:
    s = gateway_settings.model_copy(update={
        "gateway_routing": "smart", "routing_scope_min_orders": 7, "routing_window_orders": 33,
        "routing_explore_rate": 0.0, "gateway_data_dir": tmp_path, "gateway_link_port": None})
    gw = ExecutionGateway.from_settings(s, client)
    try:
        acts = gw.activities
        assert (acts.routing, acts.weights.scope_min_orders, acts.quality.window) == ("smart", 7, 33)
        assert acts.weights.explore_rate == 0.0
    finally:
        await gw.stop()
