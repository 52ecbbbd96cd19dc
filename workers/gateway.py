"""The execution gateway process: the recording of venue reports and their delivery to order
workflows (here), and the process around it (FIX sessions to the venues, the gateway
activities: :mod:`workers.execution_gateway`, whose names are importable from here too).

    ReportDelivery(store, client, ...)         inbound handler + delivery loop
    ExecutionGateway(venues=..., store=..., client=..., data_dir=..., task_queue=...)
        start() / stop(); sessions: dict[venue, FixSession]; activities; delivery; link (the
        order's direct path to send_new_order, activities/gateway_link.py)
    ExecutionGateway.from_settings(settings, client) -> ExecutionGateway
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
   (:class:`activities.gateway_ports.ReportWatch`), the loop leaves that order's rows alone; the
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
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta

import simplefix
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import SignalWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.gateway_ports import ReportWatch
from db.gateway import GatewayStore, PendingReport, with_route
from domain.execution import VenueEvent
from fix.messages import Tag, parse_inbound, venue_event
from fix.session import FixSession, MessageHandler
from sherwood import metrics
from sherwood.contracts import EXECUTION_REPORT_SIGNAL
from sherwood.lifecycle import run_loop
from sherwood.settings import Settings

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


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    run_loop(run_gateway(Settings().resolved()))


# the process around ReportDelivery, importable from here as before the split (at the end: that
# module imports ReportDelivery from this one when it builds a gateway)
from workers.execution_gateway import ExecutionGateway, run_gateway  # noqa: E402

__all__ = ["ExecutionGateway", "ReportDelivery", "main", "run_gateway", "signal_request_id"]

if __name__ == "__main__":
    main()
