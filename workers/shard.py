"""The shard worker: Temporal workers on ``shard-<n>`` task queues (order workflows and their
local activities, each bound to that shard's database only), on ``shard-<n>-triggers`` (the
broker-held triggers' watching activities, ``activities.trigger``: one Redis pub/sub connection
per process serves them all) plus that shard's outbox publisher.

One process may serve several shards (``sherwood dev`` runs one for all); production runs one
process per shard. It never touches another shard's database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from activities.gateway_link import GatewayLink
from activities.orders import OrderActivities
from activities.trigger import QuoteFollower, TriggerActivities
from db.controls import ControlsCache
from db.engines import make_engine
from db.orders import OrderStore
from domain import calendar
from marketdata.quotes import LatestQuotes
from sherwood.admission_slots import let_go_keys
from sherwood.contracts import RedisKeys, shard_task_queue, trigger_task_queue
from sherwood.lifecycle import shutdown_workers, stopped_by_signals
from sherwood.link_secret import link_secret
from sherwood.redis_client import redis_from_settings
from sherwood.settings import Settings
from sherwood.temporal import connect
from workers.outbox import OutboxPublisher
from workflows.order import OrderWorkflow
from workflows.order_group import OrderGroupWorkflow
from workflows.rebalance import RebalanceWorkflow

log = logging.getLogger(__name__)


def business_clock(offset_s: float) -> Callable[[], datetime] | None:
    """The order store's "now": the wall clock (None), or one running ``offset_s`` ahead of it
    (SHERWOOD_MARKET_CLOCK_OFFSET_S, for tests that place orders at another hour)."""
    if not offset_s:
        return None
    offset = timedelta(seconds=offset_s)
    return lambda: datetime.now(UTC) + offset


def regular_session(s: Settings) -> Callable[[], bool]:
    """Whether it is the regular session now, on the business clock (always, when market hours
    are not enforced: tests and demos)."""
    if not s.enforce_market_hours:
        return lambda: True
    now = business_clock(s.market_clock_offset_s) or (lambda: datetime.now(UTC))
    return lambda: calendar.is_open(now())


@dataclass
class ShardWorkers:
    settings: Settings
    shards: list[int]
    client: Client | None = None
    _workers: list[Worker] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _redis: Redis | None = None
    _engines: list[AsyncEngine] = field(default_factory=list)
    _controls: ControlsCache | None = None
    _gateway: GatewayLink | None = None
    _follower: QuoteFollower | None = None

    async def start(self) -> None:
        s = self.settings
        # the gateway's direct link, only with its secret (none in production: LinkSecretError,
        # before anything is started)
        address = s.gateway_link_address_resolved()
        secret = link_secret(s) if address is not None else None
        self.client = self.client or await connect(s)
        self._redis = redis_from_settings(s)
        quotes = LatestQuotes(self._redis, s.redis_prefix)
        trigger_quotes = LatestQuotes(self._redis, s.redis_prefix, max_age_s=s.quote_max_age_s)
        if self._redis is not None:
            self._follower = QuoteFollower(self._redis, s.redis_prefix, max_age_s=s.quote_max_age_s)
        self._controls = ControlsCache(self._redis, s.redis_prefix)
        await self._controls.start()
        if address is not None and secret is not None:
            self._gateway = GatewayLink(address, s.gateway_link_stack(), secret=secret,
                                        timeout_s=s.gateway_link_timeout_s,
                                        max_in_flight=s.gateway_link_max_in_flight)
        for n in self.shards:
            engine = make_engine(s.shard_url(n), pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                                 statement_timeout_s=s.db_statement_timeout_s,
                                 lock_timeout_s=s.db_lock_timeout_s)
            # single statements (the accept path's account read, the outbox marks): no BEGIN/COMMIT
            autocommit = make_engine(s.shard_url(n), pool_size=2, max_overflow=2,
                                     autocommit=True, statement_timeout_s=s.db_statement_timeout_s,
                                     lock_timeout_s=s.db_lock_timeout_s)
            self._engines += [engine, autocommit]
            limits = s.risk_limits()
            store = OrderStore(engine, house_stripes=s.house_balance_stripes, reads=autocommit,
                               clock=business_clock(s.market_clock_offset_s),
                               instant_allowance=limits.instant_allowance)
            acts = OrderActivities(store, quotes, limits=limits, controls=self._controls,
                                   gateway=self._gateway)
            worker = Worker(
                self.client, task_queue=shard_task_queue(n),
                workflows=[OrderWorkflow, OrderGroupWorkflow, RebalanceWorkflow],
                activities=acts.all(), max_concurrent_workflow_tasks=200,
                max_concurrent_local_activities=200, no_remote_activities=True,
                # The sandbox re-imports workflows/order.py for every new workflow run and proxies
                # every call in it: measured here it was the largest single CPU cost of the shard
                # worker per order. The order workflow is deterministic by construction (only
                # workflow.now(), no I/O, no module state; activities and domain code passed
                # through anyway), and its replay tests run it through the sandbox.
                workflow_runner=UnsandboxedWorkflowRunner(),
                # A market order's workflow usually lives one workflow task, its first, which
                # comes on the normal (non-sticky) queue. The SDK's default split (1 of 5 polls
                # there, 4 on the sticky queue) left first tasks waiting in the server's backlog,
                # where newer tasks that met a waiting poll overtook them: at c=50 the slowest
                # waited 2-3.5 s between scheduled and started (p99 4.3 s -> 2.6 s with this).
                workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(s.shard_workflow_task_polls),
                nonsticky_to_sticky_poll_ratio=s.shard_nonsticky_poll_ratio,
                # a dead worker's orders go to another worker this soon (see the setting)
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=s.shard_sticky_timeout_s),
            )
            self._workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(), name=f"worker-shard-{n}"))
            if self._follower is not None:
                triggers = TriggerActivities(store, self._follower, trigger_quotes,
                                             poll_s=s.trigger_poll_s,
                                             write_interval_s=s.trigger_write_interval_s,
                                             in_session=regular_session(s))
                tworker = Worker(self.client, task_queue=trigger_task_queue(n),
                                 activities=triggers.all(), max_concurrent_activities=10_000)
                self._workers.append(tworker)
                self._tasks.append(asyncio.create_task(tworker.run(), name=f"triggers-shard-{n}"))
            if self._redis is not None:
                pub = OutboxPublisher(engine, self._redis, prefix=s.redis_prefix,
                                      idle_s=s.outbox_idle_s, mark_engine=autocommit,
                                      max_queue=s.outbox_queue_max, retry_s=s.outbox_retry_s,
                                      admission_keys=let_go_keys(RedisKeys(s.redis_prefix), n))
                store.on_commit = pub.committed
                store.on_release = pub.release
                self._tasks.append(asyncio.create_task(pub.run(self._stop), name=f"outbox-{n}"))
        log.info("shard workers running for shards %s", self.shards)

    async def stop(self) -> None:
        self._stop.set()
        await shutdown_workers(self._workers, self.settings.worker_shutdown_timeout_s, "shard workers")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._controls is not None:
            await self._controls.stop()
        if self._follower is not None:
            await self._follower.stop()
        if self._gateway is not None:
            await self._gateway.close()
        if self._redis is not None:
            await self._redis.aclose()
        for engine in self._engines:
            await engine.dispose()


async def run(settings: Settings, shards: list[int]) -> None:
    workers = ShardWorkers(settings, shards)
    await workers.start()
    with stopped_by_signals() as stop:
        await stop.wait()
    await workers.stop()
