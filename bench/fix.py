"""Benchmark of the FIX session layer on loopback, against a bare asyncio TCP echo baseline.

Run: ``python -m bench.fix [--seconds S]``. For each store (memory, sqlite) it starts our acceptor
with a tiny inline responder (every NewOrderSingle gets one ExecutionReport) and our initiator,
then measures

* ``rtt``: NewOrderSingle -> ExecutionReport round trip, one order at a time (p50/p99), and
* ``throughput``: sustained orders/s with a window of orders in flight over one session.

The baseline moves the same bytes (an encoded NewOrderSingle out, an ExecutionReport-sized reply
back) through a bare asyncio stream echo server in the same run. One JSON line per result, with
``ratio`` = ours / baseline (for latency >1 is slower; for throughput <1 is slower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import simplefix

from fix.framing import encode
from fix.session import FixAcceptor, FixInitiator, FixSession, SessionConfig, utc_timestamp
from fix.store import MemorySessionStore, SessionStore, SqliteSessionStore

WINDOW = 64  # orders in flight during the throughput run


def _order(i: int) -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(35, "D")
    m.append_pair(11, f"ord-{i:09d}")
    m.append_pair(55, "AAPL")
    m.append_pair(54, "1")
    m.append_utc_timestamp(60)
    m.append_pair(38, "100")
    m.append_pair(40, "2")
    m.append_pair(44, "187.25")
    m.append_pair(59, "0")
    return m


def _exec_report(order: simplefix.FixMessage, exec_no: int) -> simplefix.FixMessage:
    r = simplefix.FixMessage()
    r.append_pair(35, "8")
    r.append_pair(37, b"O" + (order.get(11) or b""))
    r.append_pair(11, order.get(11))
    r.append_pair(17, f"E{exec_no:010d}")
    r.append_pair(150, "0")
    r.append_pair(39, "0")
    r.append_pair(55, order.get(55))
    r.append_pair(54, order.get(54))
    r.append_pair(151, order.get(38))
    r.append_pair(14, "0")
    r.append_pair(6, "0")
    return r


def _wire_bytes(msg: simplefix.FixMessage, sender: bytes, target: bytes) -> bytes:
    """The frame our session would put on the wire for ``msg`` (same header fields)."""
    header = [(b"35", msg.message_type), (b"49", sender), (b"56", target), (b"34", b"123456"),
              (b"52", utc_timestamp())]
    return encode(header + [(t, v) for t, v in msg.pairs if t != b"35"])


def _percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _figures(rtts: list[float], done: int, elapsed: float) -> dict[str, float]:
    return {"p50_us": statistics.median(rtts) * 1e6, "p99_us": _percentile(rtts, 0.99) * 1e6,
            "n_rtt": len(rtts), "orders_per_s": done / elapsed, "n_orders": done}


async def sequential(round_trip: Callable[[], Awaitable[float]], seconds: float) -> list[float]:
    """50 warm-up round trips, then one at a time for ``seconds``: their durations."""
    for _ in range(50):
        await round_trip()
    rtts: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        rtts.append(await round_trip())
    return rtts

async def _bench_fix(make_store: Callable[[str], SessionStore], seconds: float) -> dict[str, float]:
    counter = 0

    async def responder(session: FixSession, msg: simplefix.FixMessage) -> None:
        nonlocal counter
        if msg.message_type == b"D":
            counter += 1
            await session.send(_exec_report(msg, counter))

    waiters: dict[bytes, asyncio.Future[float]] = {}

    async def on_report(session: FixSession, msg: simplefix.FixMessage) -> None:
        fut = waiters.pop(msg.get(11) or b"", None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    hb = 30.0
    acc = FixAcceptor(
        "127.0.0.1", 0,
        {"GW": (SessionConfig("MM", "GW", heartbeat_interval=hb), make_store("mm"))},
        responder,
    )
    await acc.start()
    ini = FixInitiator(SessionConfig("GW", "MM", heartbeat_interval=hb), make_store("gw"),
                       "127.0.0.1", acc.port, on_report)
    await ini.start()
    session = ini.session
    await session.wait_logged_on(5)
    loop = asyncio.get_running_loop()
    i = 0

    async def one_order() -> float:
        nonlocal i
        i += 1
        msg = _order(i)
        fut: asyncio.Future[float] = loop.create_future()
        waiters[msg.get(11)] = fut
        t0 = time.perf_counter()
        await session.send(msg)
        return (await fut) - t0

    rtts = await sequential(one_order, seconds / 2)

    # pipelined throughput: keep WINDOW orders in flight
    done = 0
    sem = asyncio.Semaphore(WINDOW)

    async def pipelined() -> None:
        nonlocal done
        try:
            await one_order()
            done += 1
        finally:
            sem.release()

    tasks: set[asyncio.Task[None]] = set()
    t_start = time.perf_counter()
    deadline = t_start + seconds / 2
    while time.perf_counter() < deadline:
        await sem.acquire()
        t = asyncio.create_task(pipelined())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start

    await ini.stop()
    await acc.stop()
    return _figures(rtts, done, elapsed)


async def _bench_baseline(seconds: float) -> dict[str, float]:
    """Bare asyncio streams: request bytes out, reply bytes back, nothing else."""
    request = _wire_bytes(_order(0), b"GW", b"MM")
    reply = _wire_bytes(_exec_report(_order(0), 0), b"MM", b"GW")
    req_len = len(request)

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readexactly(req_len)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def rtt() -> float:
        t0 = time.perf_counter()
        writer.write(request)
        await writer.drain()
        await reader.readexactly(len(reply))
        return time.perf_counter() - t0

    rtts = await sequential(rtt, seconds / 2)

    # pipelined with the same window
    done = 0
    t_start = time.perf_counter()
    deadline = t_start + seconds / 2
    for _ in range(WINDOW):
        writer.write(request)
    in_flight = WINDOW
    while in_flight:
        await reader.readexactly(len(reply))
        done += 1
        in_flight -= 1
        if time.perf_counter() < deadline:
            writer.write(request)
            in_flight += 1
    elapsed = time.perf_counter() - t_start
    writer.close()
    srv.close()
    return _figures(rtts, done, elapsed)


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(seconds: float) -> None:
    base = await _bench_baseline(seconds)
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
        stores: dict[str, Callable[[str], SessionStore]] = {
            "memory": lambda name: MemorySessionStore(),
            "sqlite": lambda name: SqliteSessionStore(Path(tmp) / f"{name}.db"),
        }
        for store_name, make_store in stores.items():
            ours = await _bench_fix(make_store, seconds)
            _emit(bench="fix.rtt", store=store_name, n=ours["n_rtt"],
                  p50_us=round(ours["p50_us"], 1), p99_us=round(ours["p99_us"], 1),
                  baseline_p50_us=round(base["p50_us"], 1),
                  baseline_p99_us=round(base["p99_us"], 1),
                  ratio_p50=round(ours["p50_us"] / base["p50_us"], 2),
                  ratio_p99=round(ours["p99_us"] / base["p99_us"], 2))
            _emit(bench="fix.throughput", store=store_name, window=WINDOW, n=ours["n_orders"],
                  orders_per_s=round(ours["orders_per_s"]),
                  baseline_per_s=round(base["orders_per_s"]),
                  ratio=round(ours["orders_per_s"] / base["orders_per_s"], 3))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="time budget per measured configuration")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.seconds))
