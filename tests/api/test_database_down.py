"""A request that meets a database that is down or restarting (the chaos run's Postgres
restart) is answered 503 with a code and Retry-After, which clients retry, not 500
``internal_error``, which they do not."""

from __future__ import annotations

import httpx

from api.app import create_app
from sherwood.embedded import free_port
from sherwood.settings import Settings


async def test_a_request_while_the_database_is_down_gets_503_with_retry_after(migrated: Settings) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens
    s = migrated.model_copy(update={"directory_url": down})
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sherwood.test") as http:
            r = await http.get("/v2/account", headers={"APCA-API-KEY-ID": "PKCHAOS",
                                                        "APCA-API-SECRET-KEY": "x" * 40})
    assert r.status_code == 503, r.text
    assert r.json()["reason"] == "service_unavailable" and r.headers["Retry-After"] == "1"
