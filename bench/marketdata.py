"""Market-data read path: ingest rate and WebSocket fan-out, against bare Redis pub/sub.

* ``ingest``: feed lines (1,000 symbols, quotes) through ``Ingest.process`` as fast as it takes
  them: quotes/s validated, normalized, sequenced and published (pipelined) to Redis.
* ``baseline``: a bare redis-py publisher (pipelined PUBLISH, same payloads, same 1,000 channels,
  same rate) and one redis-py subscriber on all channels: delivered msgs/s, publish->receive lag.
* ``fanout``: ingest (fed at 10,000 and 100,000 updates/s) -> Redis -> one fan-out process ->
  1,000 / 10,000 WebSocket clients in 4 client processes, each client subscribed to the quotes of
  10 random symbols of the 1,000: delivered msgs/s and lag (receive time - ingest time ``it``).
  The fan-out authenticates with a static key here (the directory DB lookup is per connection
  and cached; it is not what is measured) and runs on the event loop ``sherwood serve fanout``
  uses (:func:`sherwood.lifecycle.run_loop`); the clients are plain websockets on asyncio. Quotes
  are conflated per connection, so fewer than ``ideal_deliveries_per_s`` arrive by design; every
  one that arrives is timed.

* with SHERWOOD_POSTGRES_URL and SHERWOOD_REDIS_URL set, then :mod:`bench.marketdata_rest`: the
  1-minute bar's lag under the highest rate, 100-symbol latest quotes/s against a bare ``HMGET``,
  snapshot p99.

One JSON line per result, then the ratios ours/baseline. Everything runs on this machine (2 cores
in CI: feed+ingest, Redis, the fan-out and the clients share them), so the offered rates are
reported next to what was achieved. ``python -m bench.marketdata [--seconds 8]``. Uses
SHERWOOD_REDIS_URL when set, else an embedded Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from domain.universe import known_symbols, universe
from marketdata.fanout import FanoutServer
from marketdata.ingest import Ingest
from sherwood.contracts import RedisKeys
from sherwood.embedded import EmbeddedRedis, free_port
from sherwood.lifecycle import run_loop
from simulators.exchange_feed import ExchangeFeed, FeedConfig

N_SYMBOLS = 1000
IT_RE = re.compile(rb'"it":(\d+)')


def emit(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


def template_lines(n: int) -> list[bytes]:
    feed = ExchangeFeed(FeedConfig(symbols=N_SYMBOLS, hot=0, trade_ratio=0.0, seed=1))
    return [x.replace(b",0,", b",{T},", 1) for x in feed.lines(n, now_ns=0)]


def stamp(lines: list[bytes], t: int) -> list[bytes]:
    tb = str(t).encode()
    return [x.replace(b"{T}", tb) for x in lines]


# -- ingest ----------------------------------------------------------------------------------
async def bench_ingest(redis_url: str, seconds: float) -> float:
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    ing = Ingest(redis_url, prefix, known=known_symbols(N_SYMBOLS), max_jump=10)
    await ing.start()
    tmpl = template_lines(200_000)
    n = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        batch = tmpl[i:i + 2000]
        i = (i + 2000) % len(tmpl)
        n += await ing.process(stamp(batch, time.time_ns()))
    await ing.sync()
    dt = time.perf_counter() - t0
    await ing.close()
    rate = n / dt
    emit(bench="marketdata", kind="ingest", quotes=n, seconds=round(dt, 2), quotes_per_s=round(rate),
         dropped=sum(ing.dropped.values()), target_per_s=100_000)
    return rate


# -- feeding ingest at a rate ----------------------------------------------------------------
async def paced(rate: float, seconds: float) -> AsyncIterator[int]:
    """For ``seconds``: every ~10 ms, how many messages are due at ``rate`` per second (the
    backlog capped at 50 ms worth, so a slow consumer is not flooded afterwards)."""
    t0 = last = time.monotonic()
    owed = 0.0
    while (now := time.monotonic()) - t0 < seconds:
        owed = min(owed + (now - last) * rate, rate * 0.05)
        last = now
        if k := int(owed):
            owed -= k
            yield k
        await asyncio.sleep(0.01)


async def feed_at(ing: Ingest, rate: float, seconds: float, tmpl: list[bytes]) -> int:
    sent = 0
    i = 0
    async for k in paced(rate, seconds):
        batch = tmpl[i:i + k]
        if len(batch) < k:
            batch = batch + tmpl[:k - len(batch)]
        i = (i + k) % len(tmpl)
        await ing.process(stamp(batch, time.time_ns()))
        sent += k
    await ing.sync()
    return sent


# -- baseline --------------------------------------------------------------------------------
async def bench_baseline(redis_url: str, rate: float, seconds: float) -> dict[str, Any]:
    from redis.asyncio import Redis

    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    chans = [RedisKeys(prefix).md_channel(x.symbol) for x in universe(N_SYMBOLS)]
    pub = Redis.from_url(redis_url)
    sub = Redis.from_url(redis_url)
    ps = sub.pubsub()
    await ps.subscribe(*chans)
    for _ in chans:
        await ps.get_message(timeout=1.0)
    got = 0
    lags: list[float] = []
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal got
        while not stop.is_set():
            m = await ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m is None:
                continue
            got += 1
            if got % 10 == 0:
                it = IT_RE.search(m["data"])
                if it:
                    lags.append((time.time_ns() - int(it.group(1))) / 1e9)

    task = asyncio.create_task(reader())
    rng = random.Random(3)
    body = ('{"T":"q","S":"%s","bx":"V","bp":100.01,"bs":3,"ax":"V","ap":100.03,"as":4,'
            '"t":"2024-01-01T00:00:00.000000000Z","c":["R"],"z":"C","sq":1,"it":%d}')
    sent = 0
    t0 = time.monotonic()
    async for k in paced(rate, seconds):
        pipe = pub.pipeline(transaction=False)
        t = time.time_ns()
        for _ in range(k):
            j = rng.randrange(N_SYMBOLS)
            pipe.publish(chans[j], body % (chans[j].rsplit(":", 1)[1], t))
        await pipe.execute()
        sent += k
    elapsed = time.monotonic() - t0
    await asyncio.sleep(1.0)
    stop.set()
    await task
    await ps.aclose()
    await pub.aclose()
    await sub.aclose()
    res = {"bench": "marketdata", "kind": "baseline_redis_pubsub", "offered_per_s": rate,
           "published_per_s": round(sent / elapsed), "delivered_per_s": round(got / elapsed),
           "lag_p50_ms": pct(lags, 0.5), "lag_p99_ms": pct(lags, 0.99)}
    emit(**res)
    return res


# -- fan-out server and clients (child processes) ----------------------------------------------
async def role_server(redis_url: str, prefix: str, port: int) -> None:
    raise_fd_limit()

    async def auth(key: str, secret: str) -> str | None:
        return key if secret == "bench" else None

    srv = FanoutServer(redis_url, prefix, auth, max_connections=50_000, max_symbols=100,
                       flush_interval_s=0.05, ping_interval_s=None, slow_timeout_s=30)
    await srv.start("127.0.0.1", port)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"STATS":
            print(json.dumps(srv.stats), flush=True)
    await srv.close()


async def role_clients(port: int, n: int, seed: int) -> None:
    from websockets.asyncio.client import connect

    raise_fd_limit()
    rng = random.Random(seed)
    syms = [x.symbol for x in universe(N_SYMBOLS)]
    buckets: dict[int, list[Any]] = {}  # second -> [count, lags]

    async def one(i: int) -> None:
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/v2/iex", open_timeout=120, ping_interval=None,
                               max_queue=64, compression=None)
        except Exception:
            return
        await ws.recv()
        await ws.send(json.dumps({"action": "auth", "key": f"k{seed}-{i}", "secret": "bench"}))
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe", "quotes": rng.sample(syms, 10)}))
        await ws.recv()
        ready.append(1)
        try:
            async for raw in ws:
                data = raw.encode() if isinstance(raw, str) else raw
                now = time.time_ns()
                b = buckets.setdefault(now // 10**9, [0, []])
                its = IT_RE.findall(data)
                b[0] += len(its)
                lags = b[1]
                if len(lags) < 20_000:
                    lags.extend((now - int(x)) / 1e9 for x in its[:3])
        except Exception:
            return

    ready: list[int] = []
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(i)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    while len(ready) < n and all(not t.done() for t in tasks[:1]):
        await asyncio.sleep(0.2)
        if sum(t.done() for t in tasks) + len(ready) >= n:
            break
    print(f"READY {len(ready)}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    print(json.dumps({str(k): [v[0], v[1]] for k, v in buckets.items()}), flush=True)
    for t in tasks:
        t.cancel()


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.marketdata", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=1 << 28)


async def bench_fanout(redis_url: str, clients: int, rates: list[float], seconds: float,
                       results: list[dict[str, Any]]) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    port = free_port()
    server = await spawn("--role", "server", "--redis", redis_url, "--prefix", prefix, "--port", str(port))
    assert server.stdout and server.stdin
    await server.stdout.readline()
    procs = []
    per = clients // 4
    t_conn = time.monotonic()
    for k in range(4):
        procs.append(await spawn("--role", "clients", "--port", str(port), "--n", str(per),
                                 "--seed", str(k)))
    connected = 0
    for p in procs:
        assert p.stdout
        line = await asyncio.wait_for(p.stdout.readline(), 300)
        connected += int(line.split()[1])
    emit(bench="marketdata", kind="fanout_connect", clients=clients, connected=connected,
         seconds=round(time.monotonic() - t_conn, 1))
    ing = Ingest(redis_url, prefix, known=known_symbols(N_SYMBOLS), max_jump=10)
    await ing.start()
    tmpl = template_lines(200_000)
    windows = []
    for rate in rates:
        await asyncio.sleep(1.0)
        t0 = time.time()
        sent = await feed_at(ing, rate, seconds, tmpl)
        t1 = time.time()
        windows.append((rate, t0, t1, sent))
    await asyncio.sleep(1.5)
    server.stdin.write(b"STATS\n")
    stats = json.loads(await server.stdout.readline())
    merged: dict[int, list[Any]] = {}
    for p in procs:
        assert p.stdin and p.stdout
        p.stdin.write(b"STOP\n")
        data = json.loads(await asyncio.wait_for(p.stdout.readline(), 60))
        for k, (cnt, lags) in data.items():
            b = merged.setdefault(int(k), [0, []])
            b[0] += cnt
            b[1].extend(lags)
    for p in [*procs, server]:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        await p.wait()
    await ing.close()
    for rate, t0, t1, sent in windows:
        # whole seconds inside the window (+1 s drain for lag)
        secs = [s for s in merged if t0 + 1 <= s and s + 1 <= t1]
        cnt = sum(merged[s][0] for s in secs)
        lags = [x for s in secs for x in merged[s][1]]
        res = {"bench": "marketdata", "kind": "fanout", "clients": clients, "connected": connected,
               "symbols": N_SYMBOLS, "subs_per_client": 10, "offered_per_s": rate,
               "ingested_per_s": round(sent / (t1 - t0)),
               "delivered_per_s": round(cnt / max(1, len(secs))),
               "lag_p50_ms": pct(lags, 0.5), "lag_p99_ms": pct(lags, 0.99),
               "ideal_deliveries_per_s": round(sent / (t1 - t0) * clients * 10 / N_SYMBOLS)}
        results.append(res)
        emit(**res)
    emit(bench="marketdata", kind="fanout_server_stats", clients=clients, **stats)


async def main(seconds: float, client_counts: list[int], rates: list[float]) -> None:
    raise_fd_limit()
    redis_url = os.environ.get("SHERWOOD_REDIS_URL")
    rd = None
    if not redis_url:
        rd = EmbeddedRedis(Path(tempfile.mkdtemp()) / "redis", port=free_port())
        redis_url = await asyncio.to_thread(rd.start)
    try:
        await bench_ingest(redis_url, min(seconds, 5))
        base = {r: await bench_baseline(redis_url, r, seconds) for r in rates}
        ours: list[dict[str, Any]] = []
        for n in client_counts:
            await bench_fanout(redis_url, n, rates, seconds, ours)
        for r in ours:
            b = base[r["offered_per_s"]]
            emit(bench="marketdata", kind="ratio", clients=r["clients"], offered_per_s=r["offered_per_s"],
                 delivered_ours_over_baseline=round(r["delivered_per_s"] / max(1, b["delivered_per_s"]), 2),
                 lag_p99_ours_over_baseline=(round(r["lag_p99_ms"] / b["lag_p99_ms"], 2)
                                             if r["lag_p99_ms"] and b["lag_p99_ms"] else None))
        if os.environ.get("SHERWOOD_POSTGRES_URL") and os.environ.get("SHERWOOD_REDIS_URL"):
            from bench.marketdata_rest import main as rest_main  # (it imports this module)

            await rest_main(min(seconds, 5), max(rates))  # bar lag, 100-symbol latest, snapshots
    finally:
        if rd is not None:
            await asyncio.to_thread(rd.stop)


def cli() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", default="1000,10000")
    ap.add_argument("--rates", default="10000,100000")
    ap.add_argument("--redis")
    ap.add_argument("--prefix")
    ap.add_argument("--port", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.role == "server":
        run_loop(role_server(a.redis, a.prefix, a.port))  # as `sherwood serve fanout` runs it
    elif a.role == "clients":
        asyncio.run(role_clients(a.port, a.n, a.seed))
    else:
        asyncio.run(main(a.seconds, [int(x) for x in a.clients.split(",")],
                         [float(x) for x in a.rates.split(",")]))


if __name__ == "__main__":
    cli()
