"""CPU per market order in the shard's order store alone: this process's and Postgres's.

What the shard worker's local activities do for one market order that fills at once, without
Temporal, the API or a venue: the accept path's account read and the accept transaction (risk
checks, the hold), then the transaction that books ROUTED, the venue's New and its Fill
(``OrderStore.apply_reports``). ``client_cpu_ms`` is this process's CPU per order (the store's
Python and psycopg), ``postgres_cpu_ms`` the CPU of the scratch database's backends per order
(Linux /proc; the server on this host). Baseline, same run, same accounts: the bare hold (one
``ledger_post`` in its own transaction), so a slower box or a busier Postgres shows in both.

Run: ``python -m bench.order_store [--orders 600] [--concurrency 1,10]``. Uses
SHERWOOD_POSTGRES_URL (scratch databases, dropped at the end). Prints one JSON line per
(kind, concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from bench.scratch import funded_accounts, scratch_shard
from db.engines import make_engine
from db.orders import OrderStore, Quotes, RiskContext
from db.router import ShardRouter
from domain.orders import AcceptOrderInput, parse_order_request
from domain.risk import RiskLimits
from fix.reports import ExecReport, venue_event


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def backend_pids(store: OrderStore) -> list[int]:
    """The pids of the server processes serving the store's database (all of its sessions)."""
    from db import sql
    from db.engines import reading
    async with reading(store.engine) as conn:
        rows = await sql.rows(conn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) of ``pids`` so far (those that are gone count nothing)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def market_order(store: OrderStore, account: uuid.UUID, ctx: RiskContext) -> None:
    """One market buy of 1 share, accepted and filled at once, as the shard worker books it."""
    req = {"symbol": "AAPL", "side": "buy", "type": "market", "qty": "1", "time_in_force": "day"}
    oid = str(uuid.uuid4())
    inp = AcceptOrderInput(oid, str(account), req, parse_order_request(req).hash(), "bench", "0.05")
    await store.account_context(str(account))
    snap = await store.accept(inp, Quotes(ask=Decimal("187.50"), bid=Decimal("187.40")), ctx)
    assert snap.state == "FUNDS_HELD", snap
    reports = [venue_event(ExecReport("MM1", f"{oid}:E1", "8", oid, oid, "0", "0",
                                      venue_order_id="V1", leaves_qty="1")),
               venue_event(ExecReport("MM1", f"{oid}:E2", "8", oid, oid, "F", "2", last_qty="1",
                                      last_px="187.45", cum_qty="1", leaves_qty="0",
                                      avg_px="187.45"))]
    snap = await store.apply_reports(oid, reports, routed_venue="MM1")
    assert snap.state == "FILLED", snap


async def measure(store: OrderStore, n: int, concurrency: int,
                  one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    for i in range(concurrency * 3):  # warm: connections opened, statements prepared
        await one(i)
    pids = await backend_pids(store)
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    pg0, cpu0, t0 = cpu_of(pids), time.process_time(), time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    pids = sorted(set(pids) | set(await backend_pids(store)))  # sessions opened meanwhile
    return {"n": n, "per_s": round(n / wall, 1),
            "p50_ms": round(pct(latencies, 0.5) * 1000, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
            "client_cpu_ms": round((time.process_time() - cpu0) * 1000 / n, 3),
            "postgres_cpu_ms": round((cpu_of(pids) - pg0) * 1000 / n, 3)}


async def run(router: ShardRouter, url: str, orders: int, levels: list[int]) -> None:
    engine = make_engine(url)
    reads = make_engine(url, pool_size=2, max_overflow=2, autocommit=True)
    store = OrderStore(engine, reads=reads)
    ledger = router.ledger(0)
    accounts = await funded_accounts(router, max(*levels, 10))
    ctx = RiskContext(limits=RiskLimits(enforce_market_hours=False))

    async def ours(i: int) -> None:
        await market_order(store, accounts[i % len(accounts)], ctx)

    async def bare(i: int) -> None:
        await ledger.hold_cash(f"bare:{uuid.uuid4()}", accounts[i % len(accounts)], "1")

    try:
        for c in levels:
            for kind, one in (("baseline_bare_hold", bare), ("market_order_store", ours)):
                fig = await measure(store, orders, c, one)
                print(json.dumps({"bench": "order_store", "kind": kind, "concurrency": c, **fig}),
                      flush=True)
    finally:
        await engine.dispose()
        await reads.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--concurrency", default="1,10")
    args = parser.parse_args()
    async with scratch_shard("store") as (_, router):
        await run(router, router.shard_urls[0], args.orders, [int(c) for c in args.concurrency.split(",")])


if __name__ == "__main__":
    from sherwood.lifecycle import run_loop
    run_loop(main())  # uvloop when installed, as the shard worker runs
