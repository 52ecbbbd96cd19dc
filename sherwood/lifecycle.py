"""How a long-running Sherwood process learns it must stop: SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator


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
