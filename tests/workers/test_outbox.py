"""The shard worker's outbox publisher: trade updates reach Redis as soon as the order
transaction commits (the store wakes the publisher), not at the next idle poll."""

from __future__ import annotations

import json
import time

from tests.stack import TradingStack, headers
from workers.outbox import trade_updates_channel


async def test_trade_updates_are_published_when_the_transaction_commits(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("10000")
    pubsub = stack.redis.pubsub()
    await pubsub.subscribe(trade_updates_channel(stack.settings.redis_prefix, str(acct.account_id)))
    try:
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"  # type: ignore[index]
        t0 = time.monotonic()
        async with stack.http() as http:
            r = await http.post("/v2/orders", headers=headers(acct), json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
        assert r.status_code == 200, r.text
        got: list[tuple[float, str]] = []
        while not got or got[-1][1] != "fill":
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, f"no trade update after {got}"
            got.append((time.monotonic() - t0, json.loads(msg["data"])["event"]))
    finally:
        await pubsub.aclose()
    assert [e for _, e in got] == ["accepted", "pending_new", "new", "fill"]
    # the publisher's idle poll is 30 s here: these came with their commits
    assert stack.settings.outbox_idle_s >= 30 and got[-1][0] < 2, got
