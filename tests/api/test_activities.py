"""GET /v2/account/activities[/{activity_type}]: fills and cash movements, newest first, paged."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import httpx

from api.services.activities import fill_uuid
from db.accounts import open_account
from db.router import ShardRouter
from tests.api.test_positions import auth, settle_shares, trade

NY = ZoneInfo("America/New_York")


async def history(router: ShardRouter):
    """deposit 5000, buy 10 AAPL in two fills, deposit 1000 that bounces, sell 4 AAPL (one fill)."""
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"dep1:{acct.account_id}", acct.account_id, "5000")
    await ledger.settle_deposit(f"dep1s:{acct.account_id}", acct.account_id, "5000")  # house only
    buy = await trade(router, acct, "AAPL", "buy", 10, "190.00", [(4, "187.50"), (6, "187.4575")])
    await ledger.deposit(f"dep2:{acct.account_id}", acct.account_id, "1000.25")
    await ledger.bounce_deposit(f"dep2b:{acct.account_id}", acct.account_id, "1000.25")
    await settle_shares(router, acct, "AAPL", 10)
    sell = await trade(router, acct, "AAPL", "sell", 5, "188.00", [(4, "188.10")])
    return acct, buy, sell


async def test_fills_and_cash_movements_newest_first(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct, buy, sell = await history(router)
    r = await client.get("/v2/account/activities", headers=auth(acct))
    assert r.status_code == 200, r.text
    acts = r.json()
    summary = [(a["activity_type"], a.get("type"), a.get("net_amount")) for a in acts]
    assert summary == [
        ("FILL", "partial_fill", None),  # the sell, 4 of 5
        ("CSD", None, "-1000.25"),  # the returned deposit
        ("CSD", None, "1000.25"),
        ("FILL", "fill", None),  # the buy's second fill completes it
        ("FILL", "partial_fill", None),
        ("CSD", None, "5000.00"),
    ]
    ids = [a["id"] for a in acts]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6

    s, _, _, b2, b1, dep = acts
    assert s == {
        "id": s["id"], "activity_type": "FILL", "transaction_time": s["transaction_time"],
        "type": "partial_fill", "price": "188.1", "qty": "4", "side": "sell", "symbol": "AAPL",
        "leaves_qty": "1", "order_id": sell, "cum_qty": "4", "order_status": "partially_filled",
    }
    assert s["id"].endswith(f"::{fill_uuid('MM1', f'{sell}:F0')}")
    assert (b1["qty"], b1["price"], b1["cum_qty"], b1["leaves_qty"], b1["order_status"]) == \
        ("4", "187.5", "4", "6", "partially_filled")
    assert (b2["qty"], b2["price"], b2["cum_qty"], b2["leaves_qty"], b2["order_status"]) == \
        ("6", "187.4575", "10", "0", "filled")
    assert b1["order_id"] == b2["order_id"] == buy and b1["side"] == "buy"
    t = datetime.fromisoformat(s["transaction_time"])
    assert s["transaction_time"].endswith("Z") and t > datetime.fromisoformat(b2["transaction_time"])
    assert dep["date"] == datetime.fromisoformat(dep["transaction_time"]).astimezone(NY).date().isoformat()
    assert dep["description"] == "ACH deposit" and dep["status"] == "executed"
    assert acts[1]["description"] == "ACH deposit returned"

    # ascending is the exact reverse
    r = await client.get("/v2/account/activities", params={"direction": "asc"}, headers=auth(acct))
    assert r.json() == acts[::-1]


async def test_paging_and_filters(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct, _, _ = await history(router)
    everything = (await client.get("/v2/account/activities", headers=auth(acct))).json()
    assert len(everything) == 6

    pages, token = [], None
    while True:
        params = {"page_size": 4, **({"page_token": token} if token else {})}
        page = (await client.get("/v2/account/activities", params=params, headers=auth(acct))).json()
        if not page:
            break
        pages.append(page)
        token = page[-1]["id"]
    assert [len(p) for p in pages] == [4, 2]
    assert [a for p in pages for a in p] == everything

    asc, token = [], None
    while True:
        params = {"page_size": 1, "direction": "asc", **({"page_token": token} if token else {})}
        page = (await client.get("/v2/account/activities", params=params, headers=auth(acct))).json()
        if not page:
            break
        asc += page
        token = page[-1]["id"]
    assert asc == everything[::-1]

    r = await client.get("/v2/account/activities/FILL", headers=auth(acct))
    assert [a["activity_type"] for a in r.json()] == ["FILL"] * 3
    r = await client.get("/v2/account/activities/csd", headers=auth(acct))
    assert [a["net_amount"] for a in r.json()] == ["-1000.25", "1000.25", "5000.00"]
    r = await client.get("/v2/account/activities", params={"activity_types": "CSD,FILL"},
                         headers=auth(acct))
    assert r.json() == everything
    r = await client.get("/v2/account/activities/CSW", headers=auth(acct))
    assert r.status_code == 200 and r.json() == []
    r = await client.get("/v2/account/activities/DIV", headers=auth(acct))  # an Alpaca type we lack
    assert r.status_code == 200 and r.json() == []

    # after / until are exclusive bounds on the activity time
    times = [a.get("transaction_time") for a in everything]
    r = await client.get("/v2/account/activities",
                         params={"after": times[4], "until": times[0]}, headers=auth(acct))
    assert r.json() == everything[1:4]
    today = datetime.fromisoformat(times[0]).astimezone(NY).date().isoformat()
    r = await client.get("/v2/account/activities", params={"date": today}, headers=auth(acct))
    assert r.json() == everything


async def test_bad_parameters_use_the_error_shape(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct = await open_account(router)
    for params in ({"page_size": 0}, {"direction": "up"},
                   {"activity_types": "FILL,NOPE"}, {"page_token": "garbage"}, {"after": "yesterday"}):
        r = await client.get("/v2/account/activities", params=params, headers=auth(acct))
        assert r.status_code == 422, (params, r.text)
        assert set(r.json()) == {"code", "message", "reason"} and r.json()["code"] == 42210000
    r = await client.get("/v2/account/activities/NOPE", headers=auth(acct))
    assert r.status_code == 422
    r = await client.get("/v2/account/activities", params={"page_size": 101}, headers=auth(acct))
    assert r.status_code == 200  # clamped to the maximum, as Alpaca does
    r = await client.get("/v2/account/activities", headers=auth(acct))
    assert r.status_code == 200 and r.json() == []
    assert (await client.get("/v2/account/activities")).status_code == 401


async def test_activities_are_per_account(client: httpx.AsyncClient, router: ShardRouter) -> None:
    a, _, _ = await history(router)
    b = await open_account(router)
    r = await client.get("/v2/account/activities", headers=auth(b))
    assert r.status_code == 200 and r.json() == []
    assert len((await client.get("/v2/account/activities", headers=auth(a))).json()) == 6
