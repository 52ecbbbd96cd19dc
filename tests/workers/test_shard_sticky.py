"""A shard worker that dies hands its orders over within ``shard_sticky_timeout_s``.

Each order workflow's tasks go to the sticky queue of the worker that has it cached. When that
worker is SIGKILLed, a task already on its sticky queue waits out the worker's sticky
schedule-to-start timeout before Temporal gives it to another worker on the shard's queue: the
SDK's 10 s by default, a stall of every order in flight on the dead worker. Measured with
tests/workflows/test_trailing_stop.py's SIGKILL test: 20.6 s at 10 s, 13.2 s at 3 s.
"""

from __future__ import annotations

from datetime import timedelta

from sherwood.contracts import shard_task_queue
from tests.stack import TradingStack


async def test_the_shard_workers_sticky_timeout_is_the_setting(stack: TradingStack) -> None:
    s = stack.settings
    configs = [w.config() for w in stack.workers._workers]
    order_workers = [c for c in configs
                     if c["task_queue"] in {shard_task_queue(n) for n in range(s.shard_count)}]
    assert len(order_workers) == s.shard_count
    for c in order_workers:
        assert c["sticky_queue_schedule_to_start_timeout"] == timedelta(
            seconds=s.shard_sticky_timeout_s)
    assert timedelta(seconds=s.shard_sticky_timeout_s) < timedelta(seconds=10)  # the SDK's
