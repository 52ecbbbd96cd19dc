"""A shard or back-office worker process's stop is bounded: a Temporal worker whose shutdown
never ends (an activity that ignores its cancellation) does not keep the process, or a test
stack, from stopping."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from sherwood.settings import Settings
from workers.shard import ShardWorkers


class NeverShutsDown:
    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def shutdown(self) -> None:
        self.asked.set()
        await asyncio.Event().wait()  # never


async def test_stop_gives_up_on_a_worker_that_never_shuts_down() -> None:
    workers = ShardWorkers(Settings(worker_shutdown_timeout_s=0.3), [0])
    hung = NeverShutsDown()
    workers._workers = [cast(Any, hung)]
    t0 = time.monotonic()
    await asyncio.wait_for(workers.stop(), 10)
    assert hung.asked.is_set()
    assert time.monotonic() - t0 < 5


async def test_the_back_office_stop_gives_up_too() -> None:
    from workers.backoffice import BackofficeWorkers

    workers = BackofficeWorkers(Settings(worker_shutdown_timeout_s=0.3), bank=cast(Any, None),
                                clearinghouse=cast(Any, None))
    hung = NeverShutsDown()
    workers._workers = [cast(Any, hung)]
    t0 = time.monotonic()
    await asyncio.wait_for(workers.stop(), 10)
    assert hung.asked.is_set()
    assert time.monotonic() - t0 < 5


async def test_the_gateway_stop_gives_up_too(tmp_path: Any) -> None:
    """The gateway's Temporal worker: an order activity that ignores its cancellation (a send
    waiting on a venue that never answers) does not keep the gateway from logging out and
    stopping."""
    from sherwood.settings import VenueConfig
    from workers.execution_gateway import ExecutionGateway

    gw = ExecutionGateway(venues=[VenueConfig(name="MM1", port=1)], store=cast(Any, None),
                          client=cast(Any, None), data_dir=tmp_path, shutdown_timeout_s=0.3)
    hung = NeverShutsDown()
    gw._worker = cast(Any, hung)
    gw._worker_task = asyncio.create_task(asyncio.Event().wait())  # its run() never returns
    t0 = time.monotonic()
    await asyncio.wait_for(gw.stop(), 10)
    assert hung.asked.is_set()
    assert time.monotonic() - t0 < 5
