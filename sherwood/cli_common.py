"""What every ``sherwood`` command module shares: settings, consoles, and :func:`run`.

What it does: :func:`load_settings` (env ``SHERWOOD_*``, then a running dev stack's
``stack.json``) and the ``--data-dir`` option type; the stdout and stderr consoles; :func:`run`,
the one way a command runs its async part: it gives the coroutine function a :class:`Clients`
(the Temporal client connected up front when asked for; the shard router, Redis and
one-connection engines made on first use), runs it in a fresh event loop and closes whatever
was opened, whatever happened.

What it deliberately does not do: define commands (sherwood/cli.py and sherwood/cli_*.py), run
long-lived processes (``sherwood serve ...`` runs them on :func:`sherwood.lifecycle.run_loop`),
or import the heavy clients before a command needs them (every import of a client is inside
the function that makes it, as in the commands, so ``sherwood --help`` stays fast).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from sherwood.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.client import Client

    from db.router import ShardRouter

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Stack data directory.")]


def load_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values).resolved()  # type: ignore[arg-type]


class Clients:
    """The connections one command uses; :func:`run` closes those that were opened."""

    def __init__(self, settings: Settings, temporal: Client | None) -> None:
        self.settings = settings
        self._temporal = temporal
        self._router: ShardRouter | None = None
        self._redis: Redis | None = None
        self._redis_made = False
        self._engines: list[AsyncEngine] = []

    @property
    def temporal(self) -> Client:
        """The Temporal client (``run(..., temporal=True)`` connects it)."""
        assert self._temporal is not None, "run(..., temporal=True) connects the Temporal client"
        return self._temporal

    @property
    def router(self) -> ShardRouter:
        """The directory + shard router (:func:`sherwood.wiring.build_router`)."""
        if self._router is None:
            from sherwood.wiring import build_router

            self._router = build_router(self.settings)
        return self._router

    @property
    def redis(self) -> Redis | None:
        """A Redis client on ``SHERWOOD_REDIS_URL``, None when none is configured."""
        if not self._redis_made:
            from sherwood.redis_client import redis_from_settings

            self._redis = redis_from_settings(self.settings)
            self._redis_made = True
        return self._redis

    def engine(self, url: str) -> AsyncEngine:
        """A one-connection engine on ``url`` (a directory or shard database)."""
        from db.engines import make_engine

        engine = make_engine(url, pool_size=1, max_overflow=0)
        self._engines.append(engine)
        return engine

    async def aclose(self) -> None:
        if self._router is not None:
            await self._router.dispose()
        if self._redis is not None:
            await self._redis.aclose()
        for engine in self._engines:
            await engine.dispose()


def run(fn: Callable[[Clients], Awaitable[T]], settings: Settings, *, temporal: bool = False) -> T:
    """Run ``fn(clients)`` to completion in a fresh event loop; close what it opened; return its
    result (its exception propagates, after the cleanup)."""

    async def _main() -> T:
        client = None
        if temporal:
            from sherwood.temporal import connect

            client = await connect(settings)
        clients = Clients(settings, client)
        try:
            return await fn(clients)
        finally:
            await clients.aclose()

    return asyncio.run(_main())
