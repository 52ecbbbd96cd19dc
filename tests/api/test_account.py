"""GET /v2/account, /healthz and the common error shape, through the real app."""

from __future__ import annotations

import httpx

from db.accounts import open_account
from db.router import ShardRouter


def auth(creds) -> dict[str, str]:
    return {"APCA-API-KEY-ID": creds.key_id, "APCA-API-SECRET-KEY": creds.secret_key}


async def test_account_shows_the_funded_ledger(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct = await open_account(router, account_type="instant")
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"api:{acct.account_id}", acct.account_id, "2500.5")
    await ledger.hold_cash(f"api:{acct.account_id}:h", acct.account_id, "500.25")
    r = await client.get("/v2/account", headers=auth(acct.credentials))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == str(acct.account_id)
    assert body["status"] == "ACTIVE"
    assert body["cash"] == "2500.50"
    # the whole deposit is still provisional ACH credit: an instant account may use $1,000 of it,
    # and the hold has used 500.25 of that already
    assert body["buying_power"] == "499.75"
    assert body["cash_held"] == "500.25"
    assert body["account_type"] == "instant" and body["shard"] == acct.shard
    assert isinstance(body["pattern_day_trader"], bool) and body["daytrade_count"] == 0


async def test_bad_credentials_get_the_error_shape(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct = await open_account(router)
    for headers in ({}, {"APCA-API-KEY-ID": acct.credentials.key_id,
                         "APCA-API-SECRET-KEY": "wrong"}):
        r = await client.get("/v2/account", headers=headers)
        assert r.status_code == 401
        body = r.json()
        assert set(body) == {"code", "message", "reason"}
        assert isinstance(body["code"], int) and body["reason"] == "unauthorized"


async def test_unknown_route_uses_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/nothing-here")
    assert r.status_code == 404
    assert r.json()["reason"] == "not_found" and isinstance(r.json()["code"], int)


async def test_healthz_tells_an_anonymous_caller_only_up_or_down(client: httpx.AsyncClient) -> None:
    for params in ({}, {"workers": "false"}):
        r = await client.get("/healthz", params=params)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}


async def test_healthz_details_need_an_ops_key(client: httpx.AsyncClient, router: ShardRouter) -> None:
    trader = (await open_account(router)).credentials
    r = await client.get("/healthz", headers=auth(trader))
    assert r.status_code == 403 and r.json()["reason"] == "forbidden", r.text
    bad = {"APCA-API-KEY-ID": trader.key_id, "APCA-API-SECRET-KEY": "wrong"}
    assert (await client.get("/healthz", headers=bad)).status_code == 401


async def test_healthz_reports_every_dependency_and_shard_to_ops(
    client: httpx.AsyncClient, router: ShardRouter,
) -> None:
    from tests.stack import ops_headers

    ops = await ops_headers(router, "read")
    r = await client.get("/healthz", headers=ops)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"directory_db", "redis", "temporal"}
    assert [s["shard"] for s in body["shards"]] == [0, 1, 2, 3]
    assert all(s["status"] == "ok" for s in body["shards"])


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and "/v2/account" in r.json()["paths"]
