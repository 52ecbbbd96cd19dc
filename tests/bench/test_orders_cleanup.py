"""bench/orders.py leaves nothing of its run in Postgres: the databases its dev stack made and
the roles made for them (the service role and the API's) go at the end, the owner stays."""

from __future__ import annotations

import secrets
import uuid

import psycopg
from psycopg import sql

from bench.orders import drop_stack_databases
from db.roles import Login, login_of, with_login
from sherwood.settings import Settings


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True,  # type: ignore[arg-type]
                           connect_timeout=5)


def test_the_bench_stack_drops_its_databases_and_roles(pg_server_url: str) -> None:
    prefix = f"swbt{uuid.uuid4().hex[:6]}"
    owner = login_of(pg_server_url)
    service = Login(f"{prefix}_service", secrets.token_urlsafe(12))
    api = Login(f"{prefix}_service_api", secrets.token_urlsafe(12))
    # what the bench's DevStack resolves to (sherwood.dev.with_service_role), two shards
    s = Settings(postgres_url=with_login(pg_server_url, service), db_owner_user=owner.user,
                 db_owner_password=owner.password, api_db_user=api.user,
                 api_db_password=api.password, db_prefix=prefix, shards=2)
    dbs = [f"{prefix}_directory", f"{prefix}_shard_0", f"{prefix}_shard_1"]
    with _admin(pg_server_url) as conn:
        for role in (service.user, api.user):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for db in dbs:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db), sql.Identifier(service.user)))
    try:
        drop_stack_databases(s)
        with _admin(pg_server_url) as conn:
            roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
            left = {d for (d,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",))}
        assert left == set()
        assert {service.user, api.user} & roles == set()
        assert owner.user in roles
    finally:
        with _admin(pg_server_url) as conn:
            for db in dbs:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            for role in (service.user, api.user):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
