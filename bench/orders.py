"""Order throughput and latency through the whole stack, against a bare-workflow baseline.

Ours: market orders POSTed over HTTP to the API of a real stack (``DevStack``: Temporal dev
server with the poll-rate limits raised, Postgres shards, shard worker, execution gateway, two
simulated venues filling at once); latency = POST sent -> order workflow completed FILLED.
Baseline, same Temporal server, same run: a bare workflow of five no-op activities and one
signal, started, signalled and awaited by a client in the same process as its worker.
Floor, same server, same run: the order workflow's exact Temporal shape with no-op bodies
(``bench.shape_workflow``); ours minus the floor is what the business work costs. At each
concurrency the three run in the order A B C C B A, half the time each, so that the server's
slowing down as its history grows weighs on all three alike.

Orders the API sheds (429 ``over_capacity``, api/admission.py) are counted as ``refused``, apart
from ``errors``; the client then waits its Retry-After, as a well-behaved one does, and latencies
are those of the accepted orders. Prints one JSON line per (kind, concurrency), with the CPU
each process kind spent per completed
order / workflow (``cpu_ms_per_item``; the box has 2 cores, so the total bounds throughput), and
the ratios; then, on their own, bracket orders (``sherwood_bracket_order_legs_live``: POST until
the entry is filled, the take-profit ``new`` and the stop-loss ``held``). Run:
``python -m bench.orders [--seconds 10] [--concurrency 1,10,50]``; ``--overload 10,50`` instead
measures admission control alone: our orders at 10 and 50 interleaved, and 50's throughput and
p99 over 10's, with where each level's latency went (``order_phases_ms``, bench.order_phases).
Uses SHERWOOD_POSTGRES_URL /
SHERWOOD_REDIS_URL when set (else embedded servers) and a scratch data dir and database prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from bench.bare_workflow import BareWorkflow, noop
from bench.order_phases import PHASES as ORDER_PHASES
from bench.order_phases import Timed, sampled_phases
from bench.shape_workflow import ShapeWorkflow, shape_local
from db.migrate import drop_database
from db.roles import drop_role, login_of, with_login
from sherwood.embedded import TemporalDevServer, free_port
from sherwood.settings import Settings


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def _kind(cmd: str) -> str | None:
    if "temporal server" in cmd:
        return "temporal"
    if "postgres" in cmd:
        return "postgres"
    if "sherwood serve" in cmd:
        return cmd.split("serve", 1)[1].split()[0]
    if "sim market-maker" in cmd:
        return "venues"
    if "redis-server" in cmd:
        return "redis"
    if "bench.orders" in cmd:
        return "bench_client"
    return None


def _ours(pid: str, kind: str, cmd: str, marks: tuple[str, ...]) -> bool:
    """Whether a process belongs to this bench's stack, not to another stack on the same box:
    one of ``marks`` (its database prefix, its data dir) is in its command line (Postgres
    backends name their database, the Temporal dev server its db file) or its environment
    (Sherwood processes); the bench client is this process."""
    if kind == "bench_client":
        return int(pid) == os.getpid()
    if any(m in cmd for m in marks):
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    return any(m.encode() in env for m in marks)


def cpu_seconds(marks: tuple[str, ...] = ()) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process of the stack, by pid (Linux /proc); with
    ``marks``, only those of the stack they mark (:func:`_ours`)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        kind = _kind(cmd)
        if kind is not None and marks and not _ours(pid, kind, cmd, marks):
            continue
        if kind is not None:
            out[int(pid)] = (kind, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_spent(before: dict[int, tuple[str, float]],
              after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each process kind spent between two :func:`cpu_seconds` readings."""
    by: dict[str, float] = {}
    for pid, (kind, t) in after.items():
        by[kind] = by.get(kind, 0.0) + t - before.get(pid, (kind, 0.0))[1]
    return by


def per_item_ms(spent: dict[str, float], n: int) -> dict[str, float]:
    """Where the CPU went, in ms per completed item, by process kind."""
    per = {k: round(1000 * v / max(n, 1), 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    per["total"] = round(sum(per.values()), 1)
    return per


class Refused(Exception):
    """POST /v2/orders answered 429 over_capacity (api/admission.py)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"refused, retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


def check_placed(r: httpx.Response) -> None:
    """Raise :class:`Refused` for an admission refusal, RuntimeError for any other non-200."""
    if r.status_code == 429 and r.json().get("reason") == "over_capacity":
        raise Refused(float(r.headers.get("Retry-After", "1")))
    if r.status_code != 200:
        raise RuntimeError(f"POST /v2/orders: {r.status_code} {r.text}")


@dataclass
class Run:
    """What one or more timed runs of one kind gave."""

    latencies: list[float] = field(default_factory=list)
    # of plain orders: POST sent -> answered (the rest of the latency is the order's
    # workflow finishing after its answer, and the bench reading its result)
    answered: list[float] = field(default_factory=list)
    timed: list[Timed] = field(default_factory=list)  # of plain orders: for their phases
    errors: int = 0
    refused: int = 0  # admission refusals (429 over_capacity): shed load, not errors
    elapsed: float = 0.0

    def add(self, other: Run) -> None:
        self.latencies += other.latencies
        self.answered += other.answered
        self.timed += other.timed
        self.errors += other.errors
        self.refused += other.refused
        self.elapsed += other.elapsed

    def figures(self) -> dict[str, float]:
        lat = self.latencies
        figs = {"per_s": len(lat) / self.elapsed if self.elapsed else 0.0, "n": len(lat),
                "errors": self.errors, "refused": self.refused,
                "p50_ms": pct(lat, 0.5) * 1000, "p95_ms": pct(lat, 0.95) * 1000,
                "p99_ms": pct(lat, 0.99) * 1000,
                "mean_ms": (statistics.fmean(lat) * 1000) if lat else float("nan")}
        if self.answered:
            figs |= {"answered_p50_ms": pct(self.answered, 0.5) * 1000,
                     "answered_p99_ms": pct(self.answered, 0.99) * 1000}
        return figs


async def drive(concurrency: int, seconds: float, one) -> Run:  # type: ignore[no-untyped-def]
    run = Run()
    stop = time.monotonic() + seconds

    async def loop(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                await one(i, n)
                run.latencies.append(time.perf_counter() - t0)
            except Refused as refused:
                # the API shed this order (admission control): a client that honours
                # Retry-After waits before its next order (cut short at the end of the run)
                run.refused += 1
                await asyncio.sleep(max(0.0, min(refused.retry_after_s, stop - time.monotonic())))
            except Exception as exc:
                if not run.errors:  # the first of a kind says what went wrong
                    print(f"error: {exc!r}", file=sys.stderr, flush=True)
                run.errors += 1
            n += 1

    start = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    run.elapsed = time.monotonic() - start
    return run


async def bench_baseline(client: Client, concurrency: int, seconds: float) -> Run:
    queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[BareWorkflow], activities=[noop],
                      max_concurrent_workflow_tasks=200):
        async def one(i: int, n: int) -> None:
            handle = await client.start_workflow(BareWorkflow.run, "x", id=f"bare-{uuid.uuid4()}",
                                                 task_queue=queue)
            await handle.signal(BareWorkflow.go)
            await handle.result()

        return await drive(concurrency, seconds, one)


async def bench_shape(client: Client, s: Settings, concurrency: int, seconds: float) -> Run:
    """The floor: our Temporal shape with no-op bodies (``bench.shape_workflow``), the order
    workflow's worker settings, its client in this process like the baseline's."""
    queue = f"bench-shape-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[ShapeWorkflow], activities=[shape_local],
                      max_concurrent_workflow_tasks=200, max_concurrent_local_activities=200,
                      workflow_runner=UnsandboxedWorkflowRunner(),
                      workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(s.shard_workflow_task_polls),
                      nonsticky_to_sticky_poll_ratio=s.shard_nonsticky_poll_ratio):
        async def one(i: int, n: int) -> None:
            start = WithStartWorkflowOperation(
                ShapeWorkflow.run, "x", id=f"shape-{uuid.uuid4()}", task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
            await client.execute_update_with_start_workflow(ShapeWorkflow.accepted, "x",
                                                            start_workflow_operation=start)
            await (await start.workflow_handle()).result()

        return await drive(concurrency, seconds, one)


@contextlib.asynccontextmanager
async def http_clients(api: str, n: int, connections: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per client loop, each with its own few connections: one pool shared by
    every loop (httpcore's) costs more per request the more connections it holds (it rechecks
    each of them on every request, encode/httpx#3215). At 50 loops, measured with its trace
    events, a POST waited up to 0.3 s (p99) in the bench's own pool before it was written, and
    that counted as our latency."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(
            base_url=api, timeout=30, limits=httpx.Limits(max_connections=connections)))
            for _ in range(n)]


async def bench_orders(api: str, client: Client, accounts: list[dict[str, str]], concurrency: int,
                       seconds: float) -> Run:
    answered: list[float] = []
    timed: list[Timed] = []
    async with http_clients(api, concurrency, 1) as https:
        async def one(i: int, n: int) -> None:
            # each loop cycles through every account: one customer's own rate limit
            # (SHERWOOD_ORDER_RATE_PER_S) is not what this measures
            acct = accounts[(i + n * concurrency) % len(accounts)]
            t0, sent = time.perf_counter(), time.time()
            r = await https[i].post("/v2/orders", json={
                "symbol": "F", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"},
                headers={"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]})
            check_placed(r)
            answered.append(time.perf_counter() - t0)
            at_answer = time.time()
            snap = await client.get_workflow_handle(r.json()["id"]).result()
            if snap["state"] != "FILLED":
                raise RuntimeError(f"order ended {snap['state']}")
            timed.append(Timed(r.json()["id"], sent, at_answer, time.time()))

        run = await drive(concurrency, seconds, one)
        run.answered = answered
        run.timed = timed
        return run


BRACKET = {"symbol": "F", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
           "order_class": "bracket", "take_profit": {"limit_price": "999"},  # never reached
           "stop_loss": {"stop_price": "0.50"}}  # never triggered
LIVE = {"parent": "filled", "take_profit": "new", "stop_loss": "held"}


async def bench_brackets(api: str, accounts: list[dict[str, str]], concurrency: int,
                         seconds: float) -> Run:
    """Bracket orders: latency = POST sent -> all three legs live (the entry filled, the
    take-profit ``new`` at a venue, the stop-loss ``held`` at the broker), read by polling
    ``GET /v2/orders/{id}`` every 10 ms. Each group is then canceled, untimed."""
    cleanups: list[asyncio.Task[object]] = []
    async with http_clients(api, concurrency, 2) as https:
        async def one(i: int, n: int) -> None:
            http = https[i]
            acct = accounts[(i + n * concurrency) % len(accounts)]
            hdrs = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
            r = await http.post("/v2/orders", json=BRACKET, headers=hdrs)
            check_placed(r)
            oid = r.json()["id"]
            deadline = time.monotonic() + 30
            while True:
                body = (await http.get(f"/v2/orders/{oid}", headers=hdrs)).json()
                legs = {"parent": body["status"], **{
                    ("take_profit" if leg["type"] == "limit" else "stop_loss"): leg["status"]
                    for leg in body["legs"] or []}}
                if legs == LIVE:
                    break
                if time.monotonic() > deadline or body["status"] in ("rejected", "canceled"):
                    raise RuntimeError(f"bracket legs stayed {legs}")
                await asyncio.sleep(0.01)
            cleanups.append(asyncio.create_task(http.delete(f"/v2/orders/{oid}", headers=hdrs)))

        run = await drive(concurrency, seconds, one)
        await asyncio.gather(*cleanups, return_exceptions=True)
        return run


PHASES = {"api_admission_wait": "sherwood_order_admission_wait_seconds",
          "api_accept": "sherwood_order_accept_seconds"}


async def phase_totals(metrics_url: str | None) -> dict[str, tuple[float, float]]:
    """The API's (sum, count) of each of :data:`PHASES` (histograms on its /metrics)."""
    if metrics_url is None:
        return {}
    async with httpx.AsyncClient(timeout=10) as http:
        body = (await http.get(metrics_url)).text
    samples = {s.name: s.value for family in text_string_to_metric_families(body)
               for s in family.samples}
    return {name: (samples.get(f"{metric}_sum", 0.0), samples.get(f"{metric}_count", 0.0))
            for name, metric in PHASES.items()}


async def bench_overload(api: str, client: Client, accounts: list[dict[str, str]],
                         levels: list[int], seconds: float, marks: tuple[str, ...],
                         api_metrics: str | None = None) -> None:
    """Admission control's figures: our orders at a load the stack carries and at one past it,
    interleaved (LOW HIGH HIGH LOW, half the time each). With the API's /metrics URL, the mean
    time an accepted POST spent waiting for a slot and in its accept (the update), per level."""
    low, high = levels
    runs = {c: Run() for c in (low, high)}
    spent: dict[int, dict[str, float]] = {c: {} for c in (low, high)}
    phases: dict[int, dict[str, list[float]]] = {c: {k: [0.0, 0.0] for k in PHASES} for c in levels}
    for c in (low, high, high, low):
        before, seen = cpu_seconds(marks), await phase_totals(api_metrics)
        runs[c].add(await bench_orders(api, client, accounts, c, seconds / 2))
        for k, v in cpu_spent(before, cpu_seconds(marks)).items():
            spent[c][k] = spent[c].get(k, 0.0) + v
        for k, (total, n) in (await phase_totals(api_metrics)).items():
            phases[c][k][0] += total - seen[k][0]
            phases[c][k][1] += n - seen[k][1]
    figs = {c: run.figures() for c, run in runs.items()}
    for c, r in figs.items():
        means: dict[str, float] = {f"{k}_mean_ms": round(1000 * total / n, 1)
                                   for k, (total, n) in phases[c].items() if n}
        means["api_accepts"] = phases[c]["api_accept"][1]  # beside n: accepts the bench saw end
        print(json.dumps({"bench": "orders", "kind": "sherwood_market_order_overload",
                          "concurrency": c, **{k: round(v, 2) for k, v in r.items()}, **means,
                          "cpu_ms_per_item": per_item_ms(spent[c], int(r["n"]))}), flush=True)
    for c in (low, high):  # where each level's latency went (histories read after the runs)
        rows = await sampled_phases(client, runs[c].timed)
        print(json.dumps({"bench": "orders", "kind": "order_phases_ms", "concurrency": c, **{
            phase: {f"p{round(q * 100)}": round(pct([r[phase] for r in rows], q) * 1000, 1)
                    for q in (0.5, 0.95, 0.99)} for phase in ORDER_PHASES}}), flush=True)
    print(json.dumps({"bench": "orders", "kind": "overload_ratio", "low": low, "high": high,
                      "throughput_high_over_low": round(figs[high]["per_s"] / figs[low]["per_s"], 3),
                      "p99_high_over_low": round(figs[high]["p99_ms"] / figs[low]["p99_ms"], 3)}),
          flush=True)


def drop_stack_databases(s: Settings) -> None:
    """Drop the databases of the bench's dev stack (settings as the stack resolved them), then
    the roles made for them, the service role and the API's, as tests/conftest.py does (a role
    that still holds grants elsewhere stays). Never the owner's."""
    owner = s.db_owner()  # the stack's processes connect as the service role: the owner drops
    for url in [s.directory_db_url(), s.gateway_db_url_resolved(), s.marketdata_db_url_resolved(),
                *[s.shard_url(n) for n in range(s.shard_count)]]:
        drop_database(with_login(url, owner) if owner is not None else url)
    if owner is None:
        return  # no roles were made (db/roles.py: migrations ran as the URLs' user)
    api = s.api_login()
    for role in {login_of(s.directory_db_url()).user, *([api.user] if api else [])} - {owner.user}:
        with contextlib.suppress(psycopg.Error):
            drop_role(with_login(s.directory_db_url(), owner), role)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--overload", default=None, metavar="LOW,HIGH",
                        help="instead: our market orders only, at LOW and HIGH concurrency in the "
                             "order LOW HIGH HIGH LOW (the server's slowing weighs on both alike), "
                             "and HIGH's throughput and p99 over LOW's")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from sherwood.dev import DevStack

    # the bench measures the path at any hour (market orders outside the session are refused);
    # set in the environment so that the stack's child processes get it too
    os.environ["SHERWOOD_ENFORCE_MARKET_HOURS"] = "false"
    base = Settings()
    data = Path(tempfile.mkdtemp(prefix="sherwood-bench-"))
    prefix = f"swbench{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(update={
        "data_dir": data, "db_prefix": prefix, "redis_prefix": prefix, "api_port": free_port(),
        "temporal_port": free_port(), "temporal_ui_port": free_port(),
        "embedded_pg_port": free_port(), "embedded_redis_port": free_port(),
        "dev_venue_ports": [free_port(), free_port()], "temporal_address": None,
        "fanout_port": free_port(), "marketdata_feed_port": free_port(),
        "gateway_link_port": free_port()})
    stack = DevStack(settings, progress=lambda m: None, marketdata=False, backoffice=False)
    marks = (prefix, str(data))  # CPU of this stack's processes only (others may share the box)
    info = await asyncio.to_thread(stack.start)  # it runs its own event loops
    try:
        api = str(info["api_url"])
        client = await Client.connect(str(info["temporal_address"]))
        accounts = []
        for _ in range(max(*levels, 10)):  # each account under its own rate limit
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sherwood", "accounts", "create", "--deposit", "1000000", "--json",
                "--data-dir",
                str(data), env=stack.child_env(), stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            accounts.append(json.loads(out))
        # warm up both paths once
        await bench_orders(api, client, accounts, 1, 1.0)
        if args.overload:
            await bench_overload(api, client, accounts, [int(c) for c in args.overload.split(",")],
                                 args.seconds, marks, stack.metrics.get("api"))
            return
        await bench_baseline(client, 1, 1.0)
        await bench_shape(client, base, 1, 1.0)
        # where the 40 ms go: the same bare workflow on a dev server with its default limits
        default = TemporalDevServer(port=free_port(), ui_port=None, db_file=None, raise_rate_limits=False)
        default.start()
        try:
            dclient = await Client.connect(default.address)
            await bench_baseline(dclient, 1, 1.0)
            for c in (1, 10):
                r = (await bench_baseline(dclient, c, args.seconds / 2)).figures()
                print(json.dumps({"bench": "orders", "kind": "baseline_bare_workflow_default_limits",
                                  "concurrency": c, **{k: round(v, 2) for k, v in r.items()}}), flush=True)
        finally:
            default.stop()
        for c in levels:
            kinds = {
                "baseline_bare_workflow": lambda t, c=c: bench_baseline(client, c, t),
                "floor_order_shape_noop": lambda t, c=c: bench_shape(client, base, c, t),
                "sherwood_market_order": lambda t, c=c: bench_orders(api, client, accounts, c, t),
            }
            runs = {kind: Run() for kind in kinds}
            spent: dict[str, dict[str, float]] = {kind: {} for kind in kinds}
            # A B C C B A, half the time each: the server gets slower as its history grows
            # (measured: ~25% more CPU per workflow within a few thousand), and this order
            # spreads that over every kind alike instead of charging it to the last one
            for kind in [*kinds, *reversed(kinds)]:
                before = cpu_seconds(marks)
                runs[kind].add(await kinds[kind](args.seconds / 2))
                for k, v in cpu_spent(before, cpu_seconds(marks)).items():
                    spent[kind][k] = spent[kind].get(k, 0.0) + v
            figs = {kind: run.figures() for kind, run in runs.items()}
            for kind, r in figs.items():
                print(json.dumps({"bench": "orders", "kind": kind, "concurrency": c,
                                  **{k: round(v, 2) for k, v in r.items()},
                                  "cpu_ms_per_item": per_item_ms(spent[kind], int(r["n"]))}), flush=True)
            base_r, shape, ours = (figs[k] for k in kinds)
            print(json.dumps({
                "bench": "orders", "kind": "ratio", "concurrency": c,
                "throughput_ours_over_baseline": round(ours["per_s"] / base_r["per_s"], 3),
                "throughput_floor_over_baseline": round(shape["per_s"] / base_r["per_s"], 3),
                "p50_ours_over_baseline": round(ours["p50_ms"] / base_r["p50_ms"], 3),
                "p99_ours_over_baseline": round(ours["p99_ms"] / base_r["p99_ms"], 3)}), flush=True)
        # bracket orders on their own, after the plain ones (which they leave unchanged): POST
        # until all three legs are live
        for c in levels:
            before = cpu_seconds(marks)
            fig = (await bench_brackets(api, accounts, c, args.seconds / 2)).figures()
            print(json.dumps({"bench": "orders", "kind": "sherwood_bracket_order_legs_live",
                              "concurrency": c, **{k: round(v, 2) for k, v in fig.items()},
                              "cpu_ms_per_item": per_item_ms(cpu_spent(before, cpu_seconds(marks)),
                                                             int(fig["n"]))}), flush=True)
    finally:
        await asyncio.to_thread(stack.stop)
        if settings.postgres_url:
            drop_stack_databases(stack.settings)


if __name__ == "__main__":
    asyncio.run(main())
