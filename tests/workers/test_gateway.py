"""The execution gateway over real loopback FIX (MarketMaker venues), real Temporal, real Postgres.

The order workflow is not used here: ``ReportRecorder`` (defined below) stands in for it. It runs
with workflow id = order id, optionally executes ``send_new_order`` on the gateway's task queue,
and records every ``execution_report`` signal it receives without deduplicating anything, so the
tests see exactly what the gateway delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplefix
from prometheus_client import REGISTRY
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.gateway import GatewayActivities
from db.gateway import GatewayStore
from db.migrate import drop_database_as, migrate_gateway
from domain.execution import (
    VenueAck,
    VenueCancel,
    VenueEvent,
    VenueEventKind,
    VenueOrder,
)
from fix.messages import cancel_reject_exec_id, parse_inbound
from fix.session import FixSession, SessionConfig
from fix.store import MemorySessionStore
from sherwood.contracts import EXECUTION_REPORT_SIGNAL
from sherwood.settings import Settings, VenueConfig
from simulators.market_maker import MarketMaker, MarketMakerConfig
from simulators.quote_sources import RandomWalkQuoteSource
from workers.gateway import ExecutionGateway

REPO = Path(__file__).resolve().parents[2]
D = Decimal


# ============================================================================ the test workflow


@dataclass
class RecorderInput:
    order: VenueOrder | None = None
    gateway_queue: str = ""


@dataclass
class RecorderState:
    ack: VenueAck | None = None
    reports: list[VenueEvent] = field(default_factory=list)


@workflow.defn(name="GatewayTestReportRecorder")
class ReportRecorder:
    def __init__(self) -> None:
        self._state = RecorderState()
        self._signalled: list[VenueEvent] = []
        self._done = False

    @workflow.run
    async def run(self, inp: RecorderInput) -> RecorderState:
        if inp.order is not None:
            self._state.ack = await workflow.execute_activity(
                "send_new_order", inp.order, task_queue=inp.gateway_queue,
                start_to_close_timeout=timedelta(seconds=10), result_type=VenueAck)
        await workflow.wait_condition(lambda: self._done)
        return self._state

    @workflow.signal(name=EXECUTION_REPORT_SIGNAL)
    def execution_report(self, report: VenueEvent) -> None:
        self._signalled.append(report)

    @workflow.signal
    def finish(self) -> None:
        self._done = True

    @workflow.query
    def state(self) -> RecorderState:
        """Every delivery, not deduplicated: the reports the ack carried (the venue's first
        answers), then the signalled ones."""
        early = self._state.ack.reports if self._state.ack else []
        return RecorderState(ack=self._state.ack, reports=[*early, *self._signalled])


# ============================================================================ fixtures


@pytest.fixture(scope="module")
def gateway_settings(stack_settings: Settings) -> Iterator[Settings]:
    # Its own gateway database: the session's trading stack has a gateway (and a delivery loop)
    # on the default one, which must neither see these reports nor lose its database.
    url = f"{stack_settings.gateway_db_url_resolved()}_gwtest"
    migrate_gateway(url, stack_settings.db_owner())
    migrate_gateway(url, stack_settings.db_owner())  # idempotent
    yield stack_settings.model_copy(update={"gateway_db_url": url})
    drop_database_as(url, stack_settings.db_owner())


@pytest.fixture(scope="module")
async def client(gateway_settings: Settings) -> Client:
    assert gateway_settings.temporal_address
    return await Client.connect(gateway_settings.temporal_address,
                                namespace=gateway_settings.temporal_namespace)


@pytest.fixture(scope="module")
async def store(gateway_settings: Settings) -> AsyncIterator[GatewayStore]:
    s = GatewayStore.from_url(gateway_settings.gateway_db_url_resolved())
    yield s
    await s.dispose()


@pytest.fixture(scope="module")
async def recorder_queue(client: Client) -> AsyncIterator[str]:
    queue = f"gw-test-recorder-{uuid.uuid4().hex[:8]}"
    worker = Worker(client, task_queue=queue, workflows=[ReportRecorder],
                    workflow_runner=UnsandboxedWorkflowRunner())
    async with worker:
        yield queue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Venue:
    """A MarketMaker that also counts the NewOrderSingles it receives per ClOrdID."""

    def __init__(self, name: str = "MM1", clock: Callable[[], float] = time.monotonic,
                 **overrides: Any) -> None:
        overrides.setdefault("port", 0)
        overrides.setdefault("heartbeat_interval", 1.0)
        overrides.setdefault("tick_interval", 0.05)
        self.mm = MarketMaker(MarketMakerConfig(sender_comp_id=name, **overrides),
                              quote_source=RandomWalkQuoteSource(1), clock=clock)
        self.new_orders: list[simplefix.FixMessage] = []
        inner = self.mm._on_message

        async def counting(session: FixSession, msg: simplefix.FixMessage) -> None:
            if msg.get(35) == b"D":
                self.new_orders.append(msg)
            await inner(session, msg)

        self.mm._on_message = counting  # type: ignore[method-assign]

    def d_count(self, cl_ord_id: str) -> int:
        return sum(1 for m in self.new_orders if m.get(11) == cl_ord_id.encode())

    def engine_orders(self, cl_ord_id: str) -> int:
        return sum(1 for o in self.mm.engine.orders() if o.cl_ord_id == cl_ord_id)

    def venue_config(self, **kw: Any) -> VenueConfig:
        return VenueConfig(name=self.mm.venue, port=self.mm.port, heartbeat_interval=1.0,
                           reconnect_min_delay=0.05, reconnect_max_delay=0.3, **kw)


@contextlib.asynccontextmanager
async def running(*venues: Venue, client: Client, store: GatewayStore, tmp: Path,
                  routing: str = "round_robin") -> AsyncIterator[ExecutionGateway]:
    for v in venues:
        await v.mm.start()
        v.mm.set_quote("AAPL", "187.10", "187.12")
    gw = ExecutionGateway(
        venues=[v.venue_config() for v in venues], store=store, client=client, data_dir=tmp,
        task_queue=f"gw-test-{uuid.uuid4().hex[:8]}", routing=routing,
        delivery_interval=0.05, delivery_max_backoff=0.5,
        # no safety poll within a test: every report goes out on a wake-up or a retry's schedule
        delivery_idle_poll=600.0,
        first_report_wait_s=5.0,  # the venue's New rides in the ack even on a loaded machine
    )
    await gw.start()
    try:
        await gw.wait_logged_on(10)
        yield gw
    finally:
        await gw.stop()
        for v in venues:
            await v.mm.stop()


def new_order(qty: str = "1000", **kw: Any) -> VenueOrder:
    base: dict[str, Any] = dict(
        order_id=str(uuid.uuid4()), account_id=str(uuid.uuid4()), shard=0, symbol="AAPL",
        side="buy", qty=qty, order_type="market", time_in_force="day")
    base.update(kw)
    return VenueOrder(**base)


async def start_recorder(client: Client, queue: str, order_id: str, order: VenueOrder | None = None,
                         gateway_queue: str = "") -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        ReportRecorder.run, RecorderInput(order, gateway_queue), id=order_id, task_queue=queue,
        execution_timeout=timedelta(minutes=5))


async def wait_state(handle: WorkflowHandle[Any, Any], pred: Callable[[RecorderState], bool],
                     within: float = 10.0) -> RecorderState:
    deadline = time.monotonic() + within
    while True:
        st: RecorderState = await handle.query(ReportRecorder.state)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; state: {st}")
        await asyncio.sleep(0.05)


def filled(st: RecorderState) -> bool:
    return any(r.status == "filled" for r in st.reports)


def trades(st: RecorderState) -> list[VenueEvent]:
    return [r for r in st.reports if r.kind == "fill"]


async def eventually(cond: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.05)


def ack_of(ack: VenueAck | None) -> tuple[str, str, bool] | None:
    return None if ack is None else (ack.venue, ack.cl_ord_id, ack.resent)


def assert_once_each(st: RecorderState) -> None:
    keys = [(r.venue, r.exec_id) for r in st.reports]
    assert len(keys) == len(set(keys)), f"an ExecID was signalled twice: {keys}"


# ============================================================================ tests


async def test_uc3_fills_arrive_as_signals(client: Client, store: GatewayStore, recorder_queue: str,
                                           tmp_path: Path) -> None:
    clock = FakeClock()  # the venue's time: the next slice falls due only when we say so
    venue = Venue(clock=clock, fill_slices=(400, 300, 300), fill_delay=0.5)
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        order = new_order("1000")
        h = await start_recorder(client, recorder_queue, order.order_id, order, gw.task_queue)
        await wait_state(h, lambda st: len(trades(st)) == 1)
        venue.mm.set_quote("AAPL", "187.20", "187.22")  # later slices fill at the new ask
        clock.now = 1.0
        await wait_state(h, lambda st: len(trades(st)) == 2)
        clock.now = 2.0
        st = await wait_state(h, filled)
        await asyncio.sleep(0.2)
        st = await h.query(ReportRecorder.state)
    assert ack_of(st.ack) == ("MM1", order.order_id, False)
    # the venue's first answers ride in the ack (New, and the first slice when it is quick)
    assert st.ack is not None and [r.kind for r in st.ack.reports][:1] == ["ack"]
    assert_once_each(st)
    assert [(r.kind, r.status) for r in st.reports] == [
        ("ack", "new"), ("fill", "partially_filled"), ("fill", "partially_filled"), ("fill", "filled")]
    assert [(r.last_qty, r.last_px, r.cum_qty, r.leaves_qty) for r in trades(st)] == [
        ("400", "187.12", "400", "600"), ("300", "187.22", "700", "300"),
        ("300", "187.22", "1000", "0")]
    avg = [r.avg_px for r in trades(st)]
    assert avg[0] == "187.12" and avg[2] == "187.18"  # (400*187.12 + 600*187.22) / 1000
    assert abs(D(avg[1]) - (D(400) * D("187.12") + D(300) * D("187.22")) / D(700)) < D("1e-8")
    assert all(r.order_id == order.order_id and r.venue == "MM1" for r in st.reports)
    assert venue.d_count(order.order_id) == 1
    booked = await store.reports_for_order(order.order_id)
    assert [s.exec_id for s, _ in booked] == [r.exec_id for r in st.reports]
    assert all(delivered for _, delivered in booked)
    await h.signal(ReportRecorder.finish)


async def test_activity_retry_sends_one_order(client: Client, store: GatewayStore, tmp_path: Path) -> None:
    venue = Venue()
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        acts = gw.activities
        order = new_order("100")
        first = await acts.send_new_order(order)
        # returned: marked sent with its MsgSeqNum, the reports it carries marked delivered
        row = await store.statements.first(
            "SELECT status, msg_seq_num FROM gateway_orders WHERE cl_ord_id = :c",
            {"c": order.cl_ord_id})
        assert row is not None and row["status"] == "sent" and row["msg_seq_num"] is not None
        assert first.reports and all(
            d for _, d in await store.reports_for_order(order.order_id))
        second = await acts.send_new_order(order)
        assert ack_of(first) == ("MM1", order.order_id, False)
        assert ack_of(second) == ("MM1", order.order_id, True)
        # a retry returns every report recorded for the order (the first result may be lost)
        assert [r.exec_id for r in second.reports] == [
            s.exec_id for s, _ in await store.reports_for_order(order.order_id)]

        # a crash between reserving and sending: the retry sends again, flagged PossResend
        crashed = new_order("100")
        await store.reserve_send(crashed.order_id, crashed.order_id, "MM1", "D")
        again = await acts.send_new_order(crashed)
        assert ack_of(again) == ("MM1", crashed.order_id, False)
        assert ack_of(await acts.send_new_order(crashed)) == ("MM1", crashed.order_id, True)

        await eventually(lambda: _true(venue.d_count(crashed.order_id) == 1))
        await asyncio.sleep(0.2)
    assert venue.d_count(order.order_id) == 1 and venue.engine_orders(order.order_id) == 1
    assert venue.d_count(crashed.order_id) == 1 and venue.engine_orders(crashed.order_id) == 1
    resent = next(m for m in venue.new_orders if m.get(11) == crashed.order_id.encode())
    assert resent.get(97) == b"Y"
    sent = await store.get_send(crashed.order_id)
    # every attempt to send counts, the last one that found it sent and sent nothing too
    assert sent is not None and sent.status == "sent" and sent.attempts == 3


async def _true(value: bool) -> bool:
    return value


async def test_routing_and_errors(client: Client, store: GatewayStore, tmp_path: Path) -> None:
    v1, v2 = Venue("MM1"), Venue("MM2")
    async with running(v1, v2, client=client, store=store, tmp=tmp_path) as gw:
        acts = gw.activities
        acks = [await acts.send_new_order(new_order("10")) for _ in range(4)]
        assert sorted(a.venue for a in acks) == ["MM1", "MM1", "MM2", "MM2"]
        pinned = await acts.send_new_order(new_order("10", venue="MM2"))
        assert pinned.venue == "MM2"
        with pytest.raises(ApplicationError) as err:
            await acts.send_new_order(new_order("10", venue="NOPE"))
        assert err.value.type == "UnknownVenue" and err.value.non_retryable
        with pytest.raises(ApplicationError) as err:
            await acts.send_new_order(new_order("10", order_type="limit"))
        assert err.value.type == "InvalidOrder" and err.value.non_retryable

    # nothing logged on: retryable, and nothing reserved
    down = FixSession(SessionConfig("SHERWOOD", "MM9"), MemorySessionStore(),
                      lambda s, m: asyncio.sleep(0), initiator=True)
    acts = GatewayActivities(store, {"MM9": down})
    order = new_order("10")
    with pytest.raises(ApplicationError) as err:
        await acts.send_new_order(order)
    assert err.value.type == "VenueUnavailable" and not err.value.non_retryable
    assert await store.get_send(order.order_id) is None


async def test_duplicate_and_possresend_reports_signalled_once(
    client: Client, store: GatewayStore, recorder_queue: str, tmp_path: Path
) -> None:
    venue = Venue(fill_slices=(400, 300, 300), duplicate_reports=True, possresend_old=True)
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        seen: list[tuple[str, bool, bool]] = []
        inner = gw.delivery.on_message

        async def spy(name: str, msg: simplefix.FixMessage) -> None:
            seen.append(((msg.get(17) or b"").decode(), msg.get(43) == b"Y", msg.get(97) == b"Y"))
            await inner(name, msg)

        gw.delivery.on_message = spy  # type: ignore[method-assign,assignment]
        order = new_order("1000")
        h = await start_recorder(client, recorder_queue, order.order_id, order, gw.task_queue)
        await wait_state(h, filled)
        await venue.mm.drain()
        await asyncio.sleep(0.3)
        st = await h.query(ReportRecorder.state)
    assert_once_each(st)
    venue_exec_ids = {r.exec_id for r in venue.mm._sent_reports if r.cl_ord_id == order.order_id}
    assert {r.exec_id for r in st.reports} == venue_exec_ids
    assert len(trades(st)) == 3 and trades(st)[-1].cum_qty == "1000"
    assert len(seen) > len(venue_exec_ids)  # the venue really did send duplicates
    assert any(resend for _, _, resend in seen)
    await h.signal(ReportRecorder.finish)


async def test_report_before_workflow_exists(
    client: Client, store: GatewayStore, recorder_queue: str, tmp_path: Path
) -> None:
    venue = Venue()
    undeliverable = REGISTRY.get_sample_value("sherwood_reports_undeliverable_total") or 0
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        gw.activities.early_reports = None  # every answer goes out as a signal
        order = new_order("100")
        await gw.activities.send_new_order(order)

        async def booked_and_failing() -> bool:
            rows = await store.reports_for_order(order.order_id)
            return len(rows) == 2 and not any(d for _, d in rows)

        await eventually(booked_and_failing)

        async def counted_undeliverable() -> bool:  # for /metrics (SherwoodReportsUndeliverable)
            return (REGISTRY.get_sample_value("sherwood_reports_undeliverable_total") or 0) > undeliverable

        await eventually(counted_undeliverable)
        await asyncio.sleep(0.3)  # a few failed delivery attempts (workflow not found)
        assert not any(d for _, d in await store.reports_for_order(order.order_id))
        delivered = REGISTRY.get_sample_value("sherwood_reports_delivered_total") or 0
        h = await start_recorder(client, recorder_queue, order.order_id)
        st = await wait_state(h, filled)
        await asyncio.sleep(0.3)
        st = await h.query(ReportRecorder.state)
    assert_once_each(st)
    assert [(r.kind, r.status) for r in st.reports] == [("ack", "new"), ("fill", "filled")]
    assert all(d for _, d in await store.reports_for_order(order.order_id))
    assert (REGISTRY.get_sample_value("sherwood_reports_delivered_total") or 0) >= delivered + 2
    await h.signal(ReportRecorder.finish)


async def test_cancel_and_status_round_trip(
    client: Client, store: GatewayStore, recorder_queue: str, tmp_path: Path
) -> None:
    venue = Venue()
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        acts = gw.activities
        order = new_order("10", order_type="limit", limit_price="150.00", time_in_force="gtc")
        h = await start_recorder(client, recorder_queue, order.order_id, order, gw.task_queue)
        await wait_state(h, lambda st: [r.kind for r in st.reports] == ["ack"])
        req = VenueCancel(order_id=order.order_id, venue="MM1", symbol="AAPL", side="buy", qty="10")

        assert await acts.send_status(req) == f"{order.order_id}:S1"
        st = await wait_state(h, lambda st: any(r.kind == "status" for r in st.reports))
        status = next(r for r in st.reports if r.kind == "status")
        assert (status.cl_ord_id, status.status, status.leaves_qty) == (order.order_id, "new", "10")

        assert await acts.send_cancel(req) == f"{order.order_id}:C1"
        assert await acts.send_cancel(req) == f"{order.order_id}:C1"  # a retry sends nothing
        st = await wait_state(h, lambda st: any(r.kind == "canceled" for r in st.reports))
        canceled = next(r for r in st.reports if r.kind == "canceled")
        assert (canceled.cl_ord_id, canceled.orig_cl_ord_id, canceled.status) == (
            f"{order.order_id}:C1", order.order_id, "canceled")

        too_late = replace(req, attempt=2)
        assert await acts.send_cancel(too_late) == f"{order.order_id}:C2"
        st = await wait_state(h, lambda st: any(r.kind == "cancel_rejected" for r in st.reports))
        rej = next(r for r in st.reports if r.kind == "cancel_rejected")
        assert rej.exec_id == cancel_reject_exec_id(f"{order.order_id}:C2", order.order_id)
        assert (rej.order_id, rej.reject_reason) == (order.order_id, "0")
        await asyncio.sleep(0.3)
        st = await h.query(ReportRecorder.state)
    assert_once_each(st)
    assert [r.kind for r in st.reports] == ["ack", "status", "canceled", "cancel_rejected"]
    assert len(venue.new_orders) == 1
    await h.signal(ReportRecorder.finish)


def test_parse_cancel_reject_is_stable_across_retransmissions() -> None:
    def reject(seq: int, *, poss_dup: bool = False, poss_resend: bool = False) -> simplefix.FixMessage:
        msg = simplefix.FixMessage()
        msg.append_pair(35, "9")
        msg.append_pair(34, seq)
        if poss_dup:
            msg.append_pair(43, "Y")
        if poss_resend:
            msg.append_pair(97, "Y")
        for tag, value in ((37, "V1"), (11, "o1:C1"), (41, "o1"), (39, "2"), (434, "1"), (102, "0")):
            msg.append_pair(tag, value)
        return msg

    a = parse_inbound("MM1", reject(7))
    b = parse_inbound("MM1", reject(7, poss_dup=True))
    c = parse_inbound("MM1", reject(12, poss_resend=True))
    assert a is not None and b is not None and c is not None
    assert a.exec_id == b.exec_id == c.exec_id == "CXLREJ-o1:C1-o1"
    assert a.order_id == "o1" and b.poss_dup and c.poss_resend and not a.poss_dup


async def test_signal_is_deduplicated_by_temporal(
    client: Client, store: GatewayStore, recorder_queue: str, tmp_path: Path
) -> None:
    """A kill between signalling and marking delivered re-signals; the server drops it."""
    from workers.gateway import ReportDelivery

    order_id = str(uuid.uuid4())
    h = await start_recorder(client, recorder_queue, order_id)
    delivery = ReportDelivery(store, client)
    report = VenueEvent(venue="MM1", exec_id=f"X-{order_id}", order_id=order_id,
                        kind=VenueEventKind.ACK, cl_ord_id=order_id)
    await delivery.signal(report)
    await delivery.signal(report)
    await delivery.signal(replace(report, exec_id=f"Y-{order_id}"))
    st = await wait_state(h, lambda st: len(st.reports) >= 2)
    await asyncio.sleep(0.3)
    st = await h.query(ReportRecorder.state)
    assert [r.exec_id for r in st.reports] == [f"X-{order_id}", f"Y-{order_id}"]
    await h.signal(ReportRecorder.finish)


# ============================================================================ restart (SIGKILL)


def _sqlite_seqs(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT next_sender_seq, next_target_seq FROM fix_session").fetchone()
        return int(row[0]), int(row[1])
    finally:
        db.close()


async def test_sigkill_and_restart_delivers_every_fill_once(
    gateway_settings: Settings, client: Client, store: GatewayStore, recorder_queue: str,
    tmp_path: Path
) -> None:
    venue = Venue(fill_slices=(100,), fill_delay=0.25)
    await venue.mm.start()
    venue.mm.set_quote("AAPL", "187.10", "187.12")
    data_dir = tmp_path / "gw"
    queue = f"gw-test-proc-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "SHERWOOD_DATA_DIR": str(tmp_path / "data"),
        "SHERWOOD_GATEWAY_DATA_DIR": str(data_dir),
        "SHERWOOD_GATEWAY_DB_URL": gateway_settings.gateway_db_url_resolved(),
        "SHERWOOD_TEMPORAL_ADDRESS": str(gateway_settings.temporal_address),
        "SHERWOOD_GATEWAY_TASK_QUEUE": queue,
        "SHERWOOD_GATEWAY_DELIVERY_INTERVAL_S": "0.05",
        "SHERWOOD_GATEWAY_DELIVERY_MAX_BACKOFF_S": "0.5",
        "SHERWOOD_VENUES": json.dumps([venue.venue_config().model_dump()]),
        "SHERWOOD_ENV": "test",  # no link secret: the gateway runs without its direct link
    }
    logs = [tmp_path / "gateway-1.log", tmp_path / "gateway-2.log"]

    async def spawn(log: Path) -> asyncio.subprocess.Process:
        with log.open("wb") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers.gateway", cwd=REPO, env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)

    async def logged_on() -> bool:
        return venue.mm.session.logged_on.is_set()

    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(await spawn(logs[0]))
        await eventually(logged_on, 20)
        order = new_order("1000")
        h = await start_recorder(client, recorder_queue, order.order_id, order, queue)
        await wait_state(h, lambda st: len(trades(st)) >= 3, within=15)
        venue_in_before = venue.mm.store.next_target_seq()

        procs[0].kill()  # SIGKILL: no logout, nothing flushed
        assert await procs[0].wait() == -signal.SIGKILL
        got_before = len(trades(await h.query(ReportRecorder.state)))
        fix_file = next(data_dir.glob("fix-*.sqlite"))
        out_seq_killed, _ = _sqlite_seqs(fix_file)
        await asyncio.sleep(0.8)  # the venue keeps filling while we are down
        assert venue.mm.engine.order(order.order_id).cum_qty > D(got_before * 100)  # type: ignore[union-attr]

        procs.append(await spawn(logs[1]))
        st = await wait_state(h, lambda st: filled(st), within=20)
        await asyncio.sleep(0.3)
        st = await h.query(ReportRecorder.state)

        procs[1].send_signal(signal.SIGTERM)  # graceful stop
        assert await asyncio.wait_for(procs[1].wait(), 15) == 0
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await venue.mm.stop()
    assert_once_each(st)
    fills = trades(st)
    assert [f.cum_qty for f in fills] == [str(100 * n) for n in range(1, 11)]
    assert sum(D(f.last_qty) for f in fills) == D(1000) and fills[-1].leaves_qty == "0"
    venue_exec_ids = {r.exec_id for r in venue.mm._sent_reports if r.cl_ord_id == order.order_id}
    assert {r.exec_id for r in st.reports} == venue_exec_ids
    assert venue.d_count(order.order_id) == 1 and venue.engine_orders(order.order_id) == 1
    # sequence numbers continued across the restart: no reset on either side
    assert venue.mm.store.next_target_seq() > venue_in_before
    out_seq_after, _ = _sqlite_seqs(fix_file)
    assert out_seq_after > out_seq_killed > 2
    booked = await store.reports_for_order(order.order_id)
    assert len(booked) == len(venue_exec_ids) and all(d for _, d in booked)
    await h.signal(ReportRecorder.finish)


async def test_a_retry_while_the_first_attempt_hangs_returns_the_first_attempts_answers(
    client: Client, store: GatewayStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first attempt sends, the venue fills at once, and the attempt hangs while handing the
    answers over (a database that stalls past the activity's start-to-close timeout). Temporal
    starts a second attempt, whose result is the only one the workflow reads: the first's is
    discarded when it finally comes. The second finds the ClOrdID ``sending``, sends again
    flagged PossResend, and the venue, deduplicating by ClOrdID, answers nothing new. Its answer
    must carry the first attempt's reports, which that attempt is about to mark delivered (so
    they are never signalled either): else the fill is lost and the order stays open."""
    venue = Venue()
    async with running(venue, client=client, store=store, tmp=tmp_path) as gw:
        acts = gw.activities
        assert acts.early_reports is not None
        order = new_order("100")
        handing, second_done = asyncio.Event(), asyncio.Event()
        hand_over = acts.early_reports.handed_over
        calls = 0

        async def stalled(reports: list[VenueEvent], sent: Any = None) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:  # the first attempt: it holds the venue's answers
                assert [r.kind for r in reports] == ["ack", "fill"], reports
                handing.set()
                await asyncio.wait_for(second_done.wait(), 30)
            await hand_over(reports, sent)

        monkeypatch.setattr(acts.early_reports, "handed_over", stalled)
        first = asyncio.create_task(acts.send_new_order(order))
        await asyncio.wait_for(handing.wait(), 10)
        second = await acts.send_new_order(order)
        second_done.set()
        await first
        assert not second.resent
        # (the venue answers the PossResend copy with the order's status; it books nothing)
        assert [(r.kind, r.status) for r in second.reports if r.kind != "status"] == [
            ("ack", "new"), ("fill", "filled")]
    assert venue.engine_orders(order.order_id) == 1
