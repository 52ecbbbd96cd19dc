"""The execution gateway process: FIX sessions to the venues, the gateway activities, and the
delivery of venue reports to order workflows.

    ExecutionGateway(venues=..., store=..., client=..., data_dir=..., task_queue=...)
        start() / stop(); sessions: dict[venue, FixSession]; activities; delivery; link (the
        order's direct path to send_new_order, activities/gateway_link.py)
    ExecutionGateway.from_settings(settings, client) -> ExecutionGateway
    ReportDelivery(store, client, ...)         inbound handler + delivery loop
    async run_gateway(settings, stop=None)       the process (migrates its DB, SIGTERM = stop)
    main()                                       ``python -m workers.gateway``

Inbound path, and why a crash anywhere is safe:

1. the FIX session hands an ExecutionReport(8) / OrderCancelReject(9) to
   :meth:`ReportDelivery.handler_for`'s handler, which parses it and INSERTs it into
   ``gateway_reports`` keyed by ``(venue, exec_id)`` (a duplicate — PossDup or PossResend — is a
   no-op). The handler returns only after that commit, and the session persists the inbound
   MsgSeqNum only after the handler returned: a kill before the commit means the venue resends
   the message after the next logon; a kill after it finds the row in the table.
2. the delivery loop (woken by every new row; while rows wait for a retry, every ``interval``
   seconds; otherwise every ``idle_poll`` seconds, a safety net) signals the order workflow
   (id = order id) for each undelivered row in arrival order, then sets ``delivered_at``.
   Failures — Temporal down, "workflow not found" because the workflow has not started yet —
   postpone that order's rows with exponential backoff (capped); a row is never dropped. Each
   signal carries the request id ``uuid5(venue, exec_id)``, which Temporal uses to deduplicate
   signals of a running workflow, so a kill between the signal and ``delivered_at``
   does not deliver the report twice either.
3. the exception: while ``send_new_order`` waits for an order's first answers
   (:class:`activities.gateway.ReportWatch`), the loop leaves that order's rows alone; the
   activity returns the ones that came in its result and marks them delivered, and the loop
   signals whatever came later. A crash in between leaves them undelivered (signalled after
   all), and an activity retry returns every recorded report, so none is lost. The same holds
   for ``send_new_order`` called over the direct link: if the shard worker dies before its
   workflow task completes, the replayed workflow sends again and gets every recorded report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import simplefix
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import SignalWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.gateway import GatewayActivities, ReportWatch
from activities.gateway_link import GatewayLinkServer
from db.controls import ControlsCache, is_halted_now
from db.gateway import GatewayStore, PendingReport, with_route
from domain.execution import VenueEvent
from domain.routing import RoutingWeights
from fix.messages import Tag, parse_inbound, venue_event
from fix.session import FixInitiator, FixSession, MessageHandler, SessionConfig
from fix.store import SqliteSessionStore
from marketdata.quotes import LatestQuotes
from sherwood import metrics
from sherwood.contracts import EXECUTION_REPORT_SIGNAL, GATEWAY_TASK_QUEUE
from sherwood.lifecycle import run_loop, stopped_by_signals
from sherwood.link_secret import link_secret
from sherwood.redis_client import RedisTimeouts, redis_from_url
from sherwood.settings import Settings, VenueConfig

log = logging.getLogger(__name__)

_REQUEST_ID_NS = uuid.UUID("5f0b6a55-2c1e-4f53-9d0e-6a8f3f0e6b11")


def signal_request_id(venue: str, exec_id: str) -> str:
    """Stable Temporal signal request id of one venue event (server-side signal dedup)."""
    return str(uuid.uuid5(_REQUEST_ID_NS, f"{venue}\x00{exec_id}"))


class ReportDelivery:
    """Records inbound venue reports and delivers them to order workflows as signals."""

    def __init__(
        self,
        store: GatewayStore,
        client: Client,
        *,
        interval: float = 0.2,
        max_backoff: float = 5.0,
        signal_timeout: float = 5.0,
        batch: int = 500,
        concurrency: int = 32,
        idle_poll: float = 2.0,
    ) -> None:
        self.store = store
        self.client = client
        self.interval = interval
        # the table is looked at this often when nothing waits for a retry: every new row wakes
        # the loop, so this only catches what no wake-up announced (at least ``interval``)
        self.idle_poll = max(idle_poll, interval)
        self._retry_until = 0.0  # monotonic: until then rows of this process wait for a retry
        self._last_found = 0  # rows the last pass tried to deliver (or left to an activity)
        self.max_backoff = max_backoff
        self.signal_timeout = signal_timeout
        self.batch = batch
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._watches: dict[str, ReportWatch] = {}
        # (venue, exec_id) -> when handed over: a pass that listed the row before it was marked
        # delivered must not signal it (the activity result carries it).
        self._handed: dict[tuple[str, str], float] = {}
        self.signalled = 0  # signals sent by this process (for metrics/tests)
        # told every new report once, after its commit (the router's venue quality)
        self.observe: Callable[[VenueEvent], None] | None = None

    # ------------------------------------------------------------------ inbound

    def handler_for(self, venue: str) -> MessageHandler:
        async def on_message(session: FixSession, msg: simplefix.FixMessage) -> None:
            await self.on_message(venue, msg)

        return on_message

    async def on_message(self, venue: str, msg: simplefix.FixMessage) -> None:
        """Book one inbound application message (returns after the commit)."""
        try:
            report = parse_inbound(venue, msg)
        except ValueError as exc:
            # Cannot be identified, hence cannot be booked once: consume it and shout.
            log.error("%s: unusable report (%s): %r", venue, exc, msg)
            return
        if report is None:
            mt = msg.get(Tag.MSG_TYPE)
            log.warning("%s: ignoring application message MsgType %r: %r", venue, mt, msg)
            return
        deliverable = bool(report.order_id) and report.order_id != "NONE"
        if not deliverable:
            log.error("%s: report %s names no order (ClOrdID %r): booked, not deliverable",
                      venue, report.exec_id, report.cl_ord_id)
        recorded = await self.store.record_report(report, deliverable=deliverable)
        new = recorded.new
        if new is False:
            if deliverable:
                log.error("%s: report %s for ClOrdID %r, an order this gateway never sent: refused "
                          "(kept in gateway_reports, booked nowhere)", venue, report.exec_id,
                          report.cl_ord_id)
            return
        if new:
            log.debug("%s: booked %s for order %s (150=%s 39=%s cum=%s)", venue, report.exec_id,
                      report.order_id, report.exec_type, report.ord_status, report.cum_qty)
            # a fill carries its route: the shard stores it with the execution
            event = with_route(venue_event(report), recorded.route)
            if self.observe is not None:
                try:
                    self.observe(event)
                except Exception:  # the quality record is advisory: booking goes on
                    log.exception("%s: observing report %s failed", venue, report.exec_id)
            if (watch := self._watches.get(report.order_id)) is not None:
                # its send_new_order takes it; the watch's end wakes us if not
                watch.add(event)
            else:
                self._wake.set()
        else:
            log.info("%s: duplicate report %s (PossDup=%s PossResend=%s) ignored", venue,
                     report.exec_id, report.poss_dup, report.poss_resend)

    # ------------------------------------------------------------------ early reports

    @contextlib.asynccontextmanager
    async def watch(self, order_id: str) -> AsyncIterator[ReportWatch]:
        """Collect ``order_id``'s new reports instead of signalling them (see module doc, 3)."""
        watch = ReportWatch(order_id)
        self._watches[order_id] = watch
        try:
            yield watch
        finally:
            if self._watches.get(order_id) is watch:
                del self._watches[order_id]
            if any((r.venue, r.exec_id) not in self._handed for r in watch.reports):
                self._wake.set()  # whatever was not handed over goes out as signals

    async def handed_over(self, reports: list[VenueEvent],
                          sent: tuple[str, int] | None = None) -> None:
        """Mark ``reports`` delivered (the activity returns them) and ``sent`` (ClOrdID,
        MsgSeqNum) ``sent``, in one statement."""
        keys = [(r.venue, r.exec_id) for r in reports]
        now = time.monotonic()
        self._handed.update((k, now) for k in keys)  # before the commit: see deliver_once
        await self.store.mark_delivered(keys, sent=sent)

    async def recorded(self, order_id: str) -> list[VenueEvent]:
        return [event for event, _ in await self.store.reports_for_order(order_id)]

    # ------------------------------------------------------------------ delivery

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._wake.set()  # deliver the backlog of a previous run at once
            self._task = asyncio.create_task(self._run(), name="gateway-delivery")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self.signal_timeout + 1)
            except TimeoutError:
                log.warning("delivery loop did not stop in time; cancelled")

    def wake(self) -> None:
        self._wake.set()

    def next_wait(self) -> float:
        """How long the loop waits for a wake-up before it looks at the table anyway: the short
        ``interval`` while the last pass found rows or a deferred row is not due yet (retries
        keep their schedule), else ``idle_poll``."""
        if self._last_found or time.monotonic() < self._retry_until:
            return self.interval
        return self.idle_poll

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_wait())
            self._wake.clear()
            if self._stopping:
                break
            try:
                while await self.deliver_once() >= self.batch and not self._stopping:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery pass failed; retrying in %.1fs", self.interval)
                await asyncio.sleep(self.interval)

    async def deliver_once(self) -> int:
        """One pass over the due undelivered reports; returns how many rows it tried to deliver."""
        pending = await self.store.list_undelivered(self.batch)
        self._last_found = len(pending)
        old = time.monotonic() - 60  # far longer than one pass
        self._handed = {k: t for k, t in self._handed.items() if t > old}
        if not pending:
            return 0
        by_order: dict[str, list[PendingReport]] = {}
        for p in pending:
            # send_new_order returns it, or has returned it (module doc, 3)
            if p.order_id not in self._watches and (p.venue, p.exec_id) not in self._handed:
                by_order.setdefault(p.order_id, []).append(p)
        delivered: list[tuple[str, str]] = []
        await asyncio.gather(*(self._deliver_order(o, rows, delivered) for o, rows in by_order.items()))
        await self.store.mark_delivered(delivered)
        return sum(len(rows) for rows in by_order.values())

    async def _deliver_order(
        self, order_id: str, rows: Sequence[PendingReport], delivered: list[tuple[str, str]]
    ) -> None:
        async with self._sem:
            for p in rows:  # in arrival order; stop at the first failure to keep that order
                try:
                    await self.signal(p.event)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._failed(order_id, p, exc)
                    return
                delivered.append((p.venue, p.exec_id))
                self.signalled += 1
                metrics.REPORTS_DELIVERED.inc()

    async def _failed(self, order_id: str, p: PendingReport, exc: Exception) -> None:
        attempts = p.attempts + 1
        metrics.REPORTS_UNDELIVERABLE.inc()
        delay = min(self.max_backoff, self.interval * 2 ** min(p.attempts, 20))
        # look again soon after it is due (the database's clock and ours may differ a little)
        self._retry_until = max(self._retry_until, time.monotonic() + delay + self.interval)
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
            what = f"workflow {order_id} not found ({exc.message})"
            level = logging.INFO if attempts < 5 else logging.WARNING
            if "completed" in exc.message:
                level = logging.ERROR
        else:
            what = f"signal failed: {exc!r}"
            level = logging.WARNING
        if attempts in (1, 5) or attempts % 50 == 0:
            log.log(level, "report %s/%s not delivered (attempt %d): %s; retrying in %.1fs",
                    p.venue, p.exec_id, attempts, what, delay)
        await self.store.defer_order(order_id, delay, what)

    async def signal(self, report: VenueEvent) -> None:
        """Signal ``execution_report`` to the workflow ``report.order_id`` (deduplicated by the
        server through the request id). When that workflow has ended (a report after the order
        was filled, canceled or resolved), a new run of it books the report (see
        :meth:`start_late`)."""
        try:
            await self._signal(report)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or not await self.start_late(report):
                raise

    async def start_late(self, report: VenueEvent) -> bool:
        """Start a new run of the ended order workflow (``late``: it loads the order, books the
        report with the same exactly-once rules, and waits for an operator if the report reopens
        the order), with the report as its first signal. False when there is no ended run of the
        order (it has not started yet: delivery retries) or its home is not known here (sent
        before the gateway recorded it)."""
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.common import WorkflowIDReusePolicy

        from domain.orders import PlaceOrderInput
        from sherwood.contracts import shard_task_queue
        from workflows.order import OrderWorkflow

        try:
            described = await self.client.get_workflow_handle(report.order_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False  # never started (yet)
            raise
        if described.status == WorkflowExecutionStatus.RUNNING:
            return False  # it has just (re)started: the next attempt signals it
        home = await self.store.order_home(report.order_id)
        if home is None:
            return False
        account_id, shard = home
        log.warning("order %s: %s report %s after its workflow ended: a new run books it",
                    report.order_id, report.venue, report.exec_id)
        await self.client.start_workflow(
            OrderWorkflow.run, PlaceOrderInput(order_id=report.order_id, account_id=account_id,
                                               shard=shard, request={}, request_hash="", late=True),
            id=report.order_id, task_queue=shard_task_queue(shard),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_signal=EXECUTION_REPORT_SIGNAL, start_signal_args=[report])
        return True

    async def _signal(self, report: VenueEvent) -> None:
        client = self.client
        req = SignalWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=report.order_id),
            signal_name=EXECUTION_REPORT_SIGNAL,
            identity=client.identity,
            request_id=signal_request_id(report.venue, report.exec_id),
        )
        req.input.payloads.extend(await client.data_converter.encode([report]))
        await client.workflow_service.signal_workflow_execution(
            req, retry=True, timeout=timedelta(seconds=self.signal_timeout))


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
        self.delivery = ReportDelivery(store, client, interval=delivery_interval,
                                       idle_poll=delivery_idle_poll,
                                       max_backoff=delivery_max_backoff,
                                       signal_timeout=signal_timeout)
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
        # halts: checked against Redis right before routing, the cache if Redis is down
        self._redis = redis_from_url(redis_url, redis_timeouts) if redis_url else None
        self.controls = ControlsCache(self._redis, redis_prefix)

        async def halted(symbol: str) -> bool:
            return await is_halted_now(self._redis, redis_prefix, symbol, self.controls)

        self.activities = GatewayActivities(store, self.sessions, routing=routing,
                                            halted=halted if self._redis is not None else None,
                                            reports=self.delivery,
                                            first_report_wait_s=first_report_wait_s,
                                            report_linger_s=report_linger_s,
                                            quotes=LatestQuotes(self._redis, redis_prefix,
                                                                max_age_s=float("inf"))
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
        if self._worker is not None:  # no new activities; in-flight ones finish first
            with contextlib.suppress(Exception):
                await self._worker.shutdown()
        if self._worker_task is not None:
            with contextlib.suppress(BaseException):
                await self._worker_task
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


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    run_loop(run_gateway(Settings().resolved()))


if __name__ == "__main__":
    main()
