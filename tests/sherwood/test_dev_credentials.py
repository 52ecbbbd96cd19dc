"""What `sherwood dev` hands each child (fast; the slow tests/sherwood/test_dev_stack.py checks a
running stack): the API child gets its own database login and no service password, the others no
API password and never the owner's; each child its kind's Redis user."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.roles import login_of
from sherwood.dev import DevStack, with_service_role
from sherwood.settings import Settings


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DevStack:
    for key in ("SHERWOOD_POSTGRES_URL", "SHERWOOD_REDIS_URL", "SHERWOOD_DIRECTORY_URL",
                "SHERWOOD_SHARD_URLS", "SHERWOOD_API_DB_USER", "SHERWOOD_API_DB_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SHERWOOD_DB_OWNER_PASSWORD", "owner-pw")  # a parent's own configuration
    s = with_service_role(Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                   postgres_url="postgresql://owner:owner-pw@127.0.0.1:5433",
                                   db_owner_user=None, db_owner_password=None))
    st = DevStack(s, progress=lambda m: None)
    st.redis_urls = {"service": "redis://sherwood-service:svc@127.0.0.1:6380/0",
                     "ingest": "redis://sherwood-ingest:ing@127.0.0.1:6380/0",
                     "quotes": "redis://sherwood-quotes:q@127.0.0.1:6380/0"}
    return st


def test_the_api_child_gets_its_own_login_and_no_service_password(stack: DevStack) -> None:
    s = stack.settings
    service, api = login_of(s.postgres_url or ""), s.api_login()
    assert service.user == "sherwood_service" and s.db_owner_user == "owner"
    assert api is not None and api.user == "sherwood_service_api" and api.password
    assert api.password != service.password
    env = stack.child_env("api")
    assert login_of(env["SHERWOOD_POSTGRES_URL"]) == api
    assert service.password and service.password not in "\0".join(env.values())
    assert "owner-pw" not in "\0".join(env.values())
    for name in ("shard-worker", "gateway", "backoffice", "ingest", "fanout", None):
        other = stack.child_env(name)
        assert login_of(other["SHERWOOD_POSTGRES_URL"]).user == "sherwood_service", name
        assert api.password not in "\0".join(other.values()), name
        assert "owner-pw" not in "\0".join(other.values()), name


def test_each_child_gets_its_kind_of_redis_user(stack: DevStack) -> None:
    users = {name: stack.child_env(name)["SHERWOOD_REDIS_URL"].split("://")[1].split(":")[0]
             for name in ("api", "shard-worker", "gateway", "backoffice", "ingest", "fanout", "mm1",
                          None)}
    assert users == {"api": "sherwood-service", "shard-worker": "sherwood-service",
                     "gateway": "sherwood-service", "backoffice": "sherwood-service",
                     "ingest": "sherwood-ingest", "fanout": "sherwood-quotes", "mm1": "sherwood-quotes",
                     None: "sherwood-service"}
