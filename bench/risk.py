"""Pre-trade check latency in the order path, and halt propagation time to every process.

1. The accept step of an order (account lock, every pre-trade rule, the hold: one transaction)
   timed over many orders, against the same run's baseline: the bare hold (one ledger posting).
   The difference is what the risk checks cost.
2. Halt propagation: N separate processes each run a ControlsCache; the bench halts/resumes a
   symbol and measures, per process, the time from the moment the halt call returned (the
   acknowledgement) to the moment that process's cache reflects it.

Prints JSON lines. Run: ``python -m bench.risk [--orders 500] [--processes 4] [--rounds 20]``.
Uses SHERWOOD_POSTGRES_URL / SHERWOOD_REDIS_URL (scratch databases and key prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from decimal import Decimal

from redis.asyncio import Redis

from bench.scratch import funded_accounts, scratch_shard
from db.controls import ControlsStore
from db.orders import OrderStore, Quotes, RiskContext
from db.router import ShardRouter
from domain.orders import AcceptOrderInput, parse_order_request
from domain.risk import RiskLimits
from sherwood.settings import Settings


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def pretrade(router: ShardRouter, n: int) -> None:
    store = OrderStore(router.engine(0))
    ledger = router.ledger(0)
    accounts = await funded_accounts(router, 10)
    ctx = RiskContext(limits=RiskLimits(enforce_market_hours=False))
    ours: list[float] = []
    base: list[float] = []
    for i in range(n):
        acct = accounts[i % len(accounts)]
        req = {"symbol": "AAPL", "side": "buy", "type": "limit", "limit_price": "180", "qty": "1",
               "time_in_force": "gtc"}
        inp = AcceptOrderInput(str(uuid.uuid4()), str(acct), req, parse_order_request(req).hash(),
                               "bench", "0.05")
        t0 = time.perf_counter()
        snap = await store.accept(inp, Quotes(ask=Decimal("187.5"), bid=Decimal("187.4")), ctx)
        ours.append(time.perf_counter() - t0)
        assert snap.state == "FUNDS_HELD", snap
        t0 = time.perf_counter()
        await ledger.hold_cash(f"bare:{uuid.uuid4()}", acct, "180")
        base.append(time.perf_counter() - t0)
    for kind, xs in (("accept_with_risk_checks", ours), ("baseline_bare_hold", base)):
        print(json.dumps({"bench": "risk.pretrade", "kind": kind, "n": n,
                          "p50_ms": round(pct(xs, 0.5) * 1000, 3), "p99_ms": round(pct(xs, 0.99) * 1000, 3)}))
    print(json.dumps({"bench": "risk.pretrade", "kind": "risk_check_cost",
                      "p50_ms": round((pct(ours, 0.5) - pct(base, 0.5)) * 1000, 3)}))


WATCHER = """
import asyncio, sys, time
from redis.asyncio import Redis
from db.controls import ControlsCache
async def main(url, prefix):
    cache = ControlsCache(Redis.from_url(url), prefix)
    await cache.start()
    print("ready", flush=True)
    last = None
    while True:
        c = cache.get("AAPL")
        state = bool(c and c.halted)
        if state != last:
            print(f"{state} {time.time()}", flush=True)
            last = state
        await asyncio.sleep(0.0005)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def propagation(settings: Settings, router: ShardRouter, processes: int, rounds: int) -> None:
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    store = ControlsStore(router.directory, redis, settings.redis_prefix)
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", WATCHER, settings.redis_url, settings.redis_prefix,
        stdout=asyncio.subprocess.PIPE) for _ in range(processes)]
    for p in procs:
        assert p.stdout is not None
        assert (await p.stdout.readline()).startswith(b"ready")
        await p.stdout.readline()  # initial state
    lags: list[float] = []
    try:
        for r in range(rounds):
            halted = r % 2 == 0
            await store.set("AAPL", actor="bench", halted=halted, reason="bench")
            acked = time.time()
            for p in procs:
                assert p.stdout is not None
                line = (await asyncio.wait_for(p.stdout.readline(), 5)).decode().split()
                assert line[0] == str(halted)
                lags.append(max(0.0, float(line[1]) - acked))
            await asyncio.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
        await redis.aclose()
    print(json.dumps({"bench": "risk.halt_propagation", "processes": processes, "changes": rounds,
                      "p50_ms": round(pct(lags, 0.5) * 1000, 3), "p99_ms": round(pct(lags, 0.99) * 1000, 3),
                      "max_ms": round(max(lags) * 1000, 3), "target_ms": 100}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    async with scratch_shard("risk") as (settings, router):
        await pretrade(router, args.orders)
        await propagation(settings, router, args.processes, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
