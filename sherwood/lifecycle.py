"""How a long-running Sherwood process runs its event loop, and learns it must stop: SIGINT or
SIGTERM, or (a child of ``sherwood dev``) its parent gone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, classes, functions: ~180k after the imports of a
    worker) out of the garbage collector's reach. A full collection walks them all, ~50 ms
    measured here, and stalls every request in flight; after this it walks only what the
    process created since. Call once, at the end of start-up. What it freezes is never
    collected, which is why it is meant for what lives as long as the process anyway."""
    gc.freeze()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a long-running process's event loop: uvloop when installed (``uvicorn[standard]``
    brings it; its loop and transports spend far less Python per callback, per socket read and
    write), else asyncio's. The API gets the same from uvicorn's ``loop="auto"``. Start-up
    objects are frozen first (:func:`freeze_startup_objects`)."""
    freeze_startup_objects()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@contextlib.contextmanager
def stopped_by_signals(stop: asyncio.Event | None = None) -> Iterator[asyncio.Event]:
    """An event the running loop sets on SIGINT/SIGTERM (``stop`` when given, so a caller may
    also set it); the handlers are removed on exit. Where handlers cannot be installed (not the
    main thread, another platform) the event is only set by the caller."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def exit_with_parent(parent_pid: int, *, interval_s: float, grace_s: float) -> threading.Thread:
    """Watch that ``parent_pid`` is still this process's parent (a daemon thread looking every
    ``interval_s``). Once it is not (the parent died, the child was re-parented), SIGTERM this
    process (its normal stop), and if it is still alive ``grace_s`` later, exit at once.

    The fallback for ``sherwood dev``'s children where the kernel's parent-death signal is not
    set (another platform, a child spawned outside the main thread); harmless where it is."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        print(f"parent {parent_pid} is gone: stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    t = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    t.start()
    return t


async def shutdown_workers(workers: Iterable[Any], timeout_s: float, what: str) -> None:
    """``shutdown()`` every Temporal worker of ``workers``, waiting at most ``timeout_s``.

    Worker.shutdown waits for every running activity to end once canceled: one that never does
    (a call stuck on an unreachable server, a retry sleeping) must not keep the process -- or a
    test stack -- from stopping. What it did not finish is retried by Temporal on the next
    worker, as after a crash."""
    shutdown = asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    try:
        await asyncio.wait_for(shutdown, timeout_s)
    except TimeoutError:
        logging.getLogger(__name__).warning(
            "%s did not shut down within %.0f s: stopping anyway", what, timeout_s)
