"""Replaying workflow histories in the sandbox from tests.

The replayer validates each workflow by importing its module into a fresh sandbox, in the test's
thread, while the session's back-office worker may import the same modules into its own sandboxes
in its threads. CPython 3.11's import locks are not reentrant in their bookkeeping: when this
thread waits on a module lock another thread holds and the garbage collector runs a finalizer
that imports (e.g. an asyncio future logging "exception was never retrieved"), the wait ends in
``KeyError(<this thread's id>)`` and the replayer reports "Failed validating workflow ..."
(temporalio/sdk-python#585; reproduced with plain threads on 3.11.7, not on 3.12.1, whose
import keeps a list of locks per thread). :func:`replay_past_the_import_race` replays
with the collector paused, and tries again, a bounded number of times, only
on exactly that error; a replay failure, or any other validation error, fails at once.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

IMPORT_RACE_ATTEMPTS = 3


def _is_import_race(exc: RuntimeError) -> bool:
    """The sandbox's validation failed on the import-lock race of this thread (see above)."""
    cause = exc.__cause__
    return (str(exc).startswith("Failed validating workflow") and isinstance(cause, KeyError)
            and cause.args == (threading.get_ident(),))


async def replay_past_the_import_race(replay: Callable[[], Awaitable[T]]) -> T:
    """``await replay()`` with the garbage collector paused; again (at most
    :data:`IMPORT_RACE_ATTEMPTS` in all) only when the sandbox's validation hit the import-lock
    race."""
    for attempt in range(1, IMPORT_RACE_ATTEMPTS + 1):
        gc.disable()  # no finalizer runs in the middle of the sandbox's imports
        try:
            return await replay()
        except RuntimeError as exc:
            if attempt == IMPORT_RACE_ATTEMPTS or not _is_import_race(exc):
                raise
        finally:
            gc.enable()
    raise AssertionError("unreachable")
