"""`sherwood migrate` with the production compose's environment: explicit URLs per database (no
SHERWOOD_POSTGRES_URL), the market-data database among them, the owner's credentials apart. The
first migration is a real ``python -m sherwood`` process, the others run in the test process
(tests/cli.py)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from db.migrate import drop_database
from db.roles import Login, drop_role, login_of, with_login
from tests.cli import invoke


@pytest.fixture
def compose_like_env(pg_server_url: str) -> Iterator[dict[str, str]]:
    prefix = f"swm{os.getpid()}{secrets.token_hex(2)}"
    service = Login(f"{prefix}_svc", secrets.token_urlsafe(12))
    api = Login(f"{prefix}_api", secrets.token_urlsafe(12))
    owner = login_of(pg_server_url)
    base = with_login(pg_server_url, service)
    urls = {
        "SHERWOOD_DIRECTORY_URL": f"{base}/{prefix}_directory",
        "SHERWOOD_GATEWAY_DB_URL": f"{base}/{prefix}_gateway",
        "SHERWOOD_MARKETDATA_DB_URL": f"{base}/{prefix}_marketdata",
    }
    shards = [f"{base}/{prefix}_shard_{n}" for n in range(2)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env.update(urls, SHERWOOD_SHARD_URLS=json.dumps(shards), SHERWOOD_DB_OWNER_USER=owner.user,
               SHERWOOD_DATA_DIR=f"/tmp/{prefix}", SHERWOOD_API_DB_USER=api.user,
               SHERWOOD_API_DB_PASSWORD=api.password or "")
    if owner.password:
        env["SHERWOOD_DB_OWNER_PASSWORD"] = owner.password
    yield env
    for url in [*urls.values(), *shards]:
        drop_database(with_login(url, owner))
    drop_role(with_login(pg_server_url, owner), service.user)
    drop_role(with_login(pg_server_url, owner), api.user)


def test_migrate_with_explicit_urls_creates_the_role_and_grants(compose_like_env: dict[str, str]) -> None:
    env = compose_like_env
    out = subprocess.run([sys.executable, "-m", "sherwood", "migrate"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "market-data" in out.stdout
    code, stdout, stderr = invoke(env, "migrate")  # idempotent (again, in this process)
    assert code == 0, stdout + stderr
    assert "market-data" in stdout
    shard = json.loads(env["SHERWOOD_SHARD_URLS"])[1]
    with psycopg.connect(shard) as conn:  # as the service role
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger_entries SET amount = amount WHERE false")
    with psycopg.connect(shard) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ALL")
    for key in ("SHERWOOD_DIRECTORY_URL", "SHERWOOD_GATEWAY_DB_URL", "SHERWOOD_MARKETDATA_DB_URL"):
        with psycopg.connect(env[key]) as conn:
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TABLE sneaky (x int)")
    with psycopg.connect(env["SHERWOOD_GATEWAY_DB_URL"]) as conn:
        conn.execute("UPDATE gateway_reports SET delivered_at = delivered_at WHERE false")
    # the API's role, on every database: reads, writes its own tables, not the books
    api = Login(env["SHERWOOD_API_DB_USER"], env["SHERWOOD_API_DB_PASSWORD"])
    with psycopg.connect(with_login(shard, api)) as conn:
        conn.execute("SELECT count(*) FROM ledger_entries").fetchone()
        conn.execute("UPDATE watchlists SET name = name WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO ledger_entries SELECT * FROM ledger_entries WHERE false")
    for key, table in (("SHERWOOD_GATEWAY_DB_URL", "gateway_reports"),
                       ("SHERWOOD_MARKETDATA_DB_URL", "trades")):
        with psycopg.connect(with_login(env[key], api)) as conn:  # it only reads these
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE false")


def test_services_never_connect_as_the_owner(compose_like_env: dict[str, str]) -> None:
    env = dict(compose_like_env)
    owner = env["SHERWOOD_DB_OWNER_USER"]
    env["SHERWOOD_DB_OWNER_USER"] = login_of(env["SHERWOOD_DIRECTORY_URL"]).user
    code, stdout, stderr = invoke(env, "migrate")
    assert code != 0
    assert "must not connect as the owner" in stdout + stderr, owner
