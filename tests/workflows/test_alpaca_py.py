"""What the customer's client (alpaca-py, unchanged) does against the real stack: the trade
updates stream (``TradingStream``) for orders placed through ``TradingClient``, a stop order
replaced, a market order queued outside the session, assets as Alpaca shapes them. Each test
talks HTTP/WebSocket to the API on a loopback port (``base_url``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from tests.stack import TradingStack
from tests.workflows.order_helpers import balances, wait_order
from tests.workflows.test_http_clients import base_url, trading_client
from tests.workflows.test_order_queued import at_venues, evening

__all__ = ["base_url"]


class Stream:
    """An alpaca-py ``TradingStream`` running in its own thread (as ``run()`` is meant to),
    recording every trade update it parses; ``listening`` is set once our server confirmed the
    subscription (alpaca-py sends ``listen`` but does not wait for the answer)."""

    def __init__(self, acct: Any, url: str) -> None:
        from alpaca.trading.stream import TradingStream

        outer = self

        class Recording(TradingStream):  # type: ignore[misc]
            async def _dispatch(self, msg: dict[str, Any]) -> None:
                if msg.get("stream") == "listening":
                    outer.listening.set()
                await super()._dispatch(msg)

        self.updates: list[Any] = []
        self.listening = threading.Event()
        self.client = Recording(acct.credentials.key_id, acct.credentials.secret_key,
                                url_override=url)

        async def on_update(update: Any) -> None:
            self.updates.append(update)

        self.client.subscribe_trade_updates(on_update)
        self.thread = threading.Thread(target=self.client.run, daemon=True)

    def events(self, order_id: Any) -> list[str]:
        return [event(u) for u in list(self.updates) if str(u.order.id) == str(order_id)]

    async def wait_for(self, order_id: Any, event: str, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while event not in self.events(order_id):
            assert time.monotonic() < deadline, (event, self.events(order_id))
            await asyncio.sleep(0.05)
        return self.events(order_id)


def event(update: Any) -> str:
    """A trade update's event (alpaca-py parses the ones it knows into ``TradeEvent``)."""
    return str(getattr(update.event, "value", update.event))


@asynccontextmanager
async def trade_updates(acct: Any, base: str) -> AsyncIterator[Stream]:
    """The stream, subscribed (our server confirmed it). Every wait here is in a thread: the API
    under test is served by this event loop."""
    stream = Stream(acct, base.replace("http://", "ws://") + "/stream")
    stream.thread.start()
    try:
        assert await asyncio.to_thread(stream.listening.wait, 15), \
            "the stream never confirmed the subscription"
        yield stream
    finally:
        while stream.client._loop is None:  # run() has not started its loop yet
            await asyncio.sleep(0.01)
        await asyncio.to_thread(stream.client.stop)
        await asyncio.to_thread(stream.thread.join, 10)


async def test_trading_stream_receives_the_trade_updates_of_orders_placed_with_trading_client(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.models import TradeUpdate
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("20000")
    tc = trading_client(acct, base_url)
    async with trade_updates(acct, base_url) as stream:
        # new, then replaced (the replacement: new), then canceled
        rest = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
            symbol="AAPL", qty=2, limit_price=150, side=OrderSide.BUY, time_in_force=TimeInForce.GTC))
        await stream.wait_for(rest.id, "new")
        new = await asyncio.to_thread(tc.replace_order_by_id, rest.id,
                                      ReplaceOrderRequest(limit_price=151))
        assert "replaced" in await stream.wait_for(rest.id, "replaced")
        await stream.wait_for(new.id, "new")
        await asyncio.to_thread(tc.cancel_order_by_id, new.id)
        assert "canceled" in await stream.wait_for(new.id, "canceled")
        # partial fills, then the fill: the venue fills one share at a time
        with stack.venues_behave(engine={"fill_slices": [Decimal(1)], "fill_delay": 0.05}):
            mkt = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
                symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
            seen = await stream.wait_for(mkt.id, "fill")
        assert seen.count("partial_fill") == 2, seen
        fills = [u for u in stream.updates if str(u.order.id) == str(mkt.id)
                 and event(u) in ("partial_fill", "fill")]
        assert all(isinstance(u, TradeUpdate) and u.price and u.qty == 1 and u.execution_id
                   for u in fills)
        assert [u.position_qty for u in fills] == [1, 2, 3]
        # rejected by the venue: the symbol is halted there
        for mm in stack.venues.values():
            mm.halt("AAPL")
        try:
            bad = await asyncio.to_thread(tc.submit_order, LimitOrderRequest(
                symbol="AAPL", qty=1, limit_price=150, side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC))
            await stream.wait_for(bad.id, "rejected")
        finally:
            for mm in stack.venues.values():
                mm.resume("AAPL")
    got = {event(u) for u in stream.updates}
    assert {"new", "fill", "partial_fill", "canceled", "rejected", "replaced"} <= got


async def test_trading_client_replaces_a_stop_order(stack: TradingStack, base_url: str) -> None:
    from alpaca.trading.enums import OrderSide, OrderStatus, OrderType, TimeInForce
    from alpaca.trading.requests import ReplaceOrderRequest, StopLimitOrderRequest, StopOrderRequest

    await stack.set_quote("AAPL", "190.00", "190.05")
    acct = await stack.account("20000")
    tc = trading_client(acct, base_url)
    stop = await asyncio.to_thread(tc.submit_order, StopOrderRequest(
        symbol="AAPL", qty=2, stop_price=200, side=OrderSide.BUY, time_in_force=TimeInForce.GTC))
    await wait_order(stack, acct, str(stop.id), {"new"})
    new = await asyncio.to_thread(tc.replace_order_by_id, stop.id, ReplaceOrderRequest(
        qty=3, stop_price=198.5))
    assert (new.replaces, new.order_type, new.qty, new.stop_price) == (stop.id, OrderType.STOP,
                                                                      "3", "198.5")
    await wait_order(stack, acct, str(new.id), {"new"})
    assert (await asyncio.to_thread(tc.get_order_by_id, stop.id)).status == OrderStatus.REPLACED
    stop_limit = await asyncio.to_thread(tc.submit_order, StopLimitOrderRequest(
        symbol="AAPL", qty=1, stop_price=199, limit_price=199.5, side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY))
    await wait_order(stack, acct, str(stop_limit.id), {"new"})
    again = await asyncio.to_thread(tc.replace_order_by_id, stop_limit.id, ReplaceOrderRequest(
        stop_price=197, limit_price=197.5, time_in_force=TimeInForce.GTC))
    assert (again.stop_price, again.limit_price, again.time_in_force) == ("197", "197.5",
                                                                          TimeInForce.GTC)
    await wait_order(stack, acct, str(again.id), {"new"})
    await asyncio.to_thread(tc.cancel_orders)
    await wait_order(stack, acct, str(new.id), {"canceled"})
    await wait_order(stack, acct, str(again.id), {"canceled"})
    assert await balances(stack, acct) == {"cash": 20000}


async def test_trading_client_market_order_outside_the_session_is_queued(
    stack: TradingStack, base_url: str,
) -> None:
    from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    tc = trading_client(acct, base_url)
    async with evening(stack, wait_s=3.0):
        clock = await asyncio.to_thread(tc.get_clock)
        assert not clock.is_open
        o = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
            symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        assert o.status == OrderStatus.ACCEPTED and at_venues(stack, str(o.id)) == []
        assert (await balances(stack, acct))["cash_held"] == Decimal("590.63")
        await wait_order(stack, acct, str(o.id), {"filled"}, timeout=20)
    done = await asyncio.to_thread(tc.get_order_by_id, o.id)
    assert done.status == OrderStatus.FILLED and done.filled_qty == "3"


async def test_trading_client_reads_assets_and_the_account(stack: TradingStack, base_url: str) -> None:
    from alpaca.trading.enums import AssetStatus
    from alpaca.trading.models import Asset, TradeAccount

    acct = await stack.account("1234.5")
    tc = trading_client(acct, base_url)
    asset = await asyncio.to_thread(tc.get_asset, "AAPL")
    assert isinstance(asset, Asset) and asset.symbol == "AAPL" and asset.tradable
    assert asset.status == AssetStatus.ACTIVE
    assert (asset.marginable, asset.shortable, asset.easy_to_borrow) == (False, False, False)
    account = await asyncio.to_thread(tc.get_account)
    assert isinstance(account, TradeAccount)
    assert (account.cash, account.equity, account.last_equity) == ("1234.50", "1234.50", "1234.50")
    assert (account.pending_transfer_in, account.pending_transfer_out) == ("0.00", "0.00")
