"""Trailing stops over the real stack: held at the broker (status ``new``, the hold taken), the
hwm and stop followed from published quotes and shown by GET, fired at the first quote that
crosses the stop, routed as a market order, filled and booked; canceled while waiting with
the hold released; durable across a SIGKILLed shard worker; through alpaca-py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from fix.codes import OrdType
from tests.db.audit_books import audit_rows_about
from tests.stack import TradingStack, headers, served
from tests.workflows.order_helpers import balances, events, place, post_order, wait_order
from tests.workflows.replay import replay_past_the_import_race
from tests.workflows.test_http_clients import trading_client

D = Decimal


async def publish_quote(stack: TradingStack, symbol: str, bid: str, ask: str) -> None:
    """A quote as ingest leaves it: the latest-quote hash (and the venues' book), then the
    symbol's pub/sub channel."""
    await stack.set_quote(symbol, bid, ask)
    keys = stack.settings.redis_prefix
    await stack.redis.publish(f"{keys}:md:{symbol}", json.dumps(
        {"T": "q", "S": symbol, "bp": bid, "ap": ask, "bs": 1, "as": 1,
         "it": time.time_ns()}))


async def wait_for(stack: TradingStack, acct: Any, order_id: str, what: str,
                   cond: Any, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with stack.http() as http:
        while True:
            r = await http.get(f"/v2/orders/{order_id}", headers=headers(acct))
            assert r.status_code == 200, r.text
            body = r.json()
            if cond(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"order never showed {what}: {body}")
            await asyncio.sleep(0.05)


async def holding(stack: TradingStack, symbol: str, qty: int, bid: str, ask: str) -> Any:
    await stack.set_quote(symbol, bid, ask)
    acct = await stack.account("100000")
    order = await place(stack, acct, symbol=symbol, qty=str(qty), side="buy", type="market",
                        time_in_force="day")
    await wait_order(stack, acct, order["id"], {"filled"})
    return acct


async def trigger_event(stack: TradingStack, shard: int, order_id: str) -> dict[str, Any]:
    async with stack.router.engine(shard).connect() as conn:
        row = (await conn.execute(text(
            "SELECT data FROM order_events WHERE order_id = :o AND event = 'triggered'"),
            {"o": uuid.UUID(order_id)})).one()
    return dict(row.data)


async def test_a_trailing_sell_follows_the_bid_fires_at_the_crossing_and_fills(stack: TradingStack) -> None:
    acct = await holding(stack, "TSLA", 10, "200.00", "200.05")
    order = await place(stack, acct, symbol="TSLA", qty="10", side="sell", type="trailing_stop",
                        time_in_force="gtc", trail_price="2.50")
    assert order["status"] == "new" and order["state"] == "FUNDS_HELD", order
    assert order["type"] == "trailing_stop" and order["trail_price"] == "2.5"
    assert order["trail_percent"] is None
    bal = await balances(stack, acct)
    assert bal["shares_held:TSLA"] == 10
    oid = order["id"]
    # the watch is live: it read the latest quote (and is subscribed since before it did)
    await wait_for(stack, acct, oid, "hwm 200", lambda o: o["hwm"] == "200")
    await publish_quote(stack, "TSLA", "203.00", "203.05")
    seen = await wait_for(stack, acct, oid, "hwm 203", lambda o: o["hwm"] == "203")
    assert seen["stop_price"] == "200.5" and seen["status"] == "new"
    await publish_quote(stack, "TSLA", "201.00", "201.05")  # down, not to the stop
    await publish_quote(stack, "TSLA", "204.00", "204.05")  # a new high
    await wait_for(stack, acct, oid, "hwm 204", lambda o: o["hwm"] == "204")
    await publish_quote(stack, "TSLA", "201.51", "201.60")  # a cent above the stop 201.50
    await publish_quote(stack, "TSLA", "201.50", "201.55")  # the crossing
    done = await wait_order(stack, acct, oid, {"filled"})
    assert done["hwm"] == "204" and done["stop_price"] == "201.5"
    assert done["filled_qty"] == "10"
    fired = await trigger_event(stack, acct.shard, oid)
    assert (fired["bid"], fired["hwm"], fired["stop_price"]) == ("201.50", "204.00", "201.50")
    names = [e for e, _, _ in await events(stack, acct.shard, oid)]
    assert names.index("triggered") < len(names) - 1 and names.count("triggered") == 1, names
    bal = await balances(stack, acct)
    assert "shares_held:TSLA" not in bal and "TSLA" not in {k.split(":")[-1] for k in bal
                                                            if k.startswith("shares:")}
    # the venue saw a market order
    venue_order = next(o for mm in stack.venues.values() if (o := mm.engine.order(oid)) is not None)
    assert venue_order.ord_type == OrdType.MARKET and venue_order.stop_px is None, venue_order
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)


async def test_a_trailing_buy_holds_the_ask_plus_trail_and_a_cancel_releases_it(stack: TradingStack) -> None:
    await stack.set_quote("NFLX", "400.00", "400.10")
    acct = await stack.account("100000")
    order = await place(stack, acct, symbol="NFLX", qty="5", side="buy", type="trailing_stop",
                        time_in_force="day", trail_percent="1")
    assert order["status"] == "new" and order["trail_percent"] == "1"
    held = (await balances(stack, acct))["cash_held"]
    assert held == (D(5) * D("400.10") * D("1.01") * D("1.05")).quantize(D("0.01"), rounding="ROUND_CEILING")
    await wait_for(stack, acct, order["id"], "hwm", lambda o: o["hwm"] == "400.1")
    await publish_quote(stack, "NFLX", "398.00", "398.10")  # a buy follows the ask down
    shown = await wait_for(stack, acct, order["id"], "hwm 398.1", lambda o: o["hwm"] == "398.1")
    assert shown["stop_price"] == "402.09"  # 398.10 x 1.01 = 402.081 -> up to the cent
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
    assert r.status_code == 204, r.text
    done = await wait_order(stack, acct, order["id"], {"canceled"}, timeout=5)
    assert done["state"] == "CANCELED"
    assert "cash_held" not in await balances(stack, acct)
    # the watch stopped: a crossing quote now changes nothing
    await publish_quote(stack, "NFLX", "410.00", "410.10")
    assert not any(mm.engine.order(order["id"]) for mm in stack.venues.values())
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)


async def test_a_day_trailing_stop_expires_at_the_close_with_nothing_sent(stack: TradingStack) -> None:
    await stack.set_quote("INTC", "30.00", "30.02")
    acct = await stack.account("5000")
    svc_settings = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc_settings.model_copy(update={"day_order_ttl_s": 1.0})
    try:
        order = await place(stack, acct, symbol="INTC", qty="10", side="buy", type="trailing_stop",
                            time_in_force="day", trail_price="0.50")
    finally:
        stack.app.state.sherwood.settings = svc_settings
    done = await wait_order(stack, acct, order["id"], {"expired"}, timeout=10)
    assert done["state"] == "EXPIRED" and done["filled_qty"] == "0" and done["venue"] is None
    assert (await balances(stack, acct)) == {"cash": Decimal("5000")}
    assert not any(mm.engine.order(order["id"]) for mm in stack.venues.values())


async def patch(stack: TradingStack, acct: Any, oid: str, body: dict[str, Any]) -> Any:
    async with stack.http() as http:
        return await http.patch(f"/v2/orders/{oid}", headers=headers(acct), json=body)


async def test_a_waiting_trailing_stop_is_replaced_at_the_broker_and_rearmed(stack: TradingStack) -> None:
    """PATCH ``trail`` (and qty) of a waiting trailing sell: a new order replaces it at once
    (no venue), holding the shares its qty needs, watching from the original's hwm with the new
    trail; it fires at the new stop and fills; the books hold."""
    acct = await holding(stack, "MSFT", 5, "150.00", "150.05")
    order = await place(stack, acct, symbol="MSFT", qty="3", side="sell", type="trailing_stop",
                        time_in_force="gtc", trail_price="1")
    oid = order["id"]
    await publish_quote(stack, "MSFT", "152.00", "152.05")
    await wait_for(stack, acct, oid, "hwm 152", lambda o: o["hwm"] == "152")
    r = await patch(stack, acct, oid, {"trail": "3", "qty": "4"})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["replaces"] == oid and new["id"] != oid, new
    assert (new["status"], new["type"], new["trail_price"], new["qty"]) == ("new", "trailing_stop", "3", "4")
    assert (new["hwm"] == "152" and new["stop_price"] is None) or new["stop_price"] == "149"
    old = await wait_order(stack, acct, oid, {"replaced"}, timeout=5)
    assert old["replaced_by"] == new["id"]
    assert (await balances(stack, acct))["shares_held:MSFT"] == 4
    # 150.50 would have crossed the old stop (151): the new one is 152 - 3 = 149
    await publish_quote(stack, "MSFT", "150.50", "150.55")
    await wait_for(stack, acct, new["id"], "stop 149", lambda o: o["stop_price"] == "149")
    await publish_quote(stack, "MSFT", "149.00", "149.05")
    done = await wait_order(stack, acct, new["id"], {"filled"})
    assert done["filled_qty"] == "4"
    assert (await trigger_event(stack, acct.shard, new["id"]))["bid"] == "149.00"
    assert not any(k.endswith(":MSFT") and k.startswith("shares_held") for k in await balances(stack, acct))
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)


async def test_replacing_a_trailing_buy_resizes_its_hold_or_is_refused_with_nothing_changed(
        stack: TradingStack) -> None:
    await stack.set_quote("GOOGL", "100.00", "100.10")
    acct = await stack.account("2000")
    order = await place(stack, acct, symbol="GOOGL", qty="10", side="buy", type="trailing_stop",
                        time_in_force="day", trail_percent="1")
    oid = order["id"]
    await wait_for(stack, acct, oid, "hwm", lambda o: o["hwm"] == "100.1")
    held = (await balances(stack, acct))["cash_held"]
    # more than the account can hold: 403, nothing changes, it keeps watching
    r = await patch(stack, acct, oid, {"qty": "30"})
    assert r.status_code == 403 and r.json()["reason"] == "insufficient_buying_power", r.text
    assert (await balances(stack, acct))["cash_held"] == held
    for body, reason in (({"trail": "100"}, "trail_out_of_range"), ({"trail": "0.001"}, "invalid_trail"),
                         ({"limit_price": "99"}, "replace_not_supported"),
                         ({"trail": "1"}, "nothing_to_replace")):
        r = await patch(stack, acct, oid, body)
        assert r.status_code == 422 and r.json()["reason"] == reason, (body, r.text)
    await publish_quote(stack, "GOOGL", "99.00", "99.05")
    await wait_for(stack, acct, oid, "hwm 99.05", lambda o: o["hwm"] == "99.05")
    # a smaller order with a tighter trail: the hold shrinks to 5 x (ask + 0.5%) x 1.05
    r = await patch(stack, acct, oid, {"qty": "5", "trail": "0.5"})
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["trail_percent"], new["hwm"], new["status"]) == ("0.5", "99.05", "new")
    expect = (D(5) * D("99.05") * D("1.005") * D("1.05")).quantize(D("0.01"), rounding="ROUND_CEILING")
    assert (await balances(stack, acct))["cash_held"] == expect
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{new['id']}", headers=headers(acct))).status_code == 204
    await wait_order(stack, acct, new["id"], {"canceled"})
    assert (await wait_order(stack, acct, oid, {"replaced"}))["replaced_by"] == new["id"]
    assert "cash_held" not in await balances(stack, acct)
    assert (await stack.router.ledger(acct.shard).reconcile()).ok
    assert not await audit_rows_about(stack.router, acct)


async def test_a_firing_whose_answer_was_lost_stands_on_the_retry(
        stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch records the firing, then its attempt fails before answering (a worker lost
    mid-step); by the retry the price is back above the stop. The firing recorded stands: the
    order routes and fills, once."""
    from activities.trigger import TriggerActivities
    from db.errors import ShardUnavailable

    acct = await holding(stack, "AMZN", 2, "180.00", "180.05")
    real = TriggerActivities._fire
    lost: list[str] = []

    async def fire_then_fail(self: Any, order_id: str, spec: Any, quote: Any) -> Any:
        if order_id != oid or lost:
            return await real(self, order_id, spec, quote)
        await real(self, order_id, spec, quote)  # recorded ...
        lost.append(order_id)
        await publish_quote(stack, "AMZN", "181.00", "181.05")  # back above the stop
        raise ShardUnavailable("the answer was lost")

    monkeypatch.setattr(TriggerActivities, "_fire", fire_then_fail)
    order = await place(stack, acct, symbol="AMZN", qty="2", side="sell", type="trailing_stop",
                        time_in_force="gtc", trail_price="1")
    oid = order["id"]
    await wait_for(stack, acct, oid, "hwm 180", lambda o: o["hwm"] == "180")
    await publish_quote(stack, "AMZN", "179.00", "179.05")
    done = await wait_order(stack, acct, oid, {"filled"}, timeout=20)
    assert lost == [oid] and done["stop_price"] == "179"
    names = [e for e, _, _ in await events(stack, acct.shard, oid)]
    assert names.count("triggered") == 1, names


async def test_stale_and_missing_quotes_never_fire(stack: TradingStack) -> None:
    acct = await holding(stack, "AMD", 3, "100.00", "100.05")
    order = await place(stack, acct, symbol="AMD", qty="3", side="sell", type="trailing_stop",
                        time_in_force="gtc", trail_price="1")
    oid = order["id"]
    await wait_for(stack, acct, oid, "hwm 100", lambda o: o["hwm"] == "100")
    # an old quote (ingest stamped it long ago) far below the stop, then garbage
    await stack.redis.publish(f"{stack.settings.redis_prefix}:md:AMD", json.dumps(
        {"T": "q", "S": "AMD", "bp": "50", "ap": "50.05", "it": time.time_ns() - 3600 * 10**9}))
    await stack.redis.publish(f"{stack.settings.redis_prefix}:md:AMD", b"not json")
    await stack.redis.publish(f"{stack.settings.redis_prefix}:md:AMD", json.dumps(
        {"T": "t", "S": "AMD", "p": "1"}))  # a trade, not a quote
    # proof by state: a later fresh quote moves the hwm, so everything before it was read
    await publish_quote(stack, "AMD", "100.50", "100.55")
    body = await wait_for(stack, acct, oid, "hwm 100.5", lambda o: o["hwm"] == "100.5")
    assert body["status"] == "new" and "triggered" not in [e for e, _, _ in await events(
        stack, acct.shard, oid)]
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{oid}", headers=headers(acct))
    await wait_order(stack, acct, oid, {"canceled"})


async def _watch_heartbeat(stack: TradingStack, oid: str, hwm: str, timeout: float = 20) -> None:
    """Wait until the watching activity's last heartbeat (what a retry resumes from) has ``hwm``."""
    handle = stack.temporal.get_workflow_handle(oid)
    deadline = time.monotonic() + timeout
    while True:
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if pa.activity_type.name == "watch_trigger" and pa.heartbeat_details.payloads:
                details = await stack.temporal.data_converter.decode(pa.heartbeat_details.payloads)
                if details and details[0].get("hwm") == hwm:
                    return
        if time.monotonic() > deadline:
            raise AssertionError(f"no heartbeat with hwm {hwm}")
        await asyncio.sleep(0.1)


async def _watch_restarted(stack: TradingStack, oid: str, timeout: float = 60) -> None:
    """Wait until a new attempt of the watch runs and has heartbeated (it is subscribed)."""
    handle = stack.temporal.get_workflow_handle(oid)
    deadline = time.monotonic() + timeout
    while True:
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if (pa.activity_type.name == "watch_trigger" and pa.attempt >= 2
                    and pa.HasField("last_heartbeat_time") and pa.HasField("last_started_time")
                    and pa.last_heartbeat_time.ToDatetime() >= pa.last_started_time.ToDatetime()):
                return
        if time.monotonic() > deadline:
            raise AssertionError("the watch was not retried on the restarted worker")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_waiting_trailing_stop_survives_a_sigkilled_shard_worker(stack: TradingStack) -> None:
    """The shard worker process is SIGKILLed while a trailing stop waits; quotes published
    after its restart fire it at the first one crossing the stop computed from the hwm it had
    before the kill (not from the quotes after it), and it fills."""
    import signal
    import sys

    from workers.shard import ShardWorkers

    acct = await holding(stack, "NVDA", 4, "100.00", "100.05")
    s = stack.settings
    env = stack.env(SHERWOOD_TRIGGER_POLL_S="0.2", SHERWOOD_TRIGGER_WRITE_INTERVAL_S="0.1",
                    SHERWOOD_QUOTE_MAX_AGE_S=str(s.quote_max_age_s))

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sherwood", "serve", "shard-worker", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    await stack.workers.stop()
    proc = await spawn()
    try:
        async with stack.http() as http:  # a 504 while the new process starts: retried
            r = await post_order(http, "/v2/orders", headers(acct), {
                "symbol": "NVDA", "qty": "4", "side": "sell", "type": "trailing_stop",
                "time_in_force": "gtc", "trail_price": "3"})
        assert r.status_code == 200, r.text
        oid = r.json()["id"]
        await wait_for(stack, acct, oid, "hwm 100", lambda o: o["hwm"] == "100", timeout=30)
        await publish_quote(stack, "NVDA", "110.00", "110.05")  # hwm 110, stop 107
        await wait_for(stack, acct, oid, "hwm 110", lambda o: o["hwm"] == "110")
        await _watch_heartbeat(stack, oid, "110.00")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await stack.set_quote("NVDA", "108.00", "108.05")  # while it is down: above the stop
        proc = await spawn()
        await _watch_restarted(stack, oid)
        # from a fresh start (hwm 108) the stop would be 105: 107.50 and 107.00 would not fire
        await publish_quote(stack, "NVDA", "107.50", "107.55")
        await publish_quote(stack, "NVDA", "107.00", "107.05")  # the crossing of 110 - 3
        await publish_quote(stack, "NVDA", "106.00", "106.05")
        done = await wait_order(stack, acct, oid, {"filled"}, timeout=30)
        assert done["hwm"] == "110" and done["stop_price"] == "107"
        fired = await trigger_event(stack, acct.shard, oid)
        assert fired["bid"] == "107.00", fired
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        stack.workers = ShardWorkers(s, list(range(s.shard_count)), client=stack.temporal)
        await stack.workers.start()
    assert (await stack.router.ledger(acct.shard).reconcile()).ok


@pytest.fixture(scope="module")
async def base_url(stack: TradingStack) -> AsyncIterator[str]:
    async with served(stack.app) as url:
        yield url


async def test_alpaca_py_places_a_trailing_stop_and_reads_its_hwm(stack: TradingStack, base_url: str) -> None:
    from alpaca.trading.enums import OrderSide, OrderStatus, OrderType, TimeInForce
    from alpaca.trading.requests import TrailingStopOrderRequest

    acct = await holding(stack, "META", 2, "500.00", "500.20")
    tc = trading_client(acct, base_url)
    placed = await asyncio.to_thread(tc.submit_order, TrailingStopOrderRequest(
        symbol="META", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, trail_percent=1.5))
    assert placed.type == OrderType.TRAILING_STOP and placed.status == OrderStatus.NEW
    assert placed.trail_percent == "1.5"
    await wait_for(stack, acct, str(placed.id), "hwm", lambda o: o["hwm"] == "500")
    got = await asyncio.to_thread(tc.get_order_by_id, placed.id)
    assert got.hwm == "500" and got.stop_price == "492.5"  # 500 x 0.985
    await publish_quote(stack, "META", "492.50", "492.60")
    await wait_order(stack, acct, str(placed.id), {"filled"})
    got = await asyncio.to_thread(tc.get_order_by_id, placed.id)
    assert got.status == OrderStatus.FILLED and got.filled_qty == "2"


# --- versions: the trailing-stop patch -----------------------------------------------------

def _patches(path: Any) -> set[str]:
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import WorkflowHistory

    history = WorkflowHistory.from_json(path.stem, path.read_text())
    out: set[str] = set()
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            data = e.marker_recorded_event_attributes.details.get("patch-data")
            if data is not None and data.payloads:  # {"id": <patch id>, "deprecated": ...}
                out.add(json.loads(data.payloads[0].data)["id"])
    return out


async def test_order_histories_recorded_before_the_patch_replay_and_trailing_ones_carry_it() -> None:
    """Order histories recorded before trailing stops existed replay under this code (they never
    reach the patched path: no marker), and the recorded trailing stops replay (sandboxed)
    with the ``trailing-stop`` marker."""
    from pathlib import Path

    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from sherwood.temporal import DATA_CONVERTER
    from workflows.order import TRAILING_STOP, OrderWorkflow

    here = Path(__file__).parent / "histories"
    before = [here / f"{n}.json" for n in ("sell_filled", "limit_resting_then_canceled",
                                          "queued_then_filled_at_the_open", "day_order_expired",
                                          "replaced")]
    trailing = sorted(here.glob("trailing_stop_*.json"))
    assert len(trailing) >= 2
    for path in before + trailing:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replay_past_the_import_race(
            lambda h=history: Replayer(workflows=[OrderWorkflow], data_converter=DATA_CONVERTER)
            .replay_workflow(h, raise_on_replay_failure=False))
        assert result.replay_failure is None, (path.stem, result.replay_failure)
        assert (TRAILING_STOP in _patches(path)) == (path in trailing), path.stem
