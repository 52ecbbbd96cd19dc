"""The execution gateway process's wiring: FIX initiators to every venue, the gateway activity
worker, the halt check and latest quotes, the direct link, and the report delivery loop.

    ExecutionGateway(venues=..., store=..., client=..., data_dir=..., task_queue=...)
        start() / stop(); sessions: dict[venue, FixSession]; activities; delivery; link (the
        order's direct path to send_new_order, activities/gateway_link.py)
    ExecutionGateway.from_settings(settings, client) -> ExecutionGateway
    async run_gateway(settings, stop=None)       the process (migrates its DB, SIGTERM = stop)

Both are importable from :mod:`workers.gateway` too (``python -m workers.gateway`` runs the
process). What reports go through, and why a crash anywhere on that path is safe, is argued at
the top of :mod:`workers.gateway`, beside :class:`workers.gateway.ReportDelivery`; this module
only builds and starts the parts and does not handle a report itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.worker import Worker

from activities.gateway import GatewayActivities
from activities.gateway_link import GatewayLinkServer
from activities.gateway_market import RoutingMarket
from db.controls import ControlsCache
from db.gateway import GatewayStore
from domain.routing import RoutingWeights
from fix.session import FixInitiator, FixSession, SessionConfig
from fix.store import SqliteSessionStore
from sherwood import metrics
from sherwood.contracts import GATEWAY_TASK_QUEUE
from sherwood.lifecycle import shutdown_workers, stopped_by_signals
from sherwood.link_secret import link_secret
from sherwood.redis_client import RedisTimeouts, redis_from_url
from sherwood.settings import Settings, VenueConfig

if TYPE_CHECKING:
    from workers.gateway import ReportDelivery

log = logging.getLogger(__name__)


class ExecutionGateway:
    """FIX initiators to every venue + the activity worker + the report delivery loop."""

    def __init__(
        self,
        *,
        venues: Sequence[VenueConfig],
        store: GatewayStore,
        client: Client,
        data_dir: Path,
        task_queue: str = GATEWAY_TASK_QUEUE,
        routing: str = "round_robin",
        routing_weights: RoutingWeights = RoutingWeights(),
        routing_seed: int | None = None,
        routing_window: int = 100,
        delivery_interval: float = 0.2,
        delivery_idle_poll: float = 2.0,
        delivery_max_backoff: float = 5.0,
        signal_timeout: float = 5.0,
        first_report_wait_s: float = 0.25,
        report_linger_s: float = 0.05,
        owns_store: bool = False,
        redis_url: str | None = None,
        redis_prefix: str = "sherwood",
        redis_timeouts: RedisTimeouts = RedisTimeouts(),
        link_host: str = "127.0.0.1",
        link_port: int | None = None,
        link_stack: str = "",
        link_secret: str | None = None,
        link_hello_timeout_s: float = 5.0,
        link_max_in_flight: int = 256,
        link_max_unauthenticated: int = 16,
        shutdown_timeout_s: float = 15.0,
    ) -> None:
        if not venues:
            raise ValueError("no venues configured (SHERWOOD_VENUES)")
        names = [v.name for v in venues]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate venue names in {names}")
        self.venues = list(venues)
        self.store = store
        self.client = client
        self.data_dir = Path(data_dir)
        self.task_queue = task_queue
        self._owns_store = owns_store
        # imported here, not at the top: workers.gateway re-exports this module's names, and
        # ``python -m workers.gateway`` imports this module before workers.gateway exists
        from workers.gateway import ReportDelivery

        self.delivery: ReportDelivery = ReportDelivery(
            store, client, interval=delivery_interval, idle_poll=delivery_idle_poll,
            max_backoff=delivery_max_backoff, signal_timeout=signal_timeout)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stores: dict[str, SqliteSessionStore] = {}
        self.initiators: dict[str, FixInitiator] = {}
        self._forget_metrics: list[Callable[[], None]] = []
        for v in self.venues:
            cfg = SessionConfig(
                sender_comp_id=v.sender_comp_id, target_comp_id=v.target,
                heartbeat_interval=v.heartbeat_interval,
                reconnect_min_delay=v.reconnect_min_delay,
                reconnect_max_delay=v.reconnect_max_delay,
            )
            fstore = SqliteSessionStore(self.data_dir / f"fix-{v.sender_comp_id}-{v.target}.sqlite")
            self._stores[v.name] = fstore
            ini = self.initiators[v.name] = FixInitiator(cfg, fstore, v.host, v.port,
                                                         self.delivery.handler_for(v.name))
            # read at scrape time: the session's own state, nothing to keep in step
            self._forget_metrics.append(metrics.fix_session(v.name, ini.session.logged_on.is_set))
            ini.session.on_sequence_gap = metrics.FIX_SEQUENCE_GAPS.labels(venue=v.name).inc
        # halts: checked against Redis right before routing (the cache if Redis is down), read
        # with the NBBO the route records in one round trip (activities/gateway_market.py)
        self._redis = redis_from_url(redis_url, redis_timeouts) if redis_url else None
        self.controls = ControlsCache(self._redis, redis_prefix)
        self.activities = GatewayActivities(store, self.sessions, routing=routing,
                                            reports=self.delivery,
                                            first_report_wait_s=first_report_wait_s,
                                            report_linger_s=report_linger_s,
                                            market=RoutingMarket(self._redis, redis_prefix,
                                                                 fallback=self.controls)
                                            if self._redis is not None else None,
                                            weights=routing_weights,
                                            rng=random.Random(routing_seed),
                                            quality_window=routing_window)
        self.delivery.observe = self.activities.observe
        # the order's fast path to send_new_order (activities/gateway_link.py): never served
        # without a secret (no secret: no link)
        self.link = (GatewayLinkServer(self.activities.send_new_order, link_host, link_port,
                                       link_stack, secret=link_secret,
                                       hello_timeout_s=link_hello_timeout_s,
                                       max_in_flight=link_max_in_flight,
                                       max_unauthenticated=link_max_unauthenticated)
                     if link_port is not None and link_secret else None)
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.shutdown_timeout_s = shutdown_timeout_s
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, client: Client) -> ExecutionGateway:
        """The gateway ``settings`` describe. Raises ``LinkSecretError`` in production when the
        direct link is configured without its secret (sherwood/link_secret.py)."""
        secret = link_secret(settings) if settings.gateway_link_port is not None else None
        return cls(
            venues=settings.venues,
            store=GatewayStore.from_url(settings.gateway_db_url_resolved(), pool_size=settings.db_pool_size,
                                        max_overflow=settings.db_max_overflow),
            client=client,
            data_dir=settings.gateway_data_dir_resolved(),
            task_queue=settings.gateway_task_queue,
            routing=settings.gateway_routing,
            routing_weights=RoutingWeights(
                improvement_per_cent=settings.routing_weight_improvement_per_cent,
                fill_rate=settings.routing_weight_fill_rate,
                reject_rate=settings.routing_weight_reject_rate,
                latency_per_s=settings.routing_weight_latency_per_s,
                explore_rate=settings.routing_explore_rate,
                min_orders=settings.routing_warmup_orders,
                scope_min_orders=settings.routing_scope_min_orders),
            routing_seed=settings.routing_seed,
            routing_window=settings.routing_window_orders,
            delivery_interval=settings.gateway_delivery_interval_s,
            delivery_idle_poll=settings.gateway_delivery_idle_poll_s,
            delivery_max_backoff=settings.gateway_delivery_max_backoff_s,
            signal_timeout=settings.gateway_signal_timeout_s,
            first_report_wait_s=settings.gateway_first_report_wait_s,
            report_linger_s=settings.gateway_report_linger_s,
            owns_store=True,
            redis_url=settings.redis_url,
            redis_prefix=settings.redis_prefix,
            redis_timeouts=RedisTimeouts.of(settings),
            link_host=settings.bind_host,
            link_port=settings.gateway_link_port,
            link_stack=settings.gateway_link_stack(),
            link_secret=secret,
            link_hello_timeout_s=settings.gateway_link_hello_timeout_s,
            link_max_in_flight=settings.gateway_link_max_in_flight,
            link_max_unauthenticated=settings.gateway_link_max_unauthenticated,
            shutdown_timeout_s=settings.worker_shutdown_timeout_s,
        )

    @property
    def sessions(self) -> dict[str, FixSession]:
        return {name: ini.session for name, ini in self.initiators.items()}

    async def wait_logged_on(self, timeout: float | None = None,  # noqa: ASYNC109
                             venues: Sequence[str] | None = None) -> None:
        names = list(venues) if venues is not None else list(self.initiators)
        await asyncio.wait_for(
            asyncio.gather(*(self.initiators[n].session.logged_on.wait() for n in names)), timeout)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._warm_start()
        await self.delivery.start()
        await self.controls.start()
        for name, ini in self.initiators.items():
            v = next(x for x in self.venues if x.name == name)
            log.info("venue %s: connecting to %s:%d as %s -> %s (next seq out %d, in %d)", name,
                     v.host, v.port, v.sender_comp_id, v.target,
                     self._stores[name].next_sender_seq(), self._stores[name].next_target_seq())
            await ini.start()
        acts = self.activities
        self._worker = Worker(
            self.client, task_queue=self.task_queue,
            activities=[acts.send_new_order, acts.abandon_new_order, acts.send_cancel,
                        acts.send_replace, acts.send_status],
            graceful_shutdown_timeout=timedelta(seconds=5),
        )
        self._worker_task = asyncio.create_task(self._worker.run(), name="gateway-worker")
        if self.link is not None:
            await self.link.start()
        log.info("execution gateway started: task queue %s, venues %s", self.task_queue,
                 ", ".join(self.initiators))

    async def _warm_start(self) -> None:
        """The venue scores from the recorded routes (before any order is routed); a failure
        leaves them cold (logged): routing works without them."""
        if self.activities.routing != "smart":
            return
        try:
            n = await self.activities.warm_start()
        except Exception:
            log.exception("warming the venue scores from the gateway database failed: cold start")
            return
        log.info("venue scores warmed from %d recorded routes", n)

    async def stop(self) -> None:
        """Stop taking activities, log out of every venue, stop the delivery loop, close the
        session stores (and the gateway store when it was built here). Safe to call twice."""
        self._started = False
        for forget in self._forget_metrics:  # its sessions no longer speak for their venues
            forget()
        self._forget_metrics.clear()
        if self.link is not None:  # no new direct sends; in-flight ones finish first
            await self.link.stop()
        if self._worker is not None:  # no new activities; in-flight ones finish first, for a while
            await shutdown_workers([self._worker], self.shutdown_timeout_s, "gateway worker")
        if self._worker_task is not None:
            # its run() ends with the shutdown; one that did not finish is cut off here (what it
            # was sending is retried by Temporal on the next gateway, as after a crash)
            done, _ = await asyncio.wait({self._worker_task}, timeout=1.0)
            if not done:
                self._worker_task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self._worker_task, 1.0)
            with contextlib.suppress(BaseException):
                self._worker_task.result()
        self._worker = self._worker_task = None
        for ini in self.initiators.values():
            try:
                await ini.stop()
            except Exception:
                log.exception("stopping initiator %r failed", ini.session)
        await self.delivery.stop()
        await self.controls.stop()
        if self._redis is not None:
            await self._redis.aclose()
        for fstore in self._stores.values():
            fstore.close()
        if self._owns_store:
            self._owns_store = False
            await self.store.dispose()
        log.info("execution gateway stopped")


async def run_gateway(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (or ``stop`` is set)."""
    from db.migrate import migrate_gateway
    from sherwood.temporal import connect

    url = settings.gateway_db_url_resolved()
    await asyncio.to_thread(migrate_gateway, url)
    client = await connect(settings)
    gateway = ExecutionGateway.from_settings(settings, client)
    with stopped_by_signals(stop) as stop:
        try:
            await gateway.start()
            await stop.wait()
            log.info("execution gateway: stopping")
        finally:
            await gateway.stop()
