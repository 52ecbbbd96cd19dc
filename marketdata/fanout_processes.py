"""Several fan-out processes sharing one port (``fanout_processes`` > 1).

What it does: ``sherwood serve fanout`` with ``fanout_processes`` = N runs its own
:class:`marketdata.fanout.FanoutServer` plus N - 1 child processes (spawned), each with its own
server, Redis subscriber and directory connections, all listening on ``bind_host:fanout_port``
with SO_REUSEPORT: the kernel spreads new connections over the N listening sockets (by a hash of
the connection's addresses), so the clients, their frames and the reading of Redis are shared
by N cores. Each process subscribes to what its own clients want, so a symbol watched in every
process is read from Redis N times (that is the price of sharing nothing between processes).

Failure: a child that ends ends the whole (the first process raises, ``sherwood dev``'s or the
platform's supervisor restarts the fan-out as one); a child whose first process is gone (EOF on
their socketpair) stops. The connection limits (``fanout_max_connections``,
``fanout_max_connections_per_key``) are per process, and the metrics (``FanoutGauges``) are the
first process's share only (one ``metrics_port`` per command).

What it deliberately does not do: balance clients by load (the kernel's hash decides, once per
connection), move a connection between processes, or pick SO_REUSEPORT when N is 1 (a single
process binds the port exclusively, as before: another process cannot take a share by mistake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import socket
from typing import Any

log = logging.getLogger("marketdata.fanout")

START_TIMEOUT_S = 60.0  # a child's imports, its directory pool and its listening socket


async def serve_one(settings: Any, stop: asyncio.Event, *, reuse_port: bool,
                    ready: asyncio.Event | None = None, metrics: bool = True) -> None:
    """One fan-out process's server, until ``stop`` is set."""
    from marketdata.fanout import directory_authenticator, fanout_from_settings
    from sherwood import metrics as m
    from sherwood.wiring import build_router

    router = build_router(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 2}),
                          request_path=True)
    server = fanout_from_settings(settings, directory_authenticator(router))
    if metrics:
        m.register_once(m.FanoutGauges(server))
    try:
        await server.start(settings.bind_host, settings.fanout_port, reuse_port=reuse_port)
        log.info("fan-out listening on ws://%s:%s/v2/iex%s", settings.bind_host, settings.fanout_port,
                 " (SO_REUSEPORT)" if reuse_port else "")
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await server.close()
        await router.dispose()


def _child_entry(settings: Any, index: int, sock: socket.socket) -> None:
    from sherwood.cli_serve import LOG_FORMAT
    from sherwood.lifecycle import run_loop

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT.replace("%(name)s", f"%(name)s[{index}]"))
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_child(settings, sock))


async def _child(settings: Any, sock: socket.socket) -> None:
    """A child: its server until the first process goes away (EOF) or says stop (one byte)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    stop = asyncio.Event()
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_one(settings, stop, reuse_port=True, ready=ready, metrics=False))
    await asyncio.wait([serving, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # it failed to start: raise (the first process sees EOF and ends)
    writer.write(b"R")  # ready
    with contextlib.suppress(ConnectionError, OSError):
        await reader.read(1)
    stop.set()
    await serving


async def run_processes(settings: Any, stop: asyncio.Event) -> None:
    """``fanout_processes`` servers on one port: this process's and N - 1 children's."""
    n = settings.fanout_processes
    ctx = multiprocessing.get_context("spawn")
    children: list[tuple[Any, asyncio.StreamReader, asyncio.StreamWriter]] = []
    mine = asyncio.Event()
    serving = asyncio.create_task(serve_one(settings, stop, reuse_port=True, ready=mine))
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await mine.wait()  # the first socket is bound before any child's
        for i in range(1, n):
            ours, theirs = socket.socketpair()
            p = ctx.Process(target=_child_entry, args=(settings, i, theirs), name=f"fanout-{i}", daemon=True)
            p.start()
            theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            children.append((p, reader, writer))
        async with asyncio.timeout(START_TIMEOUT_S):
            for i, (_, reader, _) in enumerate(children, 1):
                if await reader.read(1) != b"R":
                    raise RuntimeError(f"fan-out process {i} ended while starting")
        log.info("fan-out: %d processes on port %s", n, settings.fanout_port)
        ended = [asyncio.create_task(r.read(1)) for _, r, _ in children]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([serving, stopped, *ended], return_when=asyncio.FIRST_COMPLETED)
        for t in [stopped, *ended]:
            t.cancel()
        for t in ended:
            if t in done:
                raise RuntimeError("a fan-out process ended; the fan-out stops (see the log)")
        if serving in done:
            serving.result()
    finally:
        stop.set()
        for _, _, writer in children:
            writer.close()  # EOF: each child closes its connections and exits
        for p, _, _ in children:
            await asyncio.to_thread(p.join, 10)
            if p.is_alive():
                p.terminate()
        await asyncio.gather(serving, return_exceptions=True)  # (its failure was raised above)
