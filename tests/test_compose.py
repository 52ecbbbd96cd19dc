"""docker-compose.yml is valid (no Docker engine here: `docker-compose config` only parses), runs
every process kind of `sherwood dev` (sherwood/dev.py PROCESS_KINDS), and holds no secret."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


EXAMPLE_ENV = ROOT / "deploy" / "secrets.env.example"


def compose_config(*args: str, env_file: Path | None = EXAMPLE_ENV) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (.ci/run installs the Debian package)")
        pytest.skip("docker-compose is not installed here (CI installs it and runs this test)")
    # the secrets come from the env file only: none in the process environment
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHERWOOD_", "TEMPORAL_"))}
    cmd = [exe, "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run([*cmd, *args, "config"], capture_output=True, text=True, timeout=60, env=env)


def compose_services(*args: str) -> dict[str, Any]:
    out = compose_config(*args)
    assert out.returncode == 0, out.stderr
    services: dict[str, Any] = yaml.safe_load(out.stdout)["services"]
    return services


def test_compose_file_validates() -> None:
    services = compose_services()
    shards = [s for s in services if s.startswith("shard-") and s.endswith("-db")]
    assert len(shards) == 4
    assert {"temporal", "temporal-db", "temporal-ui", "directory-db", "redis", "api"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            published = port if isinstance(port, str) else str(port.get("host_ip", ""))
            assert "127.0.0.1" in published, f"{name} publishes on all interfaces: {port}"


def test_compose_runs_every_process_kind_of_the_dev_stack() -> None:
    from sherwood.dev import PROCESS_KINDS, SIMULATORS
    from sherwood.settings import Settings

    services = compose_services()
    commands = {name: svc.get("command") for name, svc in services.items()}
    for kind in PROCESS_KINDS:
        want = ["sherwood", *kind.args]
        runs = [name for name, cmd in commands.items() if cmd and cmd[:len(want)] == want]
        assert runs, f"no compose service runs `sherwood {' '.join(kind.args)}`"
        if kind.name == "shard-worker":  # one per shard, each its own
            shards = sorted(int(commands[n][commands[n].index("--shard") + 1]) for n in runs)
            assert shards == list(range(Settings(_env_file=None).shards))  # type: ignore[call-arg]
        for name in runs:
            assert "migrate" in services[name]["depends_on"], f"{name} may start before migrations"
            # only migrations run as the owner
            assert "SHERWOOD_DB_OWNER_PASSWORD" not in services[name].get("environment", {}), name
    assert services["migrate"]["command"] == ["sherwood", "migrate"]
    # migrate has every database it migrates (it raised on the unconfigured market-data database)
    env = services["migrate"]["environment"]
    for key in ("SHERWOOD_DIRECTORY_URL", "SHERWOOD_SHARD_URLS", "SHERWOOD_GATEWAY_DB_URL",
                "SHERWOOD_MARKETDATA_DB_URL", "SHERWOOD_DB_OWNER_USER", "SHERWOOD_DB_OWNER_PASSWORD"):
        assert env.get(key), key
    assert "marketdata-db" in services
    # the simulators only with the venues profile
    for sim in SIMULATORS:
        sims = [n for n, c in commands.items() if c and c[:3] == ["sherwood", "sim", sim]]
        assert sims, sim
        for name in sims:
            assert services[name].get("profiles") == ["venues"], name


def test_compose_has_healthchecks_where_there_is_something_to_check() -> None:
    services = compose_services()
    for name in ("api", "gateway", "ingest", "fanout", "redis", "directory-db", "marketdata-db",
                 "shard-0-db", "temporal-db"):
        assert services[name].get("healthcheck"), name


def test_no_secret_in_the_compose_file(tmp_path: Path) -> None:
    """Every password comes from the env file: without one, config refuses to render."""
    text = (ROOT / "docker-compose.yml").read_text()
    for value in ("change-me", "sherwood@", ":sherwood@", "POSTGRES_PASSWORD: sherwood"):
        assert value not in text
    (tmp_path / "empty.env").write_text("")
    out = compose_config(env_file=tmp_path / "empty.env")
    assert out.returncode != 0 and "set in the env file" in out.stderr


def test_the_api_connects_as_its_own_role_and_never_sees_the_service_password() -> None:
    """db/roles.py: the api service's database URLs name the API role, whose password only it and
    `migrate` (which creates the role) get; the workers never get the API's."""
    from db.roles import login_of

    services = compose_services()
    env = services["api"]["environment"]
    urls = [env["SHERWOOD_DIRECTORY_URL"], env["SHERWOOD_GATEWAY_DB_URL"], env["SHERWOOD_MARKETDATA_DB_URL"],
            *yaml.safe_load(env["SHERWOOD_SHARD_URLS"])]
    assert len(urls) == 7 and {login_of(u).user for u in urls} == {"sherwood_api"}
    api_password = login_of(urls[0]).password
    assert api_password == "change-me-api"
    assert "change-me-service" not in str(env) and "change-me-owner" not in str(env)
    migrate = services["migrate"]["environment"]
    assert migrate["SHERWOOD_API_DB_USER"] == "sherwood_api"
    assert migrate["SHERWOOD_API_DB_PASSWORD"] == api_password
    for name in ("shard-worker-0", "gateway", "backoffice", "ingest", "fanout"):
        assert api_password not in str(services[name].get("environment", {})), name
        assert login_of(services[name]["environment"]["SHERWOOD_DIRECTORY_URL"]).user == "sherwood_service"
