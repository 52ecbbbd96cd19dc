"""The entry points' choice of the outside world: ``outside_world`` gives the back office the
simulated ACH bank (instructions in the settings' Redis, under its prefix) and the simulated
clearinghouse (street fills from the execution gateway's database), and closes what they hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from redis.asyncio import Redis

from db.migrate import drop_database_as, migrate_gateway
from sherwood.settings import Settings
from sherwood.wiring import outside_world
from simulators.bank import AchBank
from simulators.clearinghouse import Clearinghouse, GatewayFills


@pytest.fixture(scope="module")
def wiring_settings(migrated: Settings) -> Iterator[Settings]:
    url = f"{migrated.gateway_db_url_resolved()}_wiring"  # its own gateway database
    migrate_gateway(url, migrated.db_owner())
    yield migrated.model_copy(update={"gateway_db_url": url})
    drop_database_as(url, migrated.db_owner())


async def test_outside_world_is_the_simulators(wiring_settings: Settings, redis: Redis) -> None:
    account = str(uuid.uuid4())
    async with outside_world(wiring_settings) as (bank, clearinghouse):
        assert isinstance(bank, AchBank) and isinstance(clearinghouse, Clearinghouse)
        assert isinstance(clearinghouse.source, GatewayFills)
        await bank.instruct(account, "hold")
        assert await redis.get(f"{wiring_settings.redis_prefix}:bank:instr:{account}") == b"hold"
        assert await bank.outcome(str(uuid.uuid4()), account, "100.00") == "hold"
        assert await bank.submit("0b6e2f7a-1c3d-4e5f-8a9b-0c1d2e3f4a5b", account, "INCOMING", "1") == \
            "ACH0B6E2F7A1C3D4E5"
        assert await clearinghouse.report(date(2026, 11, 27)) == []  # no venue fills in this database
    await redis.delete(f"{wiring_settings.redis_prefix}:bank:instr:{account}")
