"""Back-office fixtures: the back-office workers (settlement, reconciliation, funding) on the
session's Temporal/Postgres/Redis, with a clearinghouse whose street fills come from the shards'
executions (what the venues reported) and whose breaks tests inject.

The tests choose the outside world here, as :func:`sherwood.wiring.outside_world` does for
``sherwood serve backoffice``: the simulated bank and clearinghouse, kept on :class:`Backoffice`
so tests can instruct the bank and inject breaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from temporalio.client import Client

from api.app import create_app
from db.router import ShardRouter
from domain.settlement import StreetFill
from sherwood.settings import Settings
from sherwood.temporal import connect
from simulators.bank import AchBank
from simulators.clearinghouse import Clearinghouse
from workers.backoffice import BackofficeWorkers

# the order tests' shared helpers assert too: rewrite them like the tests (imported after this)
pytest.register_assert_rewrite("tests.workflows.order_helpers")

FAST_ACH = {"ach_business_day_s": 0.3, "ach_poll_interval_s": 0.2, "backoffice_db_pool_size": 1}


class Backoffice:
    def __init__(self, settings: Settings, client: Client, clearinghouse: Clearinghouse, bank: AchBank,
                 workers: BackofficeWorkers) -> None:
        self.settings = settings
        self.client = client
        self.clearinghouse = clearinghouse
        self.bank = bank
        self.workers = workers


def street_source(router: ShardRouter):  # type: ignore[no-untyped-def]
    """The venues' fills as the clearinghouse would know them (every booked venue fill)."""

    async def _fills(settle: date) -> list[StreetFill]:
        out: list[StreetFill] = []
        for n in range(router.shard_count):
            async with router.engine(n).connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT venue, exec_id, qty, price FROM executions WHERE qty > 0 AND venue <> 'house' "
                    "AND settle_date = :d"), {"d": settle})).all()
            out += [StreetFill(r.venue, r.exec_id, Decimal(r.qty), Decimal(r.price)) for r in rows]
        return out

    return _fills


@pytest.fixture(scope="session")
async def backoffice(
    stack_settings: Settings, router: ShardRouter, redis: Redis,
) -> AsyncIterator[Backoffice]:
    # The session's shards carry ledger seeds posted outside the order path (holds without
    # orders, fills without executions, deposits without transfers: tests/db/test_ledger.py and
    # others), which the reconciliation's invariants audit rightly reports: here it records them
    # without halting. Halting on a violation is tested on databases of its own
    # (tests/db/test_audit.py).
    settings = stack_settings.model_copy(update={**FAST_ACH, "reconcile_audit": "record"})
    assert settings.temporal_address
    client = await connect(settings)
    ch = Clearinghouse(street_source(router))
    bank = AchBank(redis, settings.redis_prefix)
    workers = BackofficeWorkers(settings, client=client, clearinghouse=ch, bank=bank)
    await workers.start()
    try:
        yield Backoffice(settings, client, ch, bank, workers)
    finally:
        await workers.stop()


@pytest.fixture(scope="module")
async def funding_app(backoffice: Backoffice) -> AsyncIterator[FastAPI]:
    """The API over the back office's stack (transfers), one per test module."""
    app = create_app(backoffice.settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(funding_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=funding_app),
                                 base_url="http://sherwood.test", timeout=30) as c:
        yield c
