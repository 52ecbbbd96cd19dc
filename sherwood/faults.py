"""Which failures are worth retrying, and how an activity says so.

Temporal retries an activity that raises anything but a non-retryable ``ApplicationError``. That
is right for a dropped connection and wrong for a bug or a value the database refuses (a numeric
overflow, a violated constraint): the same input fails the same way, forever, while the order or
transfer waits (and, for an order, its account's lock is taken and given back every attempt).
So every activity is wrapped in :func:`final_unless_transient`: an exception that is not a
*transient infrastructure failure* (:func:`is_transient`) leaves it as a non-retryable
``ApplicationError`` of type :data:`INTERNAL_ERROR`, which the workflow turns into a visible end
(an order REJECTED before its hold, or STUCK with it; a transfer FAILED with nothing moved).
Transient failures are retried with backoff up to the workflow's maximum (its activities'
``schedule_to_close_timeout``); past it the workflow ends the same visible way.

What this deliberately does not do: decide what a failure means for the money (the workflows
do), or swallow business refusals (an ``ApplicationError`` passes through unchanged).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
# SQLSTATE classes and codes that say "try again": the connection (08), a serialization failure
# or deadlock (40), resources (53), the server going away or starting (57P), lock_timeout (55P03),
# statement_timeout (57014), an I/O error (58). Everything else Postgres says is about the
# statement and its data (22 data exception, 23 integrity, 42 syntax, P0001 our own triggers):
# the same statement gets the same answer.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "58", "55P03", "57014")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
T = TypeVar("T")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error: psycopg's own, one SQLAlchemy wraps (``orig``), or one
    raised from it (``__cause__``); None when there is none (not a statement's error)."""
    for candidate in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None)
    code = getattr(cause, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_transient(exc: BaseException) -> bool:
    """A failure of the infrastructure (network, database availability, contention, timeouts)
    that the same call may not meet again. Unknown exceptions are *not* transient."""
    from sqlalchemy import exc as sa

    from db.errors import ShardUnavailable

    if isinstance(exc, ApplicationError):
        return not exc.non_retryable
    if isinstance(exc, ShardUnavailable):
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        code = sqlstate(exc)
        if code is not None:
            return code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        # no SQLSTATE: the driver's own failure (connection closed, protocol), not the statement's
        return isinstance(exc, (sa.OperationalError, sa.InterfaceError))
    if isinstance(exc, (sa.TimeoutError, sa.DisconnectionError)):  # pool exhausted, dead conn
        return True
    code = sqlstate(exc)
    if code is not None:  # a driver error raised as it is
        return code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    import psycopg

    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        # no SQLSTATE: the driver's own failure, as above; SQLAlchemy's pool lets a connection
        # that cannot be opened (refused, "the database system is shutting down") through as
        # psycopg raised it
        return True
    if isinstance(exc, (OSError, asyncio.TimeoutError, EOFError)):  # incl. ConnectionError
        return True
    try:
        import redis.exceptions as rx

        if isinstance(exc, (rx.ConnectionError, rx.TimeoutError)):  # incl. BusyLoadingError
            return True
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    from temporalio.service import RPCError, RPCStatusCode

    if isinstance(exc, RPCError):
        return exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                              RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED)
    return False


def final(exc: BaseException, what: str) -> ApplicationError:
    """The non-retryable error an unexpected, deterministic failure becomes."""
    message = f"{what}: {type(exc).__name__}: {exc}"
    return ApplicationError(message[:500], type=INTERNAL_ERROR, non_retryable=True)


def final_unless_transient(fn: F) -> F:
    """Wrap an activity: transient failures propagate (Temporal retries them, within the caller's
    maximum), anything else unexpected becomes a non-retryable :data:`INTERNAL_ERROR`, logged at
    ERROR with its traceback (the alert: the same input would fail the same way)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except (ApplicationError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("activity %s failed deterministically; not retried", fn.__name__)
            raise final(exc, fn.__name__) from exc

    return wrapper  # type: ignore[return-value]


def retries_within(policy: RetryPolicy, seconds: float) -> RetryPolicy:
    """``policy`` with as many attempts as its backoff fits in ``seconds`` (at least 2): a
    bound on retries that needs no timer, so it holds for local activities too."""
    cap = policy.maximum_interval.total_seconds() if policy.maximum_interval else float("inf")
    attempts = _attempts_within(policy.initial_interval.total_seconds(),
                                policy.backoff_coefficient, cap, seconds)
    return RetryPolicy(initial_interval=policy.initial_interval,
                       backoff_coefficient=policy.backoff_coefficient,
                       maximum_interval=policy.maximum_interval,
                       maximum_attempts=max(2, attempts),
                       non_retryable_error_types=policy.non_retryable_error_types)


@functools.lru_cache(maxsize=256)
def _attempts_within(interval: float, coefficient: float, cap: float, seconds: float) -> int:
    # (every shard transaction of every order asks: a few dozen steps each time otherwise)
    attempts, waited = 1, 0.0
    while waited + min(interval, cap) <= seconds:
        waited += min(interval, cap)
        interval *= coefficient
        attempts += 1
    return attempts


def is_internal(exc: BaseException | None) -> bool:
    return isinstance(exc, ApplicationError) and exc.type == INTERNAL_ERROR


def activity_cause(exc: BaseException) -> BaseException:
    """What an activity failed with: the cause an ``ActivityError`` wraps, else ``exc`` itself."""
    return (exc.cause or exc) if isinstance(exc, ActivityError) else exc


def describe_failure(exc: BaseException) -> str:
    """``type: message`` of what an activity failed with, for a STUCK reason or a log line."""
    cause = activity_cause(exc)
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}"
    return f"{type(cause).__name__}: {cause}"


def update_dropped(exc: BaseException) -> bool:
    """Whether the server dropped a workflow update before the workflow accepted it: the
    workflow task carrying it failed on completion (``WorkflowNotReadyFailure``, e.g. new events
    arrived while the task was completing; Temporal aborts every update of that task). Nothing
    the task did was recorded in the history, so the caller may send the same update again,
    provided the update is idempotent in what it writes outside Temporal (a replace is, by its
    replacement id). Does not decide how often: the caller bounds it by its own deadline."""
    from temporalio.service import RPCError, RPCStatusCode

    if not isinstance(exc, RPCError) or exc.status != RPCStatusCode.FAILED_PRECONDITION:
        return False
    try:
        details = exc.grpc_status.details
    except Exception:  # an unreadable status is not this case
        return False
    return any(d.type_url.endswith("WorkflowNotReadyFailure") for d in details)


async def sent_until_taken(send: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``send()`` (one workflow update), sent again while the server drops it with its failed
    workflow task (:func:`update_dropped`) and the running loop's time is before ``deadline``;
    any other error, or a drop past the deadline, is raised as it came."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await send()
        except Exception as exc:
            if not update_dropped(exc) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)
