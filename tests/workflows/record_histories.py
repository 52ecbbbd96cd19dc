"""Records order-workflow histories for the replay test (``test_recorded_histories.py``).

Not collected by the suite (its name does not start with ``test_``). Run it explicitly, against
the code whose histories you want to keep, when a change to the order workflow must stay
compatible with orders already running::

    .venv/bin/pytest -q tests/workflows/record_histories.py

Each scenario writes ``tests/workflows/histories/<name>.json`` (the workflow's full history as
the Temporal server returned it). Commit the files: every later version of the workflow must
replay them unchanged, which is what a worker restarting mid-order under new code does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.orders import ResolveInput
from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import place, wait_order

HERE = Path(__file__).parent / "histories"


async def save(stack: TradingStack, name: str, order_id: str) -> None:
    handle = stack.temporal.get_workflow_handle(order_id)
    await handle.result()
    history = await handle.fetch_history()
    HERE.mkdir(exist_ok=True)
    (HERE / f"{name}.json").write_text(history.to_json())


async def stuck(stack: TradingStack, acct: Any, order_id: str) -> None:
    deadline = time.monotonic() + 20
    while (await wait_order(stack, acct, order_id, {"pending_cancel"}))["state"] != "STUCK":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def resting_limit(stack: TradingStack) -> tuple[Any, dict[str, Any]]:
    """A fresh account's GTC limit buy of 3 AAPL at 150, resting at a venue (``new``)."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                    limit_price="150.00", time_in_force="gtc")
    await wait_order(stack, acct, o["id"], {"new"})
    return acct, o


async def cancel(stack: TradingStack, acct: Any, order_id: str) -> None:
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{order_id}", headers=headers(acct))).status_code == 204


@contextmanager
def halted_at_the_venues(stack: TradingStack, symbol: str) -> Iterator[None]:
    for mm in stack.venues.values():
        mm.halt(symbol)
    try:
        yield
    finally:
        for mm in stack.venues.values():
            mm.resume(symbol)


async def test_record_market_buy_filled_over_the_link(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market", time_in_force="day")
    await save(stack, "market_buy_filled_over_the_link", o["id"])


async def test_record_market_buy_sent_and_booked_in_one_step(stack: TradingStack) -> None:
    """The direct send books its answers in the same local activity (no apply_reports step)."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market", time_in_force="day")
    await save(stack, "market_buy_sent_and_booked_in_one_step", o["id"])


async def test_record_limit_sent_and_booked_in_one_step_then_canceled(stack: TradingStack) -> None:
    acct, o = await resting_limit(stack)
    await cancel(stack, acct, o["id"])
    await save(stack, "limit_sent_and_booked_in_one_step_then_canceled", o["id"])


async def test_record_limit_resting_then_canceled(stack: TradingStack) -> None:
    acct, o = await resting_limit(stack)
    await cancel(stack, acct, o["id"])
    await save(stack, "limit_resting_then_canceled", o["id"])


async def test_record_partial_fills_by_signal(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    with stack.venues_behave(engine={"fill_slices": [Decimal(400), Decimal(300), Decimal(300)],
                                     "fill_delay": 0.4}):
        o = await place(stack, acct, symbol="F", qty="1000", side="buy", type="limit",
                        limit_price="12.50", time_in_force="day")
        await wait_order(stack, acct, o["id"], {"filled"})
    await save(stack, "partial_fills_by_signal", o["id"])


async def test_record_cancel_racing_partial_fills(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("20000")
    with stack.venues_behave(engine={"fill_slices": [Decimal(400), Decimal(300), Decimal(300)],
                                     "fill_delay": 0.5}):
        o = await place(stack, acct, symbol="F", qty="1000", side="buy", type="limit",
                        limit_price="12.50", time_in_force="day")
        await wait_order(stack, acct, o["id"], {"partially_filled"})
        await cancel(stack, acct, o["id"])
        await wait_order(stack, acct, o["id"], {"canceled", "filled"})
    await save(stack, "cancel_racing_partial_fills", o["id"])


async def test_record_silent_venue_stuck_then_resolved(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with stack.venues_behave(never_ack=True):
        o = await place(stack, acct, symbol="AAPL", qty="10", side="buy", type="limit",
                        limit_price="190", time_in_force="day")
        await stuck(stack, acct, o["id"])
    handle = stack.temporal.get_workflow_handle(o["id"])
    refused = await handle.execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="filled", filled_qty="20", avg_price="187.45"))
    assert refused["state"] == "STUCK"
    await handle.execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", filled_qty="6", avg_price="187.45",
        operator="recorder", note="venue: 6 filled, rest canceled"))
    await save(stack, "silent_venue_stuck_then_resolved", o["id"])


async def test_record_overfill_stuck_then_resolved(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    with stack.venues_behave(overfill=True, engine={"fill_slices": [Decimal(4)], "fill_delay": 3600}):
        o = await place(stack, acct, symbol="F", qty="10", side="buy", type="limit",
                        limit_price="12.50", time_in_force="day")
        await stuck(stack, acct, o["id"])
    handle = stack.temporal.get_workflow_handle(o["id"])
    await handle.execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", filled_qty="4", operator="recorder", note="4 filled"))
    await save(stack, "overfill_stuck_then_resolved", o["id"])


async def test_record_rejected_for_buying_power(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("100")
    async with stack.http() as http:
        r = await http.post("/v2/orders", headers=headers(acct), json={
            "symbol": "AAPL", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day",
            "client_order_id": "rejected-for-bp"})
        assert r.status_code == 403, r.text
        o = (await http.get("/v2/orders:by_client_order_id", headers=headers(acct),
                            params={"client_order_id": "rejected-for-bp"})).json()
    await save(stack, "rejected_for_buying_power", o["id"])


async def test_record_venue_rejects_halted_symbol(stack: TradingStack) -> None:
    await stack.set_quote("GME", "22.60", "22.70")
    acct = await stack.account("1000")
    with halted_at_the_venues(stack, "GME"):
        o = await place(stack, acct, symbol="GME", qty="5", side="buy", type="limit",
                        limit_price="23", time_in_force="day")
        await wait_order(stack, acct, o["id"], {"rejected"})
    await save(stack, "venue_rejects_halted_symbol", o["id"])


async def test_record_gateway_halt_over_the_link(stack: TradingStack,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("5000")

    async def halted(symbol: str) -> bool:
        return True

    monkeypatch.setattr(stack.gateway.activities, "_halted", halted)
    o = await place(stack, acct, symbol="F", qty="2", side="buy", type="market", time_in_force="day")
    await stack.temporal.get_workflow_handle(o["id"]).result()
    monkeypatch.undo()
    await save(stack, "gateway_halt_over_the_link", o["id"])


async def test_record_sell_filled(stack: TradingStack) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    ledger = stack.router.ledger(acct.shard)
    a = acct.account_id
    await ledger.hold_cash(f"seed:{a}:h", a, "123.1")
    await ledger.book_fill(f"seed:{a}:f", a, "buy", "F", 10, "12.31")
    await ledger.settle(f"seed:{a}:s", a, shares={"F": 10})
    o = await place(stack, acct, symbol="F", qty="4", side="sell", type="market", time_in_force="day")
    await save(stack, "sell_filled", o["id"])


async def test_record_day_order_expired(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    svc = stack.app.state.sherwood.settings
    stack.app.state.sherwood.settings = svc.model_copy(
        update={"day_order_ttl_s": 1.0, "day_expiry_grace_s": 0.2})
    try:
        o = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                        limit_price="100", time_in_force="day")
    finally:
        stack.app.state.sherwood.settings = svc
    await wait_order(stack, acct, o["id"], {"expired"}, timeout=10)
    await save(stack, "day_order_expired", o["id"])


async def test_record_link_down_activity_sends(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    link = stack.gateway.link
    assert link is not None
    await link.stop()
    try:
        o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                        time_in_force="day")
        await stack.temporal.get_workflow_handle(o["id"]).result()
    finally:
        await link.start()
    await save(stack, "link_down_activity_sends", o["id"])


async def test_record_before_the_link(stack: TradingStack) -> None:
    """Written as the workflow did before the gateway link (its patch absent)."""
    import temporalio.workflow

    from workflows.order import DIRECT_SEND

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    real = temporalio.workflow.patched
    temporalio.workflow.patched = lambda patch_id: patch_id != DIRECT_SEND and real(patch_id)  # type: ignore[assignment]
    try:
        o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                        time_in_force="day")
        await stack.temporal.get_workflow_handle(o["id"]).result()
    finally:
        temporalio.workflow.patched = real
    await save(stack, "before_the_link", o["id"])


async def test_record_late_fill_reopens_then_resolved(stack: TradingStack) -> None:
    """The late run a venue report starts after the order's workflow ended."""
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="3", side="buy", type="limit",
                    limit_price="150.00", time_in_force="gtc")
    body = await wait_order(stack, acct, o["id"], {"new"})
    await cancel(stack, acct, o["id"])
    handle = stack.temporal.get_workflow_handle(o["id"])
    await handle.result()
    first_run = (await handle.describe()).run_id
    stack.venues[body["venue"]].send_late_trade(o["id"], Decimal(3), Decimal("150.00"))
    deadline = time.monotonic() + 20
    while (await wait_order(stack, acct, o["id"], {"pending_cancel", "canceled"}))["state"] != "STUCK":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    late = stack.temporal.get_workflow_handle(o["id"])
    assert (await late.describe()).run_id != first_run
    await late.execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", filled_qty="3", operator="recorder", note="3 late"))
    await late.result()
    HERE.mkdir(exist_ok=True)
    (HERE / "late_fill_reopens_then_resolved.json").write_text((await late.fetch_history()).to_json())


async def test_record_resolved_with_the_venues_exec_ids(stack: TradingStack) -> None:
    from domain.orders import ResolveFill

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with stack.venues_behave(never_ack=True):
        o = await place(stack, acct, symbol="AAPL", qty="10", side="buy", type="limit",
                        limit_price="190", time_in_force="day")
        await stuck(stack, acct, o["id"])
    await stack.temporal.get_workflow_handle(o["id"]).execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", filled_qty="4", operator="recorder", note="desk",
        fills=[ResolveFill("VX-1", "4", "187.45")]))
    await save(stack, "resolved_with_the_venues_exec_ids", o["id"])


async def test_record_abandoned_when_no_venue(stack: TradingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.workflows.test_order_venue_outage import fast_routing, no_venue

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    with fast_routing(stack), no_venue(stack, monkeypatch):
        o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                        time_in_force="day")
        await stack.temporal.get_workflow_handle(o["id"]).result()
    await save(stack, "abandoned_when_no_venue", o["id"])


async def test_record_repeated_cancels_then_canceled(stack: TradingStack) -> None:
    acct, o = await resting_limit(stack)
    with stack.venues_behave(never_ack=True):  # the cancels get no answer
        async with stack.http() as http:
            for _ in range(3):
                r = await http.delete(f"/v2/orders/{o['id']}", headers=headers(acct))
                assert r.status_code == 204, r.text
        await stuck(stack, acct, o["id"])
    await stack.temporal.get_workflow_handle(o["id"]).execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", filled_qty="0", operator="recorder", note="canceled"))
    await save(stack, "repeated_cancels_then_resolved", o["id"])


async def test_record_queued_then_filled_at_the_open(stack: TradingStack) -> None:
    from tests.workflows.test_order_queued import evening, queued_buy

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    async with evening(stack, wait_s=1.0) as (_, opens):
        o = await queued_buy(stack, acct, opens)
        await wait_order(stack, acct, o["id"], {"filled"})
        await save(stack, "queued_then_filled_at_the_open", o["id"])


async def test_record_queued_then_canceled(stack: TradingStack) -> None:
    from tests.workflows.test_order_queued import evening, queued_buy

    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    async with evening(stack, wait_s=600.0) as (_, opens):
        o = await queued_buy(stack, acct, opens)
        await cancel(stack, acct, o["id"])
        await save(stack, "queued_then_canceled", o["id"])


async def test_record_replaced_then_replacement_filled(stack: TradingStack) -> None:
    """The original's history (replace recorded, sent, Replaced, the replacement's workflow
    started) and the replacement's (started with its snapshot, filled)."""
    acct, o = await resting_limit(stack)
    async with stack.http() as http:
        r = await http.patch(f"/v2/orders/{o['id']}", headers=headers(acct),
                             json={"qty": "4", "limit_price": "187.50"})
        assert r.status_code == 200, r.text
    await save(stack, "replaced", o["id"])
    await wait_order(stack, acct, r.json()["id"], {"filled"})
    await save(stack, "replacement_filled", r.json()["id"])


async def test_record_replace_refused_then_canceled(stack: TradingStack) -> None:
    acct, o = await resting_limit(stack)
    with halted_at_the_venues(stack, "AAPL"):
        async with stack.http() as http:
            r = await http.patch(f"/v2/orders/{o['id']}", headers=headers(acct), json={"qty": "5"})
            assert r.status_code == 200, r.text
        await wait_order(stack, acct, r.json()["id"], {"rejected"})
    await wait_order(stack, acct, o["id"], {"new"})
    await cancel(stack, acct, o["id"])
    await save(stack, "replace_refused_then_canceled", o["id"])


async def test_record_replace_unanswered_stuck_then_resolved(stack: TradingStack) -> None:
    """The venue answers neither the replace nor the status request: the original STUCK, its
    replacement REJECTED; an operator resolves the original."""
    acct, o = await resting_limit(stack)
    with stack.venues_behave(never_ack=True):
        async with stack.http() as http:
            r = await http.patch(f"/v2/orders/{o['id']}", headers=headers(acct), json={"qty": "4"})
            assert r.status_code == 200, r.text
        await stuck(stack, acct, o["id"])
    await stack.temporal.get_workflow_handle(o["id"]).execute_update("resolve", ResolveInput(
        order_id=o["id"], outcome="canceled", operator="recorder", note="venue: canceled"))
    await save(stack, "replace_unanswered_stuck_then_resolved", o["id"])


async def test_record_bracket_take_profit_filled(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="2", side="buy", type="market",
                    time_in_force="gtc", order_class="bracket", take_profit={"limit_price": "195"},
                    stop_loss={"stop_price": "180"})
    tp = next(leg["id"] for leg in o["legs"] if leg["type"] == "limit")
    await wait_order(stack, acct, tp, {"new"})
    await stack.set_quote("AAPL", "195.00", "195.10")
    await save(stack, "bracket_take_profit_filled", f"group-{o['id']}")
    await stack.set_quote("AAPL", "187.40", "187.50")


async def test_record_oco_stop_loss_fired(stack: TradingStack) -> None:
    await stack.set_quote("MSFT", "410.00", "410.10")
    acct = await stack.account("20000")
    buy = await place(stack, acct, symbol="MSFT", qty="3", side="buy", type="market", time_in_force="day")
    await wait_order(stack, acct, buy["id"], {"filled"})
    o = await place(stack, acct, symbol="MSFT", qty="3", side="sell", type="limit",
                    time_in_force="gtc", order_class="oco", take_profit={"limit_price": "420"},
                    stop_loss={"stop_price": "400"})
    await wait_order(stack, acct, o["id"], {"new"})
    await stack.set_quote("MSFT", "399.00", "399.10")
    await save(stack, "oco_stop_loss_fired", f"group-{o['id']}")
    await stack.set_quote("MSFT", "410.00", "410.10")


async def test_record_notional_buy_filled_by_the_firm(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.45")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", notional="10", side="buy", type="market",
                    time_in_force="day")
    await save(stack, "notional_buy_filled_by_the_firm", o["id"])


async def test_record_fractional_buy_whole_part_at_the_venue(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="2.5", side="buy", type="market",
                    time_in_force="day")
    await save(stack, "fractional_buy_whole_part_at_the_venue", o["id"])


async def test_record_fractional_limit_rejected_by_the_firm(stack: TradingStack) -> None:
    await stack.set_quote("AAPL", "187.40", "187.50")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="AAPL", qty="0.5", side="buy", type="limit",
                    limit_price="150.00", time_in_force="day")
    await save(stack, "fractional_limit_rejected_by_the_firm", o["id"])


async def test_record_fraction_starts_the_rebalance(stack: TradingStack) -> None:
    """Two 0.6-share buys of F leave the firm 1.2 short (a fresh session's inventory is 0): the
    second order's workflow starts the rebalance, which buys 1 share through a child order."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    for _ in range(2):
        o = await place(stack, acct, symbol="F", qty="0.6", side="buy", type="market",
                        time_in_force="day")
        await wait_order(stack, acct, o["id"], {"filled"})
    await save(stack, "fraction_starts_the_rebalance", o["id"])
    await save(stack, "rebalance_buys_a_whole_share", f"rebalance-{acct.shard}-F")


async def _publish(stack: TradingStack, symbol: str, bid: str, ask: str) -> None:
    from tests.workflows.test_trailing_stop import publish_quote

    await publish_quote(stack, symbol, bid, ask)


async def test_record_trailing_stop_fired_and_filled(stack: TradingStack) -> None:
    from tests.workflows.test_trailing_stop import holding, wait_for

    acct = await holding(stack, "TSLA", 2, "200.00", "200.05")
    o = await place(stack, acct, symbol="TSLA", qty="2", side="sell", type="trailing_stop",
                    time_in_force="gtc", trail_price="1.00")
    await wait_for(stack, acct, o["id"], "hwm", lambda b: b["hwm"] == "200")
    await _publish(stack, "TSLA", "202.00", "202.05")
    await wait_for(stack, acct, o["id"], "hwm", lambda b: b["hwm"] == "202")
    await _publish(stack, "TSLA", "201.00", "201.05")
    await wait_order(stack, acct, o["id"], {"filled"})
    await save(stack, "trailing_stop_fired_and_filled", o["id"])


async def test_record_trailing_stop_canceled_while_waiting(stack: TradingStack) -> None:
    from tests.workflows.test_trailing_stop import wait_for

    await stack.set_quote("NFLX", "400.00", "400.10")
    acct = await stack.account("5000")
    o = await place(stack, acct, symbol="NFLX", qty="2", side="buy", type="trailing_stop",
                    time_in_force="day", trail_percent="2")
    await wait_for(stack, acct, o["id"], "hwm", lambda b: b["hwm"] == "400.1")
    await cancel(stack, acct, o["id"])
    await save(stack, "trailing_stop_canceled_while_waiting", o["id"])


async def test_record_trailing_stop_replaced_at_the_broker(stack: TradingStack) -> None:
    from tests.workflows.test_trailing_stop import holding, wait_for

    acct = await holding(stack, "MSFT", 3, "150.00", "150.05")
    o = await place(stack, acct, symbol="MSFT", qty="3", side="sell", type="trailing_stop",
                    time_in_force="gtc", trail_price="1.00")
    await wait_for(stack, acct, o["id"], "hwm", lambda b: b["hwm"] == "150")
    async with stack.http() as http:
        r = await http.patch(f"/v2/orders/{o['id']}", headers=headers(acct), json={"trail": "2"})
        assert r.status_code == 200, r.text
        await http.delete(f"/v2/orders/{r.json()['id']}", headers=headers(acct))
    await save(stack, "trailing_stop_replaced_at_the_broker", o["id"])
