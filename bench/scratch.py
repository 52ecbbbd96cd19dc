"""A scratch shard for the benches that drive a store directly (no stack): its own directory and
shard database under a fresh prefix, migrated, dropped at the end. Not for anything kept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from db.accounts import open_account
from db.migrate import drop_database, migrate_all
from db.router import ShardRouter
from sherwood.settings import Settings


@asynccontextmanager
async def scratch_shard(name: str) -> AsyncIterator[tuple[Settings, ShardRouter]]:
    """Settings (``db_prefix``/``redis_prefix`` ``sw<name><hex>``, one shard) and a router over
    the migrated databases; both databases are dropped on exit, whatever happened."""
    prefix = f"sw{name}{uuid.uuid4().hex[:6]}"
    settings = Settings().resolved().model_copy(update={"db_prefix": prefix, "redis_prefix": prefix,
                                                        "shards": 1, "shard_urls": None})
    urls = [settings.shard_url(0)]
    migrate_all(settings.directory_db_url(), urls, progress=lambda m: None)
    router = ShardRouter(settings.directory_db_url(), urls)
    try:
        yield settings, router
    finally:
        await router.dispose()
        for url in [settings.directory_db_url(), *urls]:
            drop_database(url)


async def funded_accounts(router: ShardRouter, n: int, cash: str = "100000000") -> list[uuid.UUID]:
    """``n`` accounts opened on shard 0, each with ``cash`` deposited and settled."""
    ledger = router.ledger(0)
    accounts: list[uuid.UUID] = []
    while len(accounts) < n:
        a = await open_account(router)
        if a.shard == 0:
            await ledger.deposit(f"b:{a.account_id}", a.account_id, cash)
            await ledger.settle_deposit(f"b:{a.account_id}:s", a.account_id, cash)
            accounts.append(a.account_id)
    return accounts
