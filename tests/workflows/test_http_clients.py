"""Real clients over a real socket: alpaca-py's ``TradingClient`` (the de-facto Python client:
it sends ``"qty": 3.0`` and parses our responses into its own models) and the README's curl
examples, both against the API served by uvicorn on the test stack."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import TradingStack, headers, served
from tests.workflows.conftest import Backoffice
from tests.workflows.order_helpers import balances, wait_order

README = Path(__file__).resolve().parents[2] / "README.md"
README_BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
async def base_url(stack: TradingStack) -> AsyncIterator[str]:
    """The stack's API app on a loopback port (its lifespan is the stack's, already running)."""
    async with served(stack.app) as url:
        yield url


def trading_client(acct: Any, base_url: str) -> Any:
    from alpaca.trading.client import TradingClient

    return TradingClient(acct.credentials.key_id, acct.credentials.secret_key, paper=True,
                         url_override=base_url)


async def test_alpaca_py_places_reads_lists_and_cancels(stack: TradingStack, base_url: str) -> None:
    from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
    from alpaca.trading.models import Order, Position, TradeAccount
    from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("100000")
    tc = trading_client(acct, base_url)

    market = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
        symbol="AAPL", qty=3.0, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert isinstance(market, Order) and market.qty == "3"
    await wait_order(stack, acct, str(market.id), {"filled"})
    got = await asyncio.to_thread(tc.get_order_by_id, market.id)
    assert isinstance(got, Order) and got.status == OrderStatus.FILLED and got.filled_qty == "3"

    limit = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
        symbol="AAPL", qty=2, limit_price=1.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        client_order_id="alpaca-py-limit"))
    assert limit.limit_price == "1.5" or limit.limit_price == "1.50"
    by_coid = await asyncio.to_thread(tc.get_order_by_client_id, "alpaca-py-limit")
    assert by_coid.id == limit.id
    await wait_order(stack, acct, str(limit.id), {"new"})

    listed = await asyncio.to_thread(tc.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL, limit=10))
    assert {o.id for o in listed} == {market.id, limit.id}
    open_ = await asyncio.to_thread(tc.get_orders)
    assert [o.id for o in open_] == [limit.id]

    await asyncio.to_thread(tc.cancel_order_by_id, limit.id)
    await wait_order(stack, acct, str(limit.id), {"canceled"})

    account = await asyncio.to_thread(tc.get_account)
    assert isinstance(account, TradeAccount) and str(account.id) == str(acct.account_id)
    positions = await asyncio.to_thread(tc.get_all_positions)
    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", "3")]
    assert isinstance(positions[0], Position)
    position = await asyncio.to_thread(tc.get_open_position, "AAPL")
    assert position.qty == "3"
    assert "cash_held" not in await balances(stack, acct)


async def test_alpaca_py_sees_a_refusal_as_an_api_error(stack: TradingStack, base_url: str) -> None:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("100000")
    tc = trading_client(acct, base_url)
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
            symbol="AAPL", qty=1e26, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert err.value.status_code == 422 and "qty_out_of_range" in str(err.value)
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
            order_class="bracket", take_profit=TakeProfitRequest(limit_price=170),
            stop_loss=StopLossRequest(stop_price=180)))  # a take-profit below the stop
    assert err.value.status_code == 422 and "invalid_take_profit" in str(err.value)
    assert await balances(stack, acct) == {"cash": 100000}


def readme_curls() -> tuple[str, list[str]]:
    """The README's ``H=(...)`` line and its curl commands (continuation lines joined)."""
    text = README.read_text()
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    h = next(line for line in lines if line.startswith("H=("))
    curls = [line.split("  #")[0] for line in lines if line.startswith("curl ")]
    return h, curls


async def test_the_readme_curl_examples_work(stack: TradingStack, base_url: str,
                                             backoffice: Backoffice) -> None:
    """Each curl line of the README, run by bash and curl as written (curl -d sends
    application/x-www-form-urlencoded), then the same request with no Content-Type at all."""
    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("100000")
    h, curls = readme_curls()
    assert any("/v2/orders" in c for c in curls) and any("/v2/transfers" in c for c in curls)
    for curl in curls:
        script = f"{h}\n{curl.replace(README_BASE, base_url)} -w '\\n%{{http_code}}'"
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"KEY_ID": acct.credentials.key_id, "SECRET_KEY": acct.credentials.secret_key,
                 "PATH": "/usr/bin:/bin"})
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        body, _, status = out.decode().rpartition("\n")
        assert status == "200", (curl, status, body, err)

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for curl in curls:
            words = shlex.split(curl)
            if "-d" not in words:
                continue
            url = words[words.index("POST") + 1].replace(README_BASE, "")
            data = words[words.index("-d") + 1]
            req = http.build_request("POST", url, content=data.encode(), headers=headers(acct))
            assert "content-type" not in req.headers
            r = await http.send(req)
            assert r.status_code == 200, (curl, r.text)
