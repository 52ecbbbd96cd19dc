"""Building shared resources from Settings (used by entry points only)."""

from __future__ import annotations

from redis.asyncio import Redis

from db.router import ShardRouter
from sherwood.settings import Settings


def shard_urls(settings: Settings) -> list[str]:
    return [settings.shard_url(n) for n in range(settings.shard_count)]


def build_router(settings: Settings, redis: Redis | None = None) -> ShardRouter:
    return ShardRouter(
        settings.directory_db_url(),
        shard_urls(settings),
        redis=redis,
        redis_prefix=settings.redis_prefix,
        cache_ttl_s=settings.shard_cache_ttl_s,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        house_stripes=settings.house_balance_stripes,
    )
