from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from db.accounts import OpenedAccount, open_account
from db.router import ShardRouter
from sherwood.settings import Settings
from tests.stack import served


@pytest.fixture(scope="session")
async def app(stack_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(stack_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sherwood.test") as c:
        yield c


@pytest.fixture(scope="module")
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """The app served on a real socket (for alpaca-py's TradingClient)."""
    async with served(app) as url:
        yield url


@pytest.fixture
async def acct(router: ShardRouter) -> OpenedAccount:
    return await open_account(router)
