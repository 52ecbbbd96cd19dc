"""The one place Redis clients (redis-py, asyncio) are built, always with timeouts.

A Redis that accepts connections and never answers (hung, swapping, a half-open link) must cost
a caller at most ``socket_timeout_s`` per command, never a hang: every production process builds
its clients here, with the values of :class:`sherwood.settings.Settings`
(``SHERWOOD_REDIS_SOCKET_TIMEOUT_S``, ``..._CONNECT_TIMEOUT_S``, ``..._HEALTH_CHECK_INTERVAL_S``).
What a caller does when a command times out (``redis.exceptions.TimeoutError``, a
``RedisError``) is its own business: the read path degrades (stale or no quotes), the limiter
lets requests through, the outbox leaves rows for its sweep.

It does not cover the market-data hot path's own RESP client (:mod:`marketdata.resp`), which
has its own connect timeout and PING watchdog, nor blocking commands (none are used: a blocking
command would need a timeout longer than its block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis

if TYPE_CHECKING:
    from sherwood.settings import Settings


class _HasRedisTimeouts(Protocol):
    redis_socket_timeout_s: float
    redis_connect_timeout_s: float
    redis_health_check_interval_s: float


@dataclass(frozen=True)
class RedisTimeouts:
    """Socket timeouts of a client; the defaults are the settings' defaults."""

    socket_timeout_s: float = 2.0
    connect_timeout_s: float = 2.0
    health_check_interval_s: float = 15.0

    @classmethod
    def of(cls, settings: _HasRedisTimeouts) -> RedisTimeouts:
        return cls(settings.redis_socket_timeout_s, settings.redis_connect_timeout_s,
                   settings.redis_health_check_interval_s)


def redis_from_url(url: str, timeouts: _HasRedisTimeouts | RedisTimeouts, **kwargs: Any) -> Redis:
    """A client on ``url`` whose commands fail after the socket timeout instead of hanging.

    ``timeouts``: the Settings (or a :class:`RedisTimeouts`); ``kwargs`` go to redis-py
    (``decode_responses``...). The connection is made lazily, on the first command.
    """
    t = timeouts if isinstance(timeouts, RedisTimeouts) else RedisTimeouts.of(timeouts)
    return Redis.from_url(url, socket_timeout=t.socket_timeout_s,
                          socket_connect_timeout=t.connect_timeout_s,
                          health_check_interval=t.health_check_interval_s, **kwargs)


def redis_from_settings(settings: Settings) -> Redis | None:
    """A client on ``settings.redis_url`` with the settings' timeouts; None when none is set."""
    url = settings.redis_url
    return redis_from_url(url, settings) if url else None
