"""Market-data read path: ingest rate and WebSocket fan-out, against bare Redis pub/sub.

* ``ingest``: feed lines (1,000 symbols, quotes) through ``Ingest.process`` as fast as it takes
  them: quotes/s validated, normalized, sequenced and published (pipelined) to Redis.
* ``baseline``: a bare redis-py publisher (pipelined PUBLISH, same payloads, same 1,000 channels,
  same rate) and one redis-py subscriber on all channels: delivered msgs/s, publish->receive lag.
* ``fanout``: ingest (fed at 10,000 and 100,000 updates/s; ``--ingest-workers`` processes, 2 by
  default, :mod:`marketdata.ingest_workers`, the router in this process) -> Redis ->
  ``--fanout-processes`` fan-out processes on one port (SO_REUSEPORT, as
  ``SHERWOOD_FANOUT_PROCESSES`` runs them; 1 by default; flush round
  every ``--flush-interval`` s, 0.05) -> 1,000 / 10,000 WebSocket clients in 4 client processes,
  each subscribed to the quotes of 10 random symbols of the 1,000: delivered msgs/s, frames per
  client per second, lag (receive time - ingest time ``it``), and the CPU each part used over
  the window (``cpu_pct``: 100 = one core; feed+ingest, the fan-out processes, the clients, the
  embedded Redis; ``cpu_us``: per quote ingested, per frame delivered) -- on a shared machine the
  rates move with the load, the CPU per unit of work much less. The fan-out authenticates with a
  static key here (the directory DB lookup is per connection and cached; it is not what is
  measured) and runs on the event loop ``sherwood serve fanout`` uses
  (:func:`sherwood.lifecycle.run_loop`), as does the ingest here. The clients are
  :mod:`bench.ws_load`'s minimal RFC 6455 clients (websockets' client cost more CPU per frame
  than the fan-out spent sending it: the bench measured its clients). Quotes are conflated per
  connection, so fewer than ``ideal_deliveries_per_s`` arrive by design; every one that arrives
  is counted, the first three of each frame timed.

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
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.ws_load import IT_RE, run_clients
from domain.universe import known_symbols, universe
from marketdata.fanout import FanoutServer
from marketdata.ingest import Ingest
from marketdata.ingest_workers import IngestRouter, WorkerSpec
from sherwood.contracts import RedisKeys
from sherwood.embedded import EmbeddedRedis, free_port
from sherwood.lifecycle import run_loop
from simulators.exchange_feed import ExchangeFeed, FeedConfig

N_SYMBOLS = 1000
SUBS_PER_CLIENT = 10
CLIENT_PROCS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    c0 = time.process_time()
    i = 0
    while time.perf_counter() - t0 < seconds:
        batch = tmpl[i:i + 2000]
        i = (i + 2000) % len(tmpl)
        n += await ing.process(stamp(batch, time.time_ns()))
    await ing.sync()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    await ing.close()
    rate = n / dt
    emit(bench="marketdata", kind="ingest", quotes=n, seconds=round(dt, 2), quotes_per_s=round(rate),
         cpu_us_per_quote=round(cpu / max(1, n) * 1e6, 2), dropped=sum(ing.dropped.values()),
         target_per_s=100_000)
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


async def feed_at(ing: Ingest | IngestRouter, rate: float, seconds: float, tmpl: list[bytes]) -> int:
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
async def role_server(redis_url: str, prefix: str, port: int, reuse_port: bool,
                      flush_interval_s: float) -> None:
    raise_fd_limit()

    async def auth(key: str, secret: str) -> str | None:
        return key if secret == "bench" else None

    srv = FanoutServer(redis_url, prefix, auth, max_connections=50_000, max_symbols=100,
                       flush_interval_s=flush_interval_s, ping_interval_s=None, slow_timeout_s=30)
    if reuse_port:  # several fan-out processes on one port (SO_REUSEPORT)
        await srv.start("127.0.0.1", port, reuse_port=True)
    else:
        await srv.start("127.0.0.1", port)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"STATS":
            print(json.dumps(srv.stats), flush=True)
    await srv.close()


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.marketdata", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=1 << 28)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used so far, from /proc (Linux)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


async def bench_fanout(redis_url: str, clients: int, rates: list[float], seconds: float,
                       results: list[dict[str, Any]], servers: int, redis_pid: int | None,
                       flush_interval_s: float, ingest_workers: int) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    port = free_port()
    procs_srv = []
    for _ in range(servers):
        srv = await spawn("--role", "server", "--redis", redis_url, "--prefix", prefix, "--port", str(port),
                          "--flush-interval", str(flush_interval_s),
                          *(["--reuse-port"] if servers > 1 else []))
        assert srv.stdout and srv.stdin
        await srv.stdout.readline()
        procs_srv.append(srv)
    procs = []
    per = clients // CLIENT_PROCS
    t_conn = time.monotonic()
    for k in range(CLIENT_PROCS):
        procs.append(await spawn("--role", "clients", "--port", str(port), "--n", str(per),
                                 "--seed", str(k)))
    connected = 0
    for p in procs:
        assert p.stdout
        line = await asyncio.wait_for(p.stdout.readline(), 300)
        connected += int(line.split()[1])
    emit(bench="marketdata", kind="fanout_connect", clients=clients, connected=connected,
         fanout_processes=servers, seconds=round(time.monotonic() - t_conn, 1))
    ing: Ingest | IngestRouter
    if ingest_workers > 1:  # a router here and the workers in their own processes
        ing = IngestRouter(WorkerSpec(redis_url, prefix, tuple(sorted(known_symbols(N_SYMBOLS))),
                                      {"max_jump": 10}), ingest_workers)
    else:
        ing = Ingest(redis_url, prefix, known=known_symbols(N_SYMBOLS), max_jump=10)
    await ing.start()
    tmpl = template_lines(200_000)
    workers = [p.pid for p in ing.procs] if isinstance(ing, IngestRouter) else []
    roles = {"feed_ingest": [os.getpid(), *workers], "fanout": [p.pid for p in procs_srv],
             "clients": [p.pid for p in procs], "redis": [redis_pid] if redis_pid else []}
    windows = []
    for rate in rates:
        await asyncio.sleep(1.0)
        c0 = {r: cpu_seconds(pids) for r, pids in roles.items()}
        t0 = time.time()
        sent = await feed_at(ing, rate, seconds, tmpl)
        t1 = time.time()
        cpu = {r: round((cpu_seconds(pids) - c0[r]) / (t1 - t0) * 100) for r, pids in roles.items() if pids}
        windows.append((rate, t0, t1, sent, cpu))
    await asyncio.sleep(1.5)
    stats: dict[str, int] = {}
    for srv in procs_srv:
        assert srv.stdin and srv.stdout
        srv.stdin.write(b"STATS\n")
        for k, v in json.loads(await srv.stdout.readline()).items():
            stats[k] = max(stats.get(k, 0), v) if k == "max_buffered" else stats.get(k, 0) + v
    merged: dict[int, list[Any]] = {}
    for p in procs:
        assert p.stdin and p.stdout
        p.stdin.write(b"STOP\n")
        data = json.loads(await asyncio.wait_for(p.stdout.readline(), 60))
        for k, (cnt, lags, frames) in data.items():
            b = merged.setdefault(int(k), [0, [], 0])
            b[0] += cnt
            b[1].extend(lags)
            b[2] += frames
    for p in [*procs, *procs_srv]:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        await p.wait()
    await ing.close()
    for rate, t0, t1, sent, cpu in windows:
        # whole seconds inside the window (+1 s drain for lag)
        secs = [s for s in merged if t0 + 1 <= s and s + 1 <= t1]
        cnt = sum(merged[s][0] for s in secs)
        frames = sum(merged[s][2] for s in secs)
        lags = [x for s in secs for x in merged[s][1]]
        res = {"bench": "marketdata", "kind": "fanout", "clients": clients, "connected": connected,
               "ingest_workers": ingest_workers, "fanout_processes": servers,
               "flush_interval_s": flush_interval_s, "symbols": N_SYMBOLS,
               "subs_per_client": SUBS_PER_CLIENT,
               "offered_per_s": rate, "ingested_per_s": round(sent / (t1 - t0)),
               "delivered_per_s": round(cnt / max(1, len(secs))),
               "frames_per_client_s": round(frames / max(1, len(secs)) / max(1, connected), 2),
               "lag_p50_ms": pct(lags, 0.5), "lag_p99_ms": pct(lags, 0.99),
               "ideal_deliveries_per_s": round(sent / (t1 - t0) * clients * SUBS_PER_CLIENT / N_SYMBOLS),
               "cpu_pct": cpu}
        fps = frames / max(1, len(secs))
        res["cpu_us"] = {  # per unit of work: moves less with the machine's load than the rates
            "feed_ingest_per_quote": round(cpu["feed_ingest"] * 1e4 / max(1.0, sent / (t1 - t0)), 2),
            "fanout_per_frame": round(cpu["fanout"] * 1e4 / max(1.0, fps), 2),
            "clients_per_frame": round(cpu["clients"] * 1e4 / max(1.0, fps), 2)}
        results.append(res)
        emit(**res)
    emit(bench="marketdata", kind="fanout_server_stats", clients=clients, **stats)


async def main(seconds: float, client_counts: list[int], rates: list[float], servers: int,
               flush_interval_s: float, ingest_workers: int) -> None:
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
            await bench_fanout(redis_url, n, rates, seconds, ours, servers,
                               rd.proc.pid if rd is not None and rd.proc is not None else None,
                               flush_interval_s, ingest_workers)
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
    ap.add_argument("--fanout-processes", type=int, default=1)
    ap.add_argument("--reuse-port", action="store_true")
    ap.add_argument("--ingest-workers", type=int, default=2)  # >1: marketdata.ingest_workers
    ap.add_argument("--flush-interval", type=float, default=0.05)  # the fan-out's batching window
    a = ap.parse_args()
    if a.role == "server":
        # as `sherwood serve fanout` runs it
        run_loop(role_server(a.redis, a.prefix, a.port, a.reuse_port, a.flush_interval))
    elif a.role == "clients":
        run_loop(run_clients(a.port, a.n, a.seed, [x.symbol for x in universe(N_SYMBOLS)], SUBS_PER_CLIENT))
    else:  # ingest on the loop `sherwood serve ingest` runs (uvloop when installed)
        run_loop(main(a.seconds, [int(x) for x in a.clients.split(",")],
                      [float(x) for x in a.rates.split(",")], a.fanout_processes, a.flush_interval,
                      a.ingest_workers))


if __name__ == "__main__":
    cli()
