from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from sherwood.settings import Settings


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
