"""Account -> shard routing and per-shard engines.

The directory database is the truth for which shard holds an account; Redis caches it (an
account never moves, so the cache needs no invalidation). Engines are created lazily, so one
unreachable shard costs nothing to the others.
"""

from __future__ import annotations

import logging
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engines import make_engine, reading
from db.errors import UnknownAccount
from db.ledger import Ledger
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)


_KNOWN_MAX = 100_000  # accounts whose shard one process keeps in memory


class ShardRouter:
    """Maps accounts to shards and hands out each shard's engine and ledger.

    It does not open accounts (see :mod:`db.accounts`) and holds no business state.
    ``statement_timeout_s`` / ``lock_timeout_s`` apply to every engine it makes (request path).
    """

    def __init__(
        self,
        directory_url: str,
        shard_urls: list[str],
        *,
        redis: Redis | None = None,
        redis_prefix: str = "sherwood",
        cache_ttl_s: int = 3600,
        pool_size: int = 10,
        max_overflow: int = 40,
        house_stripes: int = 32,
        statement_timeout_s: float | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        self.directory_url = directory_url
        self.shard_urls = list(shard_urls)
        self.redis = redis
        self.redis_prefix = redis_prefix
        self.cache_ttl_s = cache_ttl_s
        self._pool = (pool_size, max_overflow)
        self._timeouts = (statement_timeout_s, lock_timeout_s)
        self.house_stripes = house_stripes
        self._directory: AsyncEngine | None = None
        self._engines: dict[int, AsyncEngine] = {}
        self._ledgers: dict[int, Ledger] = {}
        # An account never changes shard (nothing moves accounts), so a shard once found stays
        # right: kept in the process too, sparing the Redis round trip on every request.
        self._known: dict[uuid.UUID, int] = {}

    @property
    def shard_count(self) -> int:
        return len(self.shard_urls)

    @property
    def directory(self) -> AsyncEngine:
        if self._directory is None:
            self._directory = make_engine(self.directory_url, pool_size=self._pool[0],
                                          max_overflow=self._pool[1],
                                          statement_timeout_s=self._timeouts[0],
                                          lock_timeout_s=self._timeouts[1])
        return self._directory

    def engine(self, shard: int) -> AsyncEngine:
        if not 0 <= shard < len(self.shard_urls):
            raise ValueError(f"no shard {shard}")
        if shard not in self._engines:
            self._engines[shard] = make_engine(
                self.shard_urls[shard], pool_size=self._pool[0], max_overflow=self._pool[1],
                statement_timeout_s=self._timeouts[0], lock_timeout_s=self._timeouts[1])
        return self._engines[shard]

    def ledger(self, shard: int) -> Ledger:
        if shard not in self._ledgers:
            self._ledgers[shard] = Ledger(self.engine(shard), house_stripes=self.house_stripes)
        return self._ledgers[shard]

    def _cache_key(self, account_id: uuid.UUID) -> str:
        return RedisKeys(self.redis_prefix).account_shard(account_id)

    async def shard_for(self, account_id: uuid.UUID) -> int:
        """The shard of an account: this process's cache, Redis, else the directory (then
        cached). Unknown accounts are never cached."""
        if (known := self._known.get(account_id)) is not None:
            return known
        shard = await self._lookup(account_id)
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[account_id] = shard
        return shard

    async def _lookup(self, account_id: uuid.UUID) -> int:
        if self.redis is not None:
            try:
                cached = await self.redis.get(self._cache_key(account_id))
                if cached is not None:
                    return int(cached)
            except RedisError as exc:  # the cache is an optimisation, never a dependency
                log.warning("shard cache unavailable: %s", exc)
        async with reading(self.directory) as conn:
            shard = (await conn.execute(
                text("SELECT shard FROM accounts WHERE id = :id"), {"id": account_id}
            )).scalar_one_or_none()
        if shard is None:
            raise UnknownAccount(f"unknown account {account_id}")
        await self.remember(account_id, shard)
        return int(shard)

    async def remember(self, account_id: uuid.UUID, shard: int) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.set(self._cache_key(account_id), shard, ex=self.cache_ttl_s)
        except RedisError as exc:
            log.warning("shard cache unavailable: %s", exc)

    async def ledger_for(self, account_id: uuid.UUID) -> Ledger:
        return self.ledger(await self.shard_for(account_id))

    async def dispose(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()
        if self._directory is not None:
            await self._directory.dispose()
        self._engines.clear()
        self._ledgers.clear()
        self._directory = None
