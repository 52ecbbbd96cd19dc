"""Where an order's latency goes, phase by phase, from the client's clock and the order
workflow's history (``bench.orders --overload``).

For each timed order the client keeps three wall-clock instants (POST sent, answer received,
result read); the workflow's history adds the server's (the workflow started, its first workflow
task started and completed, the accept update completed, the workflow completed). Both clocks
are this machine's. Phases:

- ``api_to_start``: POST sent -> workflow started (the API: auth, admission wait, the start RPC);
- ``task_wait``: started -> its first workflow task picked up by the shard worker;
- ``task_run``: that task's run (accept, send, booking: a market order's whole life);
- ``answer``: the accept update completed -> the client has its answer (server -> API -> client);
- ``result_read``: the workflow completed -> the client has read its result (the bench's own
  lag, not the service's);
- ``answered`` and ``total``: POST sent -> answer, -> result read.

Reads at most ``sample`` histories (spread over the run) after the run, never during it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client


@dataclass(frozen=True)
class Timed:
    """One order as the client saw it (``time.time()`` instants)."""

    order_id: str
    sent: float
    answered: float
    read: float


PHASES = ("api_to_start", "task_wait", "task_run", "answer", "result_read", "answered", "total")


async def phases_of(client: Client, order: Timed) -> dict[str, float]:
    """The phases of one order, in seconds."""
    events = (await client.get_workflow_handle(order.order_id).fetch_history()).events

    def at(kind: int) -> float | None:
        e = next((e for e in events if e.event_type == kind), None)
        return e.event_time.ToDatetime().timestamp() if e is not None else None

    start = events[0].event_time.ToDatetime().timestamp()
    end = events[-1].event_time.ToDatetime().timestamp()
    picked = at(EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED) or start
    done = at(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) or end
    updated = at(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED) or done
    return {"api_to_start": start - order.sent, "task_wait": picked - start,
            "task_run": done - picked, "answer": order.answered - updated,
            "result_read": order.read - end, "answered": order.answered - order.sent,
            "total": order.read - order.sent}


async def sampled_phases(client: Client, orders: list[Timed], *, sample: int = 200,
                         concurrency: int = 8) -> list[dict[str, float]]:
    """The phases of up to ``sample`` of ``orders``, spread over the run."""
    picked = orders[::max(1, len(orders) // sample)][:sample]
    sem = asyncio.Semaphore(concurrency)

    async def one(o: Timed) -> dict[str, float]:
        async with sem:
            return await phases_of(client, o)

    return list(await asyncio.gather(*(one(o) for o in picked)))
