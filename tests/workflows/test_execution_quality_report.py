"""The execution-quality report end to end: orders through the API on the trading stack, the
report over the API (ops key, scope ``read``) and the CLI, its totals equal to the fills booked
in the ledger, a row for every configured venue, the routing disclosure adding up."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from tests.stack import TradingStack, headers, ops_headers
from tests.workflows.order_helpers import place, wait_order

D = Decimal
SYMBOL = "XOM"  # no other test trades it: the report over it is this test's orders alone


async def ledger_fills(stack: TradingStack, account_ids: list[str]) -> tuple[Decimal, Decimal]:
    shares, notional = D(0), D(0)
    for n in range(stack.settings.shard_count):
        async with stack.router.engine(n).connect() as conn:
            row = (await conn.execute(text(
                """SELECT coalesce(sum(qty), 0) AS q, coalesce(sum(qty * price), 0) AS n
                     FROM executions
                    WHERE symbol = :s AND exec_type = 'fill' AND ledger_txn_id IS NOT NULL
                      AND account_id = ANY(CAST(:a AS uuid[]))"""),
                {"s": SYMBOL, "a": account_ids})).one()
        shares, notional = shares + D(row.q), notional + D(row.n)
    return shares, notional


async def test_report_totals_equal_the_ledger_and_every_venue_has_a_row(
        stack: TradingStack) -> None:
    await stack.set_quote(SYMBOL, "110.00", "110.02")
    accts = [await stack.account("100000") for _ in range(2)]
    placed = []
    for i, (qty, kind) in enumerate([("5", "market"), ("3", "market"), ("2", "market"),
                                     ("4", "limit_marketable"), ("1", "limit_resting")]):
        acct = accts[i % 2]
        body = {"symbol": SYMBOL, "qty": qty, "side": "buy", "time_in_force": "day",
                "type": "market" if kind == "market" else "limit"}
        if kind != "market":
            body["limit_price"] = "111" if kind == "limit_marketable" else "100"
        placed.append((acct, kind, await place(stack, acct, **body)))
    for acct, kind, order in placed:
        if kind != "limit_resting":
            await wait_order(stack, acct, order["id"], {"filled"})
        else:  # working at the venue, then canceled there at the customer's request
            await wait_order(stack, acct, order["id"], {"new"})
            async with stack.http() as http:
                r = await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))
                assert r.status_code == 204, r.text
            await wait_order(stack, acct, order["id"], {"canceled"})
    shares, notional = await ledger_fills(stack, [str(a.account_id) for a in accts])
    assert shares == D(14)
    # each fill's route and quality are stored on its shard, with the execution
    stored = []
    for acct, kind, order in placed:
        async with stack.router.engine(acct.shard).connect() as conn:
            stored += [(kind, order["id"], r) for r in (await conn.execute(text(
                """SELECT route_venue, route_order_id, route_order_type, nbbo_bid, nbbo_ask,
                          nbbo_age_ms, routed_at, since_routed_ms, improvement_per_share,
                          effective_spread, venue, price
                     FROM executions WHERE order_id = :o AND exec_type = 'fill'"""),
                {"o": order["id"]})).all()]
    assert len(stored) == 4  # the resting limit has no fill
    for kind, oid, r in stored:
        assert (r.route_venue, r.route_order_id) == (r.venue, oid)
        assert r.route_order_type == ("market" if kind == "market" else "limit")
        assert (r.nbbo_bid, r.nbbo_ask) == (D("110.00"), D("110.02"))
        route = (await stack.gateway.store.read(
            "SELECT routed_at, quote_age_ms FROM gateway_routes WHERE order_id = :o",
            {"o": oid}))[0]
        assert (r.routed_at, r.nbbo_age_ms) == (route["routed_at"], route["quote_age_ms"])
        assert r.since_routed_ms >= 0
        assert r.improvement_per_share == D("110.02") - r.price  # marketable: vs the ask
        assert r.effective_spread == 2 * abs(r.price - D("110.01"))

    today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    hdr = await ops_headers(stack.router, "read", holder="eq-report")
    async with stack.http() as http:
        r = await http.get("/ops/reports/execution-quality",
                           params={"from": today, "to": today, "symbol": SYMBOL}, headers=hdr)
        assert r.status_code == 200, r.text
        rep = r.json()
        bad = await http.get("/ops/reports/execution-quality",
                             params={"from": today, "to": "2000-01-01"}, headers=hdr)
        assert bad.status_code == 422 and bad.json()["reason"] == "invalid_period"
    totals = rep["totals"]
    assert (D(totals["executed_shares"]), D(totals["notional"])) == (shares, notional)
    assert totals["orders"] == 5 and D(totals["shares"]) == D(15)
    assert D(totals["fill_rate"]) == (D(14) * 100 / D(15)).quantize(D("0.01"))
    assert (totals["cancel_rate"], totals["reject_rate"]) == ("20.00", "0.00")  # 1 of 5
    # the simulated venues fill at the ask: no improvement, the quoted spread is 2 cents
    assert D(totals["avg_price_improvement_per_share"]) == D(0)
    assert D(totals["avg_quoted_spread"]) == D("0.02")
    assert totals["avg_time_to_execution_s"] > 0
    venues = [v.name for v in stack.settings.venues]
    rows = {(x["venue"], x["order_type"]): x for x in rep["rows"]}
    assert {v for v, _ in rows} == set(venues)
    assert all((v, t) in rows for v in venues for t in ("market", "limit", "stop", "stop_limit"))
    assert sum(x["orders"] for x in rep["rows"]) == 5
    assert sum(D(x["executed_shares"]) for x in rep["rows"]) == shares
    assert {d["day"] for d in rep["daily"]} == {today}
    assert sum(D(d["executed_shares"]) for d in rep["daily"]) == shares
    month = today[:7]
    disc = {d["order_type"]: d for d in rep["routing_disclosure"] if d["month"] == month}
    assert disc["market"]["orders"] == 3 and disc["limit"]["orders"] == 2
    assert sum(D(v["pct"]) for v in disc["market"]["venues"]) == D(100)

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sherwood", "reports", "execution-quality", "--from", today,
        "--to", today, "--symbol", SYMBOL, "--json", env=stack.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["totals"] == totals


async def test_a_replaced_orders_fill_counts_for_its_route(stack: TradingStack) -> None:
    """A fill on a replacement (a new ClOrdID after the venue's Replaced) is the route's fill:
    the report's totals still equal the ledger's fills, under the venue the order was routed to."""
    symbol = "CVX"  # no other test trades it
    await stack.set_quote(symbol, "150.00", "150.02")
    acct = await stack.account("100000")
    old = await place(stack, acct, symbol=symbol, qty="6", side="buy", type="limit",
                      limit_price="140", time_in_force="gtc")
    await wait_order(stack, acct, old["id"], {"new"})
    async with stack.http() as http:
        r = await http.patch(f"/v2/orders/{old['id']}", headers=headers(acct),
                             json={"limit_price": "151"})
        assert r.status_code == 200, r.text
    new = r.json()
    await wait_order(stack, acct, new["id"], {"filled"})
    shares, notional = D(0), D(0)
    async with stack.router.engine(acct.shard).connect() as conn:
        row = (await conn.execute(text(
            """SELECT coalesce(sum(qty), 0) AS q, coalesce(sum(qty * price), 0) AS n
                 FROM executions WHERE symbol = :s AND exec_type = 'fill'
                  AND ledger_txn_id IS NOT NULL AND account_id = :a"""),
            {"s": symbol, "a": acct.account_id})).one()
        shares, notional = D(row.q), D(row.n)
    assert shares == D(6)
    async with stack.router.engine(acct.shard).connect() as conn:
        stored = (await conn.execute(text(
            """SELECT route_order_id, route_order_type, nbbo_ask, improvement_per_share
                 FROM executions WHERE order_id = :o AND exec_type = 'fill'"""),
            {"o": new["id"]})).one()
    # the replacement's fill stores the route of the order first routed (its limit then was
    # below the bid: not marketable, so no improvement is claimed)
    assert (stored.route_order_id, stored.route_order_type) == (old["id"], "limit")
    assert stored.nbbo_ask == D("150.02") and stored.improvement_per_share is None

    today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    hdr = await ops_headers(stack.router, "read", holder="eq-report-replace")
    async with stack.http() as http:
        r = await http.get("/ops/reports/execution-quality",
                           params={"from": today, "to": today, "symbol": symbol}, headers=hdr)
        assert r.status_code == 200, r.text
    rep = r.json()
    totals = rep["totals"]
    assert (D(totals["executed_shares"]), D(totals["notional"])) == (shares, notional)
    assert totals["orders"] == 1 and D(totals["fill_rate"]) == D(100)
    routed = [x for x in rep["rows"] if x["orders"]]
    assert len(routed) == 1 and routed[0]["order_type"] == "limit"
    assert D(routed[0]["executed_shares"]) == shares
