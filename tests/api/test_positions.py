"""GET /v2/positions and /v2/positions/{symbol}: exact quantities from the ledger, average cost
from the fills, marks from the latest quote (bid) or the last fill."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
from redis.asyncio import Redis

from api.services.positions import long_market_values
from db.accounts import OpenedAccount, open_account
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.assets import get_asset
from domain.orders import AcceptOrderInput, OrderState, parse_order_request
from marketdata.quotes import LatestQuotes
from sherwood.settings import Settings
from tests.venue_reports import fix_report

POSITION_KEYS = {"asset_id", "symbol", "exchange", "asset_class", "avg_entry_price", "qty", "side",
                 "cost_basis", "market_value", "unrealized_pl", "unrealized_plpc", "current_price",
                 "qty_available"}


def auth(acct: OpenedAccount) -> dict[str, str]:
    return {"APCA-API-KEY-ID": acct.credentials.key_id,
            "APCA-API-SECRET-KEY": acct.credentials.secret_key}


async def funded(router: ShardRouter, cash: str = "100000") -> OpenedAccount:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"dep:{acct.account_id}", acct.account_id, cash)
    await ledger.settle_deposit(f"dep:{acct.account_id}:settled", acct.account_id, cash)
    return acct


async def trade(
    router: ShardRouter, acct: OpenedAccount, symbol: str, side: str, qty: int, limit: str,
    fills: list[tuple[int, str]], *, venue: str = "MM1",
) -> str:
    """Place a limit order through the order store, route it, ack it and book ``fills``."""
    store = OrderStore(router.engine(acct.shard))
    oid = str(uuid.uuid4())
    req = {"symbol": symbol, "side": side, "type": "limit", "time_in_force": "gtc", "qty": str(qty),
           "limit_price": limit}
    snap = await store.accept(
        AcceptOrderInput(oid, str(acct.account_id), req, parse_order_request(req).hash(), "customer",
                         "0.05"), Quotes(ask=Decimal(limit)))
    assert snap.state == "FUNDS_HELD", snap
    await store.transition(oid, OrderState.ROUTED, reason="test", venue=venue)
    await store.apply_report(fix_report(venue, f"{oid}:ack", "8", oid, oid, "0", "0",
                                                   venue_order_id=f"V{oid[:8]}", leaves_qty=str(qty)))
    cum = 0
    for n, (q, px) in enumerate(fills):
        cum += q
        await store.apply_report(fix_report(
            venue, f"{oid}:F{n}", "8", oid, oid, "F", "2" if cum == qty else "1", last_qty=str(q),
            last_px=px, cum_qty=str(cum), leaves_qty=str(qty - cum), avg_px=px))
    return oid


async def settle_shares(router: ShardRouter, acct: OpenedAccount, symbol: str, qty: int) -> None:
    await router.ledger(acct.shard).settle(f"settle:{acct.account_id}:{symbol}:{qty}", acct.account_id,
                                           shares={symbol: qty})


def quotes_of(redis: Redis, settings: Settings) -> LatestQuotes:
    return LatestQuotes(redis, settings.redis_prefix)


async def test_positions_after_buys_and_a_partial_sell(
    client: httpx.AsyncClient, router: ShardRouter, redis: Redis, migrated: Settings,
) -> None:
    acct = await funded(router)
    await trade(router, acct, "NFLX", "buy", 10, "100.00", [(10, "100.00")])
    await trade(router, acct, "NFLX", "buy", 5, "107.00", [(2, "106.00"), (3, "106.00")])
    await settle_shares(router, acct, "NFLX", 15)
    # a sell of 10, partially filled (6): 4 shares stay held for the open remainder
    await trade(router, acct, "NFLX", "sell", 10, "109.00", [(6, "110.00")])
    await trade(router, acct, "NFLX", "buy", 1, "103.00", [(1, "102.50")])  # unsettled
    quotes = quotes_of(redis, migrated)
    await quotes.put("NFLX", Decimal("105.5"), Decimal("105.7"))

    r = await client.get("/v2/positions/NFLX", headers=auth(acct))
    assert r.status_code == 200, r.text
    p = r.json()
    assert POSITION_KEYS <= set(p)
    # 10 + 5 bought at 100 / 106 -> average 102; 6 sold at that average -> 9 left at 102;
    # 1 more at 102.50 -> 10 shares costing 918 + 102.5 = 1020.5
    # available to sell: everything no open sell holds, bought-but-unsettled shares included
    assert p["qty"] == "10" and p["qty_available"] == "6"
    assert p["qty_held"] == "4" and p["qty_unsettled"] == "1"
    assert p["avg_entry_price"] == "102.05" and p["cost_basis"] == "1020.5"
    assert p["current_price"] == "105.5" and p["price_source"] == "bid"
    assert p["market_value"] == "1055" and p["unrealized_pl"] == "34.5"
    assert p["unrealized_plpc"] == "0.033807"  # 34.5 / 1020.5 = 0.0338069...
    assert p["side"] == "long" and p["asset_class"] == "us_equity" and p["exchange"] == "NASDAQ"
    assert p["asset_id"] == str(get_asset("NFLX").id)

    r = await client.get("/v2/positions", headers=auth(acct))
    assert r.status_code == 200 and r.json() == [p]
    # by asset id too, and lowercase
    for key in (str(get_asset("NFLX").id), "nflx"):
        r = await client.get(f"/v2/positions/{key}", headers=auth(acct))
        assert r.status_code == 200 and r.json() == p

    # the ledger agrees: qty is exactly shares + held + unsettled
    balances = await router.ledger(acct.shard).balances(acct.account_id)
    assert sum(balances.get(f"{k}:NFLX", Decimal(0))
               for k in ("shares", "shares_held", "shares_unsettled")) == 10

    lmv = await long_market_values(router, acct.account_id, quotes)
    assert lmv == {"NFLX": Decimal("1055")}


async def test_without_a_quote_the_last_fill_marks_the_position(
    client: httpx.AsyncClient, router: ShardRouter, redis: Redis, migrated: Settings,
) -> None:
    acct = await funded(router)
    quotes = quotes_of(redis, migrated)
    await redis.hdel(quotes.key, "SIRI", "TLRY")
    await trade(router, acct, "SIRI", "buy", 300, "3.20", [(100, "3.10"), (200, "3.16")])
    await trade(router, acct, "TLRY", "buy", 7, "1.80", [(7, "1.7125")])
    r = await client.get("/v2/positions", headers=auth(acct))
    assert r.status_code == 200, r.text
    siri, tlry = r.json()
    assert siri["symbol"] == "SIRI" and tlry["symbol"] == "TLRY"
    assert siri["qty"] == "300" and siri["qty_available"] == "300" and siri["qty_unsettled"] == "300"
    assert siri["avg_entry_price"] == "3.14" and siri["cost_basis"] == "942"
    assert siri["current_price"] == "3.16" and siri["price_source"] == "last_fill"
    assert siri["market_value"] == "948" and siri["unrealized_pl"] == "6"
    assert tlry["avg_entry_price"] == "1.7125" and tlry["cost_basis"] == "11.9875"
    assert tlry["market_value"] == "11.9875" and tlry["unrealized_pl"] == "0"
    assert tlry["unrealized_plpc"] == "0"
    # a quote with an empty bid side is no mark either
    await quotes.put("TLRY", Decimal(0), Decimal("1.75"))
    r = await client.get("/v2/positions/TLRY", headers=auth(acct))
    assert r.json()["price_source"] == "last_fill"
    assert await long_market_values(router, acct.account_id, quotes) == {
        "SIRI": Decimal("948"), "TLRY": Decimal("11.9875")}


async def test_no_position_is_404_and_positions_are_per_account(
    client: httpx.AsyncClient, router: ShardRouter,
) -> None:
    a = await funded(router)
    b = await funded(router)
    await trade(router, a, "AMD", "buy", 2, "160.00", [(2, "158.00")])
    r = await client.get("/v2/positions/AMD", headers=auth(b))
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"code", "message", "reason"} and body["code"] == 40410000
    r = await client.get("/v2/positions", headers=auth(b))
    assert r.status_code == 200 and r.json() == []
    r = await client.get("/v2/positions/INTC", headers=auth(a))
    assert r.status_code == 404
    # an order that never filled (only held) is no position
    await trade(router, b, "AMD", "buy", 2, "150.00", [])
    r = await client.get("/v2/positions", headers=auth(b))
    assert r.json() == []


async def test_a_closed_position_disappears(client: httpx.AsyncClient, router: ShardRouter) -> None:
    acct = await funded(router)
    await trade(router, acct, "INTC", "buy", 4, "32.00", [(4, "31.00")])
    await settle_shares(router, acct, "INTC", 4)
    await trade(router, acct, "INTC", "sell", 4, "30.00", [(4, "30.50")])
    r = await client.get("/v2/positions", headers=auth(acct))
    assert r.status_code == 200 and r.json() == []
    assert (await client.get("/v2/positions", headers={})).status_code == 401
