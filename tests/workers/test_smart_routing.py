"""Smart routing in the execution gateway over real loopback FIX venues, real Redis quotes and
the real gateway database: the venue that improves more gets the flow after warm-up, and a venue
that logs out gets no order from then on (no order fails)."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

from temporalio.client import Client

from db.gateway import GatewayStore
from domain.routing import RoutingWeights
from marketdata.quotes import LatestQuotes
from sherwood.redis_client import RedisTimeouts, redis_from_url
from sherwood.settings import Settings
from tests.workers.test_gateway import (  # noqa: F401  (module fixtures)
    Venue,
    client,
    gateway_settings,
    new_order,
    store,
)
from workers.gateway import ExecutionGateway

D = Decimal
WARM_UP = 10


@contextlib.asynccontextmanager
async def smart_gateway(*venues: Venue, settings: Settings, client: Client, store: GatewayStore,  # noqa: F811
                        tmp: Path, symbol: str) -> AsyncIterator[ExecutionGateway]:
    assert settings.redis_url
    redis = redis_from_url(settings.redis_url, RedisTimeouts())
    quotes = LatestQuotes(redis, settings.redis_prefix)
    await quotes.put(symbol, D("187.10"), D("187.12"))  # the NBBO the gateway records
    for v in venues:
        await v.mm.start()
        v.mm.set_quote(symbol, "187.10", "187.12")
    gw = ExecutionGateway(
        venues=[v.venue_config() for v in venues], store=store, client=client, data_dir=tmp,
        task_queue=f"gw-smart-{uuid.uuid4().hex[:8]}", routing="smart",
        routing_weights=RoutingWeights(explore_rate=0.05, min_orders=5), routing_seed=7,
        redis_url=settings.redis_url, redis_prefix=settings.redis_prefix,
        # the fill rides in the ack even on a loaded machine (the wait ends at the final report)
        first_report_wait_s=5.0, report_linger_s=5.0, delivery_interval=0.05)
    await gw.start()
    try:
        await gw.wait_logged_on(10)
        yield gw
    finally:
        await gw.stop()
        for v in venues:
            with contextlib.suppress(Exception):
                await v.mm.stop()
        await redis.hdel(quotes.key, symbol)
        await redis.aclose()


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
