"""Risk controls end to end: buying power under concurrency across API processes, halts while
orders are in flight, close-only restrictions, the pattern-day-trader rule, rate limits shared
by API processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text

from sherwood.embedded import free_port
from tests.stack import TradingStack, headers
from tests.stack import ops_headers as new_ops_headers
from tests.workflows.order_helpers import balances, events, place, post_order, wait_order


@contextlib.asynccontextmanager
async def api_processes(stack: TradingStack, n: int, **extra: str) -> AsyncIterator[list[str]]:
    """``n`` separate API processes (uvicorn) on the test stack; yields their base URLs."""
    ports = [free_port() for _ in range(n)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sherwood", "serve", "api",
        env=stack.env(SHERWOOD_API_PORT=str(p), **extra),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        async with httpx.AsyncClient() as http:
            for url in urls:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, f"{url} did not start"
                    await asyncio.sleep(0.2)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await p.wait()


async def ops_headers(stack: TradingStack) -> dict[str, str]:
    return await new_ops_headers(stack.router)


@pytest.mark.slow
async def test_100_concurrent_buys_across_4_api_processes_hold_exactly_what_is_affordable(
    stack: TradingStack,
) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    async with api_processes(stack, 4) as urls, httpx.AsyncClient(timeout=60) as http:
        async def buy(i: int) -> httpx.Response:
            return await post_order(http, f"{urls[i % 4]}/v2/orders", headers(acct), {
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "150.00",
                "time_in_force": "gtc"})

        results = await asyncio.gather(*(buy(i) for i in range(100)))
    ok = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code == 403]
    assert len(ok) == 66 and len(refused) == 34, [r.status_code for r in results]
    assert all(r.json()["reason"] == "insufficient_buying_power" for r in refused)
    bal = await balances(stack, acct)
    assert bal["cash_held"] == 66 * 150 and bal["cash"] == 100
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    async with stack.http() as h:  # leave no resting orders behind
        await h.delete("/v2/orders", headers=headers(acct))


async def test_rate_limit_holds_across_api_processes(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("100000")
    async with api_processes(stack, 2, SHERWOOD_ORDER_RATE_PER_S="10") as urls, \
            httpx.AsyncClient(timeout=60) as http:
        t0 = time.monotonic()
        results = await asyncio.gather(*(http.post(f"{urls[i % 2]}/v2/orders", headers=headers(acct), json={
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "100.00",
            "time_in_force": "gtc"}) for i in range(40)))
        elapsed = time.monotonic() - t0
    ok = [r for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    assert len(ok) + len(limited) == 40
    assert 10 <= len(ok) <= 10 + int(10 * elapsed) + 1, (len(ok), elapsed)
    body = limited[0].json()
    assert body["reason"] == "rate_limited" and isinstance(body["code"], int)
    assert int(limited[0].headers["Retry-After"]) >= 1
    async with stack.http() as h:
        await h.delete("/v2/orders", headers=headers(acct))


async def test_halt_while_orders_are_in_flight_nothing_routed_after_the_ack(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("100000")
    ops = await ops_headers(stack)
    ids: list[str] = []
    stop = asyncio.Event()

    async def flow() -> None:
        async with stack.http() as http:
            while not stop.is_set():
                r = await http.post("/v2/orders", headers=headers(acct), json={
                    "symbol": "F", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
                if r.status_code == 200:
                    ids.append(r.json()["id"])
                else:
                    assert r.json()["reason"] == "symbol_halted", r.text
                await asyncio.sleep(0.01)

    flows = [asyncio.create_task(flow()) for _ in range(4)]
    try:
        await asyncio.sleep(1.0)
        async with stack.http() as http:
            r = await http.post("/ops/halts", headers=ops, json={"symbol": "F", "reason": "news pending"})
            assert r.status_code == 200 and r.json()["halted"]
        async with stack.router.directory.connect() as conn:  # the same clock as the gateway DB
            acked_at = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*flows)
    try:
        finals = [await wait_order(stack, acct, oid, {"filled", "rejected", "canceled"}) for oid in ids]
        async with stack.gateway.store.engine.connect() as conn:
            sent = (await conn.execute(text(
                "SELECT max(created_at) FROM gateway_orders WHERE msg_type = 'D' AND order_id = ANY(:ids)"),
                {"ids": ids})).scalar_one()
        assert sent is not None and sent < acked_at
        # refused by us (before any hold, or by the gateway before routing) or, for an order routed
        # just before the halt, by the venue, which enforces the halt too
        halted = [o for o in finals if o["status"] == "rejected"]
        assert all(o["reject_code"] == "symbol_halted" or (
            o["reject_code"] == "venue_rejected" and "halt" in (o["reject_reason"] or "").lower())
            for o in halted), [(o["reject_code"], o["reject_reason"]) for o in halted]
        async with stack.http() as http:  # a new order is refused before any hold, with an audit trail
            coid = f"halted-{uuid.uuid4().hex[:6]}"
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "F", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
                "client_order_id": coid})
            assert r.status_code == 403 and "news pending" in r.json()["message"]
            order_id = str((await http.get("/v2/orders:by_client_order_id", headers=headers(acct),
                                           params={"client_order_id": coid})).json()["id"])
        trail = await events(stack, acct.shard, order_id)
        assert trail[-1][2] == "REJECTED"
        async with stack.router.engine(acct.shard).connect() as conn:
            n = (await conn.execute(text("SELECT count(*) FROM ledger_transactions WHERE id LIKE :p"),
                                    {"p": f"order:{order_id}:%"})).scalar_one()
        assert n == 0  # no ledger change for a rejection
    finally:
        async with stack.http() as http:
            r = await http.delete("/ops/halts/F", headers=ops, params={"reason": "news out"})
            assert r.status_code == 204, r.text
    await asyncio.sleep(0.1)
    filled = await place(stack, acct, symbol="F", qty="1", side="buy", type="market", time_in_force="day")
    assert (await wait_order(stack, acct, filled["id"], {"filled"}))["status"] == "filled"


async def test_close_only_blocks_buying_but_not_selling(stack: TradingStack) -> None:
    await stack.set_quote("GME", "22.60", "22.70")
    acct = await stack.account("10000")
    bought = await place(stack, acct, symbol="GME", qty="10", side="buy", type="market", time_in_force="day")
    await wait_order(stack, acct, bought["id"], {"filled"})
    ops = await ops_headers(stack)
    async with stack.http() as http:
        r = await http.post("/ops/restrictions", headers=ops, json={
            "symbol": "GME", "restriction": "close_only", "reason": "extreme volatility"})
        assert r.status_code == 200
        assert (await http.post("/ops/restrictions", headers=headers(acct), json={
            "symbol": "GME", "restriction": None})).status_code == 403  # not an ops key
        try:
            await asyncio.sleep(0.1)
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "GME", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
            assert r.status_code == 403 and r.json()["reason"] == "symbol_close_only"
            assert "extreme volatility" in r.json()["message"]
            sell = await place(stack, acct, symbol="GME", qty="4", side="sell", type="market",
                               time_in_force="day")
            assert (await wait_order(stack, acct, sell["id"], {"filled"}))["filled_qty"] == "4"
        finally:
            await http.post("/ops/restrictions", headers=ops,
                            json={"symbol": "GME", "restriction": None, "reason": "over"})


async def test_pattern_day_trader_4th_day_trade_refused(stack: TradingStack) -> None:
    acct = await stack.account("5000")
    for sym, bid, ask in (("F", "12.30", "12.31"), ("SIRI", "3.11", "3.12"), ("NOK", "3.94", "3.95"),
                          ("BB", "2.44", "2.45")):
        await stack.set_quote(sym, bid, ask)
    for n, sym in enumerate(("F", "SIRI", "NOK", "BB")):
        buy = await place(stack, acct, symbol=sym, qty="10", side="buy", type="market", time_in_force="day")
        await wait_order(stack, acct, buy["id"], {"filled"})  # bought today, not settled yet
        async with stack.http() as http:
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": sym, "qty": "10", "side": "sell", "type": "market", "time_in_force": "day"})
            if n < 3:
                assert r.status_code == 200, r.text
                await wait_order(stack, acct, r.json()["id"], {"filled"})
            else:
                assert r.status_code == 403 and r.json()["reason"] == "pattern_day_trader", r.text
            account = (await http.get("/v2/account", headers=headers(acct))).json()
        assert account["daytrade_count"] == min(n + 1, 3)
    assert (await balances(stack, acct))["shares_unsettled:BB"] == Decimal(10)


async def test_stale_ingested_quote_refuses_market_buys_and_limit_orders_trade(stack: TradingStack) -> None:
    """The feed stopped, Redis still up: the last ingested quote ages past quote_max_age_s, so a
    market buy (its hold cannot be sized) is refused with no_quote and changes nothing, while a
    limit buy is accepted."""
    import json

    from sherwood.contracts import RedisKeys

    await stack.set_quote("MSFT", "415.10", "415.20")  # the venues' book
    aged = time.time_ns() - int((stack.settings.quote_max_age_s + 5) * 1e9)
    await stack.redis.hset(RedisKeys(stack.settings.redis_prefix).quotes_latest, "MSFT", json.dumps(
        {"S": "MSFT", "bp": "415.10", "ap": "415.20", "bs": 1, "as": 1, "it": aged,
         "mx": stack.settings.quote_max_age_s}))
    acct = await stack.account("10000")
    before = await balances(stack, acct)
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "MSFT", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
    assert r.status_code == 422 and r.json()["reason"] == "no_quote", r.text
    assert await balances(stack, acct) == before
    order = await place(stack, acct, symbol="MSFT", qty="1", side="buy", type="limit",
                        limit_price="415.20", time_in_force="day")
    assert (await wait_order(stack, acct, order["id"], {"filled"}))["filled_qty"] == "1"


async def test_a_retried_refused_order_gets_the_same_refusal(stack: TradingStack) -> None:
    """A client that retries a request (after a 504 ``order_pending``, say) with the same
    client_order_id gets the answer the request got: a refused order is refused again, never
    returned as if it had been placed."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("100")
    body = {"symbol": "AAPL", "qty": "10", "side": "buy", "type": "limit", "limit_price": "150.00",
            "time_in_force": "gtc", "client_order_id": f"retry-{uuid.uuid4()}"}
    async with stack.http() as http:
        first = await http.post("/v2/orders", headers=headers(acct), json=body)
        again = await http.post("/v2/orders", headers=headers(acct), json=body)
    assert first.status_code == 403 and first.json()["reason"] == "insufficient_buying_power"
    assert (again.status_code, again.json()) == (403, first.json())
    assert await balances(stack, acct) == {"cash": Decimal(100)}
