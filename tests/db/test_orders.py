"""The order store writes each order row once per transaction (``db.orders._Trail``): what a
transaction returns and publishes must be exactly the row the database holds afterwards, however
many steps the order took in it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

from api.services.orders import alpaca_order
from db import sql
from db.accounts import OpenedAccount, open_account
from db.engines import reading
from db.orders import OrderStore, Quotes
from db.router import ShardRouter
from domain.alpaca import order_at_accept as alpaca_order_at_accept
from domain.order_row import OrderRow
from domain.orders import AcceptOrderInput, OrderSnapshot, parse_order_request
from tests.venue_reports import fix_report


async def funded(router: ShardRouter, cash: str) -> OpenedAccount:
    acct = await open_account(router)
    ledger = router.ledger(acct.shard)
    await ledger.deposit(f"dep:{acct.account_id}", acct.account_id, cash)
    await ledger.settle_deposit(f"dep:{acct.account_id}:settled", acct.account_id, cash)
    return acct


async def accept(store: OrderStore, acct: OpenedAccount, **req: str) -> OrderSnapshot:
    oid = str(uuid.uuid4())
    return await store.accept(
        AcceptOrderInput(oid, str(acct.account_id), req, parse_order_request(req).hash(), "customer",
                         "0.05"), Quotes(ask=Decimal(req.get("limit_price", "10"))))


async def written(store: OrderStore, order_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The order row as stored, and the order object of its last trade update."""
    async with reading(store.engine) as conn:
        row = await sql.one(conn, "SELECT * FROM orders WHERE id = :id", {"id": uuid.UUID(order_id)})
        last = await sql.one(conn, "SELECT payload FROM outbox WHERE payload->'order'->>'id' = :id "
                             "ORDER BY id DESC LIMIT 1", {"id": order_id})
    return row, last["payload"]["order"]


def same(snap: OrderSnapshot, row: dict[str, Any]) -> None:
    stored = OrderRow.from_mapping(row).snapshot()
    stored.warnings = snap.warnings
    assert snap == stored


async def test_many_steps_in_one_transaction_write_the_row_they_return(router: ShardRouter) -> None:
    acct = await funded(router, "100000")
    store = OrderStore(router.engine(acct.shard))
    snap = await accept(store, acct, symbol="F", side="buy", type="limit", time_in_force="gtc",
                        qty="3", limit_price="10.05")
    row, update = await written(store, snap.order_id)
    same(snap, row)
    assert update == alpaca_order(row) and row["state"] == "FUNDS_HELD" and row["version"] == 1
    # the API answers the POST from the snapshot and the request, without reading the row
    req = parse_order_request({"symbol": "F", "side": "buy", "type": "limit", "time_in_force": "gtc",
                               "qty": "3", "limit_price": "10.05"})
    assert alpaca_order_at_accept(snap, req) == alpaca_order(row)

    oid = snap.order_id
    # ROUTED, ACKED, a partial fill and the fill that completes it, in one transaction; the
    # average price is 10.00666...
    reports = [
        fix_report("MM1", f"{oid}:E1", "8", oid, oid, "0", "0", venue_order_id="V1",
                              leaves_qty="3"),
        fix_report("MM1", f"{oid}:E2", "8", oid, oid, "F", "1", last_qty="1",
                              last_px="10.00", cum_qty="1", leaves_qty="2", avg_px="10.00"),
        fix_report("MM1", f"{oid}:E3", "8", oid, oid, "F", "2", last_qty="2",
                              last_px="10.01", cum_qty="3", leaves_qty="0", avg_px="10.0067"),
    ]
    snap = await store.apply_reports(oid, reports, routed_venue="MM1")
    row, update = await written(store, oid)
    same(snap, row)
    assert update == alpaca_order(row)
    assert row["state"] == "FILLED" and row["venue"] == "MM1" and row["venue_order_id"] == "V1"
    assert row["filled_avg_price"] == Decimal("10.006667") and row["hold_amount"] == 0
    assert row["version"] == 5  # FUNDS_HELD, then ROUTED, ACKED, partial fill, fill
    async with reading(store.engine) as conn:
        events = await sql.rows(conn, "SELECT seq, from_state, to_state FROM order_events "
                                "WHERE order_id = :id ORDER BY seq", {"id": uuid.UUID(oid)})
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        ("", "PENDING"), ("PENDING", "VALIDATED"), ("VALIDATED", "FUNDS_HELD"),
        ("FUNDS_HELD", "ROUTED"), ("ROUTED", "ACKED"), ("ACKED", "PARTIALLY_FILLED"),
        ("PARTIALLY_FILLED", "FILLED"), ("FILLED", "FILLED")]
    assert [e["seq"] for e in events] == list(range(1, 9))
    async with reading(store.engine) as conn:
        execs = await sql.rows(conn, "SELECT exec_id, qty, ledger_txn_id, trade_date, settle_date "
                               "FROM executions WHERE order_id = :id ORDER BY exec_id",
                               {"id": uuid.UUID(oid)})
    assert [(e["exec_id"], e["qty"], e["ledger_txn_id"]) for e in execs] == [
        (f"{oid}:E1", 0, None), (f"{oid}:E2", 1, f"order:{oid}:fill:MM1:{oid}:E2"),
        (f"{oid}:E3", 2, f"order:{oid}:fill:MM1:{oid}:E3")]
    assert all(e["trade_date"] and e["settle_date"] > e["trade_date"] for e in execs[1:])

    # a duplicate may have moved on since: the API reads it
    assert alpaca_order_at_accept(replace(snap, duplicate=True), req) is None

    # a replay of the same reports changes nothing
    again = await store.apply_reports(oid, reports, routed_venue="MM1")
    assert again == snap and (await written(store, oid))[0] == row


async def test_a_rejected_order_is_written_once_rejected(router: ShardRouter) -> None:
    acct = await funded(router, "5")
    store = OrderStore(router.engine(acct.shard))
    snap = await accept(store, acct, symbol="F", side="buy", type="limit", time_in_force="day",
                        qty="1", limit_price="10")
    assert snap.state == "REJECTED" and snap.reject_code == "insufficient_buying_power"
    row, update = await written(store, snap.order_id)
    same(snap, row)
    assert update == alpaca_order(row) and row["version"] == 1 and row["failed_at"] is not None
