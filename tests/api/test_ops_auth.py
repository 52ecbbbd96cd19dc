"""Operator identity on the API: ops keys separate from customer keys, a scope per ``/ops``
route, revocation and expiry refused at once, and the append-only ``ops_audit``.

Not here: four-eyes resolutions of STUCK orders and the ``sherwood keys`` / ``ops`` CLI
(tests/workflows/test_ops_identity.py), the rules alone (tests/domain/test_ops_rules.py).
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.accounts import open_account
from db.router import ShardRouter
from domain.ops import SCOPES
from sherwood.settings import Settings
from tests.api.test_body import _api_routes
from tests.stack import ops_headers

# Every /ops route and the scope it needs. A new /ops route must be added here (the test below
# fails on a route missing from this table), so none ships without a scope.
EXPECTED = {
    ("GET", "/ops/halts"): "read",
    ("POST", "/ops/halts"): "halt",
    ("DELETE", "/ops/halts/{symbol}"): "halt",
    ("POST", "/ops/restrictions"): "restrict",
    ("GET", "/ops/settlement/{business_date}"): "settlement",
    ("GET", "/ops/shard-halts"): "read",
    ("POST", "/ops/shards/{shard}/clear-halt"): "settlement",
    ("GET", "/ops/shortfalls"): "read",
    ("GET", "/ops/ach-shortfalls"): "read",
    ("POST", "/ops/orders/{order_id}/resolve"): "resolve",
    ("POST", "/ops/resolutions/{request_id}/approve"): "resolve",
    ("GET", "/ops/resolutions"): "read",
    ("GET", "/ops/audit"): "read",
    ("GET", "/ops/keys"): "keys",
    ("POST", "/ops/keys"): "keys",
    ("POST", "/ops/keys/{key_id}/rotate"): "keys",
    ("POST", "/ops/keys/{key_id}/revoke"): "keys",
    ("GET", "/ops/marketdata/ingest"): "read",
    ("GET", "/ops/reports/execution-quality"): "read",
}


def ops_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the app under /ops/ (also inside included routers)."""
    return sorted((m, r.path) for r in _api_routes(app.routes)
                  if r.path.startswith("/ops/") for m in r.methods)


def concrete(path: str) -> str:
    """A path with its parameters filled (values that touch nothing)."""
    return re.sub(r"\{(\w+)\}", lambda m: {"business_date": "2001-01-02"}.get(m.group(1), "1"), path)


async def call(client: httpx.AsyncClient, method: str, path: str,
               hdr: dict[str, str]) -> httpx.Response:
    # an empty body: a caller who gets past authorization gets a 422 (no reason), never a change
    kwargs = {"json": {}} if method == "POST" else {}
    return await client.request(method, concrete(path), headers=hdr, **kwargs)


async def test_every_ops_route_has_its_scope_and_refuses_customer_keys(
    app: FastAPI, client: httpx.AsyncClient, router: ShardRouter,
) -> None:
    routes = ops_routes(app)
    assert set(routes) == set(EXPECTED), set(routes) ^ set(EXPECTED)
    acct = await open_account(router)
    customer = {"APCA-API-KEY-ID": acct.credentials.key_id,
                "APCA-API-SECRET-KEY": acct.credentials.secret_key}
    only = {s: await ops_headers(router, s, holder=f"only-{s}") for s in SCOPES}
    all_but = {s: await ops_headers(router, *(x for x in SCOPES if x != s), holder=f"not-{s}")
               for s in SCOPES}
    for method, path in routes:
        scope = EXPECTED[(method, path)]
        r = await call(client, method, path, customer)
        assert r.status_code == 403 and r.json()["reason"] == "forbidden", (method, path, r.text)
        r = await call(client, method, path, {})
        assert r.status_code == 401, (method, path, r.text)
        r = await call(client, method, path, all_but[scope])
        assert r.status_code == 403 and r.json()["reason"] == "insufficient_scope", (
            method, path, r.text)
        r = await call(client, method, path, only[scope])
        assert r.status_code not in (401, 403), (method, path, r.text)


async def test_a_revoked_ops_key_is_refused_at_once_and_rotation_hands_over(
    client: httpx.AsyncClient, router: ShardRouter,
) -> None:
    admin = await ops_headers(router, "keys", holder="admin")
    r = await client.post("/ops/keys", headers=admin, json={
        "holder": "carol", "scopes": ["read", "halt"], "days": 7, "reason": "new on call"})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["scopes"] == ["read", "halt"]
    carol = {"APCA-API-KEY-ID": made["key_id"], "APCA-API-SECRET-KEY": made["secret_key"]}
    assert (await client.get("/ops/halts", headers=carol)).status_code == 200
    # rotation: a new key for the same holder and scopes; the old one refused from now on
    r = await client.post(f"/ops/keys/{made['key_id']}/rotate", headers=admin,
                          json={"reason": "quarterly rotation"})
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["holder"], new["scopes"]) == ("carol", ["read", "halt"])
    r = await client.get("/ops/halts", headers=carol)
    assert (r.status_code, r.json()["reason"]) == (401, "key_revoked"), r.text
    carol = {"APCA-API-KEY-ID": new["key_id"], "APCA-API-SECRET-KEY": new["secret_key"]}
    assert (await client.get("/ops/halts", headers=carol)).status_code == 200
    # revocation: the very next request is refused (no cache outlives it)
    r = await client.post(f"/ops/keys/{new['key_id']}/revoke", headers=admin,
                          json={"reason": "left the team"})
    assert r.status_code == 204, r.text
    r = await client.get("/ops/halts", headers=carol)
    assert (r.status_code, r.json()["reason"]) == (401, "key_revoked"), r.text
    listed = {k["key_id"]: k for k in (await client.get("/ops/keys", headers=admin)).json()}
    assert listed[new["key_id"]]["rotated_from"] == made["key_id"]
    assert listed[new["key_id"]]["revoked_at"] is not None
    assert all("secret" not in k and "secret_hash" not in k for k in listed.values())
    audit = (await client.get("/ops/audit", headers=await ops_headers(router, "read"))).json()
    trail = [(a["action"], a["target"], a["actor"], a["reason"]) for a in audit]
    assert ("keys.revoke", new["key_id"], "admin", "left the team") in trail
    assert ("keys.rotate", made["key_id"], "admin", "quarterly rotation") in trail
    assert ("keys.create", made["key_id"], "admin", "new on call") in trail


async def test_an_expired_ops_key_is_refused(client: httpx.AsyncClient, router: ShardRouter) -> None:
    hdr = await ops_headers(router, "read", holder="temp")
    assert (await client.get("/ops/halts", headers=hdr)).status_code == 200
    async with router.directory.begin() as conn:  # its expiry comes
        await conn.execute(text("UPDATE ops_keys SET expires_at = clock_timestamp() "
                                "WHERE key_id = :k"), {"k": hdr["APCA-API-KEY-ID"]})
    r = await client.get("/ops/halts", headers=hdr)
    assert (r.status_code, r.json()["reason"]) == (401, "key_expired"), r.text


async def test_ops_actions_need_a_reason_and_are_audited_with_the_key(
    client: httpx.AsyncClient, router: ShardRouter,
) -> None:
    hdr = await ops_headers(router, "halt", "read", holder="dave")
    before = len((await client.get("/ops/audit", headers=hdr, params={"limit": 1000})).json())
    r = await client.post("/ops/halts", headers=hdr, json={"symbol": "ZOPS"})
    assert r.status_code == 422, r.text
    r = await client.post("/ops/halts", headers=hdr, json={"symbol": "ZOPS", "reason": " "})
    assert r.status_code == 422 and r.json()["reason"] == "reason_required", r.text
    r = await client.delete("/ops/halts/ZOPS", headers=hdr)
    assert r.status_code == 422, r.text
    assert len((await client.get("/ops/audit", headers=hdr, params={"limit": 1000})).json()) == before
    r = await client.post("/ops/halts", headers=hdr, json={"symbol": "ZOPS", "reason": "test halt"})
    assert r.status_code == 200, r.text
    r = await client.delete("/ops/halts/ZOPS", headers=hdr, params={"reason": "test over"})
    assert r.status_code == 204, r.text
    rows = (await client.get("/ops/audit", headers=hdr, params={"limit": 2})).json()
    assert [(a["action"], a["target"], a["actor"], a["key_id"], a["reason"]) for a in rows] == [
        ("resume", "ZOPS", "dave", hdr["APCA-API-KEY-ID"], "test over"),
        ("halt", "ZOPS", "dave", hdr["APCA-API-KEY-ID"], "test halt")]


@pytest.mark.parametrize("statement", [
    "UPDATE ops_audit SET reason = 'rewritten'",
    "DELETE FROM ops_audit",
    "TRUNCATE ops_audit",
])
async def test_ops_audit_is_append_only(router: ShardRouter, migrated: Settings, statement: str) -> None:
    """Two walls: the service role has no UPDATE/DELETE/TRUNCATE on it (db/roles.py), and the
    table's trigger refuses even the owner."""
    from db.ops import Actor, record
    from tests.owner import owner_engine

    await record(router.directory, Actor("erin"), "test", "x", "a row to protect")
    with pytest.raises(DBAPIError, match="permission denied"):
        async with router.directory.begin() as conn:
            await conn.execute(text(statement))
    async with owner_engine(migrated, migrated.directory_db_url()) as owner:
        with pytest.raises(DBAPIError, match="append-only"):
            async with owner.begin() as conn:
                await conn.execute(text(statement))
