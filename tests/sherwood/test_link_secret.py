"""The gateway link's secret (sherwood/link_secret.py): made once into the data dir for
``sherwood dev``, required in production by both ends of the link before anything starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from sherwood.embedded import free_port
from sherwood.link_secret import LinkSecretError, ensure_link_secret, link_secret
from sherwood.settings import Settings
from workers.gateway import ExecutionGateway
from workers.shard import ShardWorkers


def test_ensure_link_secret_makes_an_owner_only_secret_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = ensure_link_secret(data)
    path = data / "link.secret"
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_link_secret(data) == secret  # kept across restarts
    assert [p.name for p in data.iterdir()] == ["link.secret"]  # no temporary file left


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    ensure_link_secret(tmp_path)
    os.chmod(tmp_path / "link.secret", 0o644)
    with pytest.raises(LinkSecretError, match="chmod 600"):
        ensure_link_secret(tmp_path)


def test_production_requires_a_secret_dev_runs_without_the_link() -> None:
    with pytest.raises(LinkSecretError, match="SHERWOOD_GATEWAY_LINK_SECRET"):
        link_secret(Settings(env="production", gateway_link_secret=None))
    assert link_secret(Settings(env="dev")) is None
    assert link_secret(Settings(env="test", gateway_link_secret=SecretStr(" " + "a" * 40))) == "a" * 40
    with pytest.raises(LinkSecretError, match="at least 32"):
        link_secret(Settings(env="dev", gateway_link_secret=SecretStr("hunter2")))


async def test_neither_end_starts_without_a_secret_in_production() -> None:
    s = Settings(env="production", gateway_link_port=free_port(), gateway_link_secret=None,
                 gateway_db_url="postgresql://nowhere/x")
    with pytest.raises(LinkSecretError):
        ExecutionGateway.from_settings(s, client=None)  # type: ignore[arg-type]
    with pytest.raises(LinkSecretError):
        await ShardWorkers(s, [0]).start()  # before it connects to anything
