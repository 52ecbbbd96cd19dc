"""Shard routing: least-loaded placement, Redis-cached lookups, and blast radius."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from db.accounts import authenticate, create_api_key, open_account
from db.errors import UnknownAccount
from db.router import ShardRouter
from sherwood.embedded import free_port


async def test_new_accounts_go_to_the_least_loaded_shard(router: ShardRouter) -> None:
    async with router.directory.connect() as conn:
        counts = dict((await conn.execute(text("SELECT id, account_count FROM shards"))).all())
    target = min(counts, key=lambda s: (counts[s], s))
    acct = await open_account(router)
    assert acct.shard == target


async def test_lookup_is_cached_in_redis(router: ShardRouter, redis: Redis) -> None:
    acct = await open_account(router)
    key = f"{router.redis_prefix}:account_shard:{acct.account_id}"
    await redis.delete(key)
    assert await router.shard_for(acct.account_id) == acct.shard
    assert int(await redis.get(key)) == acct.shard
    with pytest.raises(UnknownAccount):
        await router.shard_for(uuid.uuid4())


async def test_a_found_shard_is_kept_in_the_process(router: ShardRouter, redis: Redis) -> None:
    acct = await open_account(router)
    key = f"{router.redis_prefix}:account_shard:{acct.account_id}"
    assert await router.shard_for(acct.account_id) == acct.shard
    await redis.delete(key)
    assert await router.shard_for(acct.account_id) == acct.shard
    assert await redis.get(key) is None  # answered from memory: neither Redis nor the directory
    unknown = uuid.uuid4()
    for _ in range(2):  # an unknown account is asked about every time, never remembered
        with pytest.raises(UnknownAccount):
            await router.shard_for(unknown)


async def test_api_keys_authenticate_only_with_the_right_secret(router: ShardRouter) -> None:
    acct = await open_account(router)
    creds = acct.credentials
    key = await authenticate(router, creds.key_id, creds.secret_key)
    assert key is not None and key.account_id == acct.account_id and key.role == "trader"
    assert await authenticate(router, creds.key_id, creds.secret_key + "x") is None
    assert await authenticate(router, "PKNOPE", creds.secret_key) is None
    async with router.directory.connect() as conn:
        stored = (await conn.execute(text("SELECT secret_hash FROM api_keys WHERE key_id = :k"),
                                     {"k": creds.key_id})).scalar_one()
    assert creds.secret_key not in stored  # only the hash is stored
    with pytest.raises(ValueError):  # operations keys are ops_keys (db/ops.py), never api_keys
        await create_api_key(router, None, role="ops")


async def test_one_shard_down_leaves_the_others_trading(router: ShardRouter, migrated) -> None:
    """Shard 1's database is unreachable: ledger work on every other shard still succeeds."""
    urls = list(router.shard_urls)
    urls[1] = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    broken = ShardRouter(router.directory_url, urls)
    try:
        placed = {}
        while len(placed) < router.shard_count:
            acct = await open_account(router)
            placed.setdefault(acct.shard, acct)
        for shard, acct in placed.items():
            ledger = broken.ledger(shard)
            if shard == 1:
                with pytest.raises(Exception):  # noqa: B017 - any connection error
                    await ledger.deposit(f"br:{acct.account_id}", acct.account_id, "5")
            else:
                await ledger.deposit(f"br:{acct.account_id}", acct.account_id, "5")
                await ledger.hold_cash(f"br:{acct.account_id}:h", acct.account_id, "5")
                assert (await ledger.balances(acct.account_id))["cash_held"] == 5
    finally:
        await broken.dispose()
