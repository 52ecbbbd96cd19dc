"""Benchmark of venue choice: smart routing vs round robin vs first-connected, same simulated
venues and the same order flow in one run.

Run: ``python -m bench.routing [--orders N]`` (needs Postgres: SHERWOOD_POSTGRES_URL; the gateway
database used is ``<gateway db>_bench_routing``, created and dropped here).

Three simulated market makers over real loopback FIX, configured so that the first configured
venue is the worst (a first-connected router sticks to it):

* MM1 improves by 0.1 cent per share;
* MM2 by 0.5 cent, but declines 20% of orders;
* MM3 by 1 cent, with 20 ms before each report.

For each policy the venues start afresh with the same seeds and the gateway's activities
(:class:`activities.gateway.GatewayActivities`, FIX initiators, the gateway store; no Temporal:
nothing is delivered to workflows) send the same flow of market orders one at a time: 100 shares,
buys and sells alternating, the quote pinned at 187.10 / 187.12. Measured per policy: average
price improvement per share vs the far side (over filled shares), fill latency (send -> first
fill at the gateway, p50 / mean), the share of orders per venue and of orders rejected.

One JSON line per policy, with the round-robin baseline's numbers and ``pi_vs_baseline`` (ours /
baseline, >1 is better) and ``latency_vs_baseline`` (>1 is slower).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any, cast

from temporalio.client import Client

from activities.gateway import GatewayActivities
from db.gateway import GatewayStore
from db.migrate import drop_database, migrate_gateway
from domain.execution import VenueEvent, VenueEventKind, VenueOrder
from domain.routing import RoutingWeights, improvement_per_share
from fix.session import SessionConfig
from fix.store import MemorySessionStore
from fix.transport import FixInitiator
from marketdata.quotes import Quote
from sherwood.settings import Settings
from simulators.market_maker import MarketMaker, MarketMakerConfig
from simulators.quote_sources import RandomWalkQuoteSource
from workers.gateway import ReportDelivery

BID, ASK = Decimal("187.10"), Decimal("187.12")
VENUES: list[dict[str, Any]] = [
    {"sender_comp_id": "MM1", "price_improvement_cents": Decimal("0.1")},
    {"sender_comp_id": "MM2", "price_improvement_cents": Decimal("0.5"), "reject_rate": 0.2},
    {"sender_comp_id": "MM3", "price_improvement_cents": Decimal(1), "latency": 0.02},
]
POLICIES = ("smart", "round_robin", "first")


class PinnedQuotes:
    """The NBBO the gateway sees: the quote pinned on every venue."""

    async def get(self, symbol: str) -> Quote | None:
        return Quote(symbol, BID, ASK)


async def run_policy(policy: str, store: GatewayStore, orders: int) -> dict[str, Any]:
    mms = [MarketMaker(MarketMakerConfig(port=0, heartbeat_interval=5.0, tick_interval=0.05,
                                         seed=i, **cfg), quote_source=RandomWalkQuoteSource(i))
           for i, cfg in enumerate(VENUES)]
    for mm in mms:
        await mm.start()
        mm.set_quote("AAPL", BID, ASK)
    delivery = ReportDelivery(store, cast(Client, None))  # never started: nothing is signalled
    initiators = {mm.venue: FixInitiator(
        SessionConfig("SHERWOOD", mm.venue, heartbeat_interval=5.0, reconnect_min_delay=0.05),
        MemorySessionStore(), "127.0.0.1", mm.port, delivery.handler_for(mm.venue)) for mm in mms}
    acts = GatewayActivities(store, {n: i.session for n, i in initiators.items()}, routing=policy,
                             reports=delivery, first_report_wait_s=2.0, report_linger_s=0.01,
                             quotes=PinnedQuotes(), weights=RoutingWeights(),
                             rng=random.Random(42))
    sent: dict[str, float] = {}
    first_fill: dict[str, float] = {}

    def observe(event: VenueEvent) -> None:
        if event.kind == VenueEventKind.FILL and event.order_id not in first_fill:
            first_fill[event.order_id] = time.monotonic()
        acts.observe(event)

    delivery.observe = observe
    try:
        for ini in initiators.values():
            await ini.start()
        await asyncio.wait_for(asyncio.gather(
            *(i.session.logged_on.wait() for i in initiators.values())), 10)
        per_venue: dict[str, int] = {mm.venue: 0 for mm in mms}
        rejected, shares, improvement = 0, Decimal(0), Decimal(0)
        for n in range(orders):
            side = "buy" if n % 2 == 0 else "sell"
            order = VenueOrder(order_id=str(uuid.uuid4()), account_id=str(uuid.uuid4()), shard=0,
                               symbol="AAPL", side=side, qty="100", order_type="market",
                               time_in_force="day")
            sent[order.order_id] = time.monotonic()
            ack = await acts.send_new_order(order)
            per_venue[ack.venue] += 1
            if any(r.kind == VenueEventKind.REJECTED for r in ack.reports):
                rejected += 1
            for r in ack.reports:
                if r.kind == VenueEventKind.FILL and r.last_px is not None:
                    qty = Decimal(r.last_qty)
                    shares += qty
                    improvement += qty * improvement_per_share(side, Decimal(r.last_px), BID, ASK)
        lat = [(first_fill[o] - t) * 1000 for o, t in sent.items() if o in first_fill]
        return {
            "bench": "routing", "policy": policy, "orders": orders,
            "avg_price_improvement_per_share": float(improvement / shares) if shares else 0.0,
            "fill_latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
            "fill_latency_mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "rejected_pct": round(100 * rejected / orders, 2),
            "venue_share_pct": {v: round(100 * c / orders, 2) for v, c in per_venue.items()},
        }
    finally:
        for ini in initiators.values():
            with contextlib.suppress(Exception):
                await ini.stop()
        for mm in mms:
            await mm.stop()


async def main(orders: int) -> None:
    settings = Settings().resolved()
    url = f"{settings.gateway_db_url_resolved()}_bench_routing"
    await asyncio.to_thread(migrate_gateway, url)
    store = GatewayStore.from_url(url)
    try:
        results = {p: await run_policy(p, store, orders) for p in POLICIES}
    finally:
        await store.dispose()
        await asyncio.to_thread(drop_database, url)
    base = results["round_robin"]
    for res in results.values():
        res["baseline"] = "round_robin"
        res["baseline_avg_price_improvement_per_share"] = base["avg_price_improvement_per_share"]
        res["baseline_fill_latency_mean_ms"] = base["fill_latency_mean_ms"]
        b_pi, b_lat = base["avg_price_improvement_per_share"], base["fill_latency_mean_ms"]
        res["pi_vs_baseline"] = round(res["avg_price_improvement_per_share"] / b_pi, 3) if b_pi else None
        res["latency_vs_baseline"] = (round(res["fill_latency_mean_ms"] / b_lat, 3)
                                      if b_lat and res["fill_latency_mean_ms"] else None)
        print(json.dumps(res), flush=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=200, help="market orders per policy")
    args = p.parse_args()
    if not 1 <= args.orders <= 100_000:
        p.error("--orders must be 1..100000")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.orders))


if __name__ == "__main__":
    cli()
