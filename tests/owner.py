"""The owner's (admin) connection for tests that change the books on purpose.

The test stack's processes connect as the service role, which cannot UPDATE/DELETE the ledger,
order events or executions, nor disable their triggers (db/roles.py). A test that tampers with the
books, moves trade dates or cleans up rows connects as the owner, through :func:`owner_url`, so it
says so where it does it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from db.engines import make_engine
from db.roles import with_login
from sherwood.settings import Settings


def owner_url(settings: Settings, url: str) -> str:
    """``url`` (a service URL of ``settings``) with the owner's credentials."""
    owner = settings.db_owner()
    assert owner is not None, "the test settings name the owner (tests/conftest.py)"
    return with_login(url, owner)


@asynccontextmanager
async def owner_engine(settings: Settings, url: str) -> AsyncIterator[AsyncEngine]:
    """A small engine on ``url`` as the owner, disposed on exit (test clean-ups the service role
    may not do, e.g. deleting bars)."""
    engine = make_engine(owner_url(settings, url), pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        await engine.dispose()
