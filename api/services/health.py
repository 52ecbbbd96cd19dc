"""Health of every dependency and every shard, each probed with a short timeout, concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas import DependencyHealth, HealthOut, ShardHealth
from api.state import AppState

PROBE_TIMEOUT_S = 2.0


async def _probe(fn: Callable[[], Awaitable[object]]) -> DependencyHealth:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(fn(), PROBE_TIMEOUT_S)
    except Exception as exc:  # a probe reports failures, it never raises
        return DependencyHealth(status="down", error=f"{type(exc).__name__}: {exc}"[:300])
    return DependencyHealth(status="ok", latency_ms=round((time.perf_counter() - start) * 1000, 2))


async def _pollers(state: AppState, queue: str, kind: int) -> DependencyHealth:
    """Whether some worker polls ``queue`` (Temporal keeps pollers seen in the last minute)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    async def probe() -> None:
        assert state.temporal is not None
        resp = await state.temporal.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=state.settings.temporal_namespace, task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.ValueType(kind)))
        if not resp.pollers:
            raise RuntimeError(f"no worker polls {queue}")

    return await _probe(probe)


async def workers(state: AppState) -> dict[str, DependencyHealth]:
    """Shard workers and the execution gateway, as seen by Temporal."""
    from temporalio.api.enums.v1 import TaskQueueType

    from sherwood.contracts import shard_task_queue

    queues = {f"shard_worker_{n}": (shard_task_queue(n), TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
              for n in range(state.router.shard_count)}
    queues["execution_gateway"] = (state.settings.gateway_task_queue,
                                   TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    results = await asyncio.gather(*(_pollers(state, q, k) for q, k in queues.values()))
    return dict(zip(queues, results, strict=True))


async def check(state: AppState, *, include_workers: bool = False) -> HealthOut:
    router = state.router

    async def sql(engine_getter: Callable[[], AsyncEngine]) -> None:
        async with engine_getter().connect() as conn:
            await conn.execute(text("SELECT 1"))

    def shard_probe(n: int) -> Awaitable[DependencyHealth]:
        return _probe(lambda: sql(lambda: router.engine(n)))

    async def redis_ping() -> None:
        if state.redis is None:
            raise RuntimeError("not configured")
        await state.redis.ping()

    async def temporal() -> None:
        if state.temporal is None:
            raise RuntimeError("not configured")
        if not await state.temporal.service_client.check_health():
            raise RuntimeError("unhealthy")

    probes: dict[str, Awaitable[DependencyHealth]] = {
        "directory_db": _probe(lambda: sql(lambda: router.directory)),
        "redis": _probe(redis_ping),
        "temporal": _probe(temporal),
    }
    shard_probes = [shard_probe(n) for n in range(router.shard_count)]
    results = await asyncio.gather(*probes.values(), *shard_probes)
    deps = dict(zip(probes.keys(), results[: len(probes)], strict=True))
    shards = [
        ShardHealth(shard=n, status=r.status, latency_ms=r.latency_ms, error=r.error)
        for n, r in enumerate(results[len(probes):])
    ]
    if include_workers and deps["temporal"].status == "ok":
        deps.update(await workers(state))
    ok = all(d.status == "ok" for d in deps.values()) and all(s.status == "ok" for s in shards)
    return HealthOut(status="ok" if ok else "degraded", dependencies=deps, shards=shards)
