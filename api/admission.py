"""Admission control for order writes: at most ``order_admission_per_shard`` order requests of
one shard in flight in this API process; past it the request is refused at once (429
``over_capacity`` with Retry-After) instead of queueing in Temporal.

An admitted request holds its slot from before the order's workflow is started (so before any
hold is taken) until it is answered, whatever the answer: the order, a refusal, an error, a
timeout (504 ``order_pending``) or the client going away (the request task is cancelled). A
refused request has written nothing and started nothing; the client retries it with the same
client_order_id.

Process-local on purpose: no round trip on the hot path, and a crashed API process cannot leak
slots into a shared counter. With N API processes a shard admits up to N x the setting. It bounds
the work in flight, not its rate (the per-account token bucket in api/ratelimit.py does that);
it does not limit reads, cancels or replaces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.errors import ApiError

OVER_CAPACITY = "over_capacity"


class Admission:
    """In-flight order requests per shard, with a limit (``None`` or 0: no limit)."""

    def __init__(self, per_shard: int | None, retry_after_s: int = 1) -> None:
        self.per_shard = per_shard or None
        self.retry_after_s = max(1, retry_after_s)
        self._in_flight: dict[int, int] = {}
        self.refused = 0  # since start, for operators (GET /health shows nothing of it yet)

    def in_flight(self, shard: int) -> int:
        return self._in_flight.get(shard, 0)

    @asynccontextmanager
    async def admit(self, shard: int) -> AsyncIterator[None]:
        """Hold one of ``shard``'s slots for the block, or raise a 429 ApiError at once."""
        n = self._in_flight.get(shard, 0)
        if self.per_shard is not None and n >= self.per_shard:
            self.refused += 1
            raise ApiError(429, OVER_CAPACITY,
                           f"too many orders in flight on this account's shard; retry in "
                           f"{self.retry_after_s}s", code=42910000,
                           headers={"Retry-After": str(self.retry_after_s)})
        # no await between the check and the increment: the event loop cannot interleave
        self._in_flight[shard] = n + 1
        try:
            yield
        finally:
            self._in_flight[shard] -= 1
