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

from tests.stack import TradingStack, ops_headers
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
        else:
            await wait_order(stack, acct, order["id"], {"new"})
    shares, notional = await ledger_fills(stack, [str(a.account_id) for a in accts])
    assert shares == D(14)

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
