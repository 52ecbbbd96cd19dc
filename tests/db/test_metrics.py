"""The order path's metrics (sherwood/metrics.py) count what the shard committed: state changes
by state and reason, accept->terminal latency, ledger posts; the back office's scrape-time shard
gauges read the STUCK orders from the shard itself, and a shard that does not answer in time is
reported as such instead of stalling the scrape."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from prometheus_client import REGISTRY

from db.engines import make_engine
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.orders import AcceptOrderInput, OrderState, parse_order_request
from sherwood import metrics
from sherwood.settings import Settings
from tests.db.test_orders import funded
from tests.venue_reports import fix_report


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def total(name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(s.value for m in REGISTRY.collect() for s in m.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def accepted(store: OrderStore, acct, **req: str) -> str:  # type: ignore[no-untyped-def]
    oid = str(uuid.uuid4())
    snap = await store.accept(AcceptOrderInput(oid, str(acct.account_id), req,
                                               parse_order_request(req).hash(), "customer", "0.05"),
                              Quotes(ask=Decimal(req.get("limit_price", "10"))))
    assert snap.state == "FUNDS_HELD", snap
    return oid


async def test_committed_state_changes_are_counted_with_latency_and_ledger_posts(router: ShardRouter) -> None:
    acct = await funded(router, "10000")
    store = OrderStore(router.engine(acct.shard))
    held = total("sherwood_orders_total", state="funds_held")
    filled = total("sherwood_orders_total", state="filled")
    latency = sample("sherwood_order_accept_to_terminal_seconds_count", state="filled")
    posts = sample("sherwood_ledger_post_seconds_count")

    oid = await accepted(store, acct, symbol="F", side="buy", type="limit", time_in_force="gtc",
                         qty="3", limit_price="10.05")
    assert total("sherwood_orders_total", state="funds_held") == held + 1
    assert sample("sherwood_ledger_post_seconds_count") > posts  # the hold
    await store.transition(oid, OrderState.ROUTED, reason="test", venue="MM1")
    await store.apply_reports(oid, [
        fix_report("MM1", f"{oid}:E1", "8", oid, oid, "0", "0", venue_order_id="V1", leaves_qty="3"),
        fix_report("MM1", f"{oid}:E2", "8", oid, oid, "F", "2", last_qty="3", last_px="10.00",
                   cum_qty="3", leaves_qty="0", avg_px="10.00")])
    assert total("sherwood_orders_total", state="filled") == filled + 1
    assert sample("sherwood_order_accept_to_terminal_seconds_count", state="filled") == latency + 1
    # a free-text reason never becomes a label value
    assert metrics.label("venue accepted") == "other"
    assert metrics.label("insufficient_qty") == "insufficient_qty"


async def test_stuck_orders_are_read_from_the_shard_at_scrape_time(router: ShardRouter,
                                                                   migrated: Settings) -> None:
    acct = await funded(router, "10000")
    store = OrderStore(router.engine(acct.shard))
    gauges = metrics.ShardGauges([(acct.shard, router.engine(acct.shard))], asyncio.get_running_loop(),
                                 timeout_s=5)

    def scrape() -> dict[str, float]:
        return {s.name: s.value for m in gauges.collect() for s in m.samples}

    before = await asyncio.to_thread(scrape)
    assert before["sherwood_shard_scrape_ok"] == 1
    counted = total("sherwood_orders_total", state="stuck")
    oid = await accepted(store, acct, symbol="F", side="buy", type="limit", time_in_force="gtc",
                         qty="1", limit_price="10.00")
    await store.transition(oid, OrderState.ROUTED, reason="test", venue="MM1")
    await store.transition(oid, OrderState.STUCK, reason="no answer from the venue", venue="MM1")
    after = await asyncio.to_thread(scrape)
    assert after["sherwood_orders_stuck"] == before["sherwood_orders_stuck"] + 1
    assert total("sherwood_orders_total", state="stuck") == counted + 1
    assert after["sherwood_outbox_oldest_pending_seconds"] >= 0


async def test_a_shard_that_does_not_answer_is_reported_not_waited_for(migrated: Settings) -> None:
    # a server that accepts the connection and never answers
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{port}/nowhere", pool_size=1, max_overflow=0)
    gauges = metrics.ShardGauges([(7, engine)], asyncio.get_running_loop(), timeout_s=0.5)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        samples = await asyncio.to_thread(lambda: [s for m in gauges.collect() for s in m.samples])
        assert loop.time() - t0 < 3
        assert [(s.name, s.labels, s.value) for s in samples] == [
            ("sherwood_shard_scrape_ok", {"shard": "7"}, 0.0)]
    finally:
        server.close()
        await engine.dispose()


def test_a_metrics_port_in_use_is_logged_and_the_process_runs_on(caplog) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.start_metrics_server("127.0.0.1", port) is None
    assert "cannot serve" in caplog.text
    assert metrics.start_metrics_server("127.0.0.1", None) is None
