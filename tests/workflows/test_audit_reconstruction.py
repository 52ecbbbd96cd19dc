"""``sherwood audit account --as-of`` against what the live API showed, over a seeded random
session through the real stack (market buys and sells, resting limit orders, cancels, ACH
deposits through POST /v2/transfers): at a past instant T (the API's view recorded at T, then
more activity) and at ``now``. ``sherwood audit export --date`` writes every order event of the
account, in the documented shape. The CLI runs against the test stack in the test process
(tests/cli.py), once as a real ``python -m sherwood`` process."""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from domain.calendar import trade_date
from tests.cli import sherwood_in_process
from tests.stack import TradingStack, headers
from tests.workflows.conftest import Backoffice
from tests.workflows.order_helpers import place, sherwood_cli, sherwood_subprocess, wait_order
from tests.workflows.test_funding import wait_status

D = Decimal
SYMBOLS = ("AAPL", "MSFT")


async def api_view(stack: TradingStack, acct: Any) -> dict[str, Any]:
    """What the API shows: cash figures, positions (qty, cost basis), open orders (state, qty,
    filled; the hold from the order row, which the API does not show)."""
    async with stack.http() as http:
        account = (await http.get("/v2/account", headers=headers(acct))).json()
        positions = (await http.get("/v2/positions", headers=headers(acct))).json()
        orders = (await http.get("/v2/orders", params={"status": "open", "limit": 500},
                                 headers=headers(acct))).json()
    async with stack.router.engine(acct.shard).connect() as conn:
        holds = {str(r.id): D(r.hold_amount) for r in (await conn.execute(text(
            "SELECT id, hold_amount FROM orders WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(o["id"]) for o in orders]})).all()}
    return {
        "cash": {k: D(account[k]) for k in ("cash", "cash_held", "cash_unsettled")},
        "positions": {p["symbol"]: (D(p["qty"]), D(p["cost_basis"])) for p in positions},
        "open_orders": {o["id"]: (o["state"], D(o["qty"]), D(o["filled_qty"]), holds[o["id"]])
                        for o in orders},
    }


def audit_view(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "cash": {k: D(rec["cash"][k]) for k in ("cash", "cash_held", "cash_unsettled")},
        "positions": {p["symbol"]: (D(p["qty"]), D(p["cost_basis"])) for p in rec["positions"]},
        "open_orders": {o["id"]: (o["state"], D(o["qty"]), D(o["filled_qty"]), D(o["hold_amount"]))
                        for o in rec["open_orders"]},
    }


async def audit(stack: TradingStack, acct: Any, as_of: str) -> dict[str, Any]:
    out = await sherwood_cli(stack, "audit", "account", str(acct.account_id), "--as-of", as_of, "--json")
    return json.loads(out)


async def session(stack: TradingStack, http: httpx.AsyncClient, acct: Any, rng: random.Random,
                  steps: int, resting: list[str]) -> None:
    """``steps`` random actions, each waited for until the account is quiet again."""
    shares = {s: D(0) for s in SYMBOLS}
    async with stack.http() as api:
        for _ in range(steps):
            sym = rng.choice(SYMBOLS)
            action = rng.choice(["buy", "buy", "sell", "rest_buy", "rest_sell", "cancel", "deposit"])
            if action == "sell" and shares[sym] < 2:
                action = "buy"
            if action == "rest_sell" and shares[sym] < 2:
                action = "rest_buy"
            if action == "cancel" and not resting:
                action = "rest_buy"
            if action == "buy":
                qty = rng.randint(1, 5)
                o = await place(stack, acct, symbol=sym, qty=str(qty), side="buy", type="market",
                                time_in_force="day")
                await wait_order(stack, acct, o["id"], {"filled"})
                shares[sym] += qty
            elif action == "sell":
                qty = rng.randint(1, int(shares[sym]) - 1)
                o = await place(stack, acct, symbol=sym, qty=str(qty), side="sell", type="market",
                                time_in_force="day")
                await wait_order(stack, acct, o["id"], {"filled"})
                shares[sym] -= qty
            elif action in ("rest_buy", "rest_sell"):
                side = action.removeprefix("rest_")
                qty = 1 if side == "sell" else rng.randint(1, 4)
                price = "100" if side == "buy" else "400"  # far from the market: it rests
                o = await place(stack, acct, symbol=sym, qty=str(qty), side=side, type="limit",
                                limit_price=price, time_in_force="gtc")
                await wait_order(stack, acct, o["id"], {"new"})
                resting.append(o["id"])
                if side == "sell":
                    shares[sym] -= qty  # held: no longer free to sell
            elif action == "cancel":
                oid = resting.pop(rng.randrange(len(resting)))
                r = await api.delete(f"/v2/orders/{oid}", headers=headers(acct))
                assert r.status_code == 204, r.text
                done = await wait_order(stack, acct, oid, {"canceled"})
                if done["side"] == "sell":
                    shares[done["symbol"]] += D(done["qty"])
            else:
                r = await http.post("/v2/transfers", headers=headers(acct), json={
                    "amount": f"{rng.randint(100, 5000)}.{rng.randint(0, 99):02d}",
                    "direction": "INCOMING"})
                assert r.status_code == 200, r.text
                await wait_status(http, acct, r.json()["id"], {"COMPLETE"})


async def test_audit_as_of_matches_what_the_api_showed(
    stack: TradingStack, backoffice: Backoffice, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    await stack.set_quote("AAPL", "190.00", "190.05")
    await stack.set_quote("MSFT", "310.00", "310.10")
    rng = random.Random(20250304)
    acct = await stack.account("50000")
    resting: list[str] = []

    await session(stack, http, acct, rng, 10, resting)
    shown_at_t = await api_view(stack, acct)
    t = datetime.now(UTC)
    await session(stack, http, acct, rng, 10, resting)
    await stack.set_quote("AAPL", "191.00", "191.05")  # a different price after T
    await session(stack, http, acct, rng, 4, resting)
    shown_now = await api_view(stack, acct)

    assert shown_at_t != shown_now  # the session moved something after T
    assert shown_at_t["positions"] and shown_at_t["open_orders"]  # something to check at T
    past = await audit(stack, acct, t.isoformat())
    assert audit_view(past) == shown_at_t
    now = await audit(stack, acct, "now")
    assert audit_view(now) == shown_now
    assert now["balances"] and len(now["history"]) > len(past["history"])
    kinds = {h["type"] for h in now["history"]}
    assert kinds == {"order_event", "ledger_transaction", "transfer_event"}, kinds
    assert all(h["at"] <= past["as_of"] for h in past["history"])

    # the export of the day has every order event of the account, in the documented shape
    out = tmp_path / "events.jsonl"
    day = trade_date(datetime.now(UTC)).isoformat()
    await sherwood_cli(stack, "audit", "export", "--date", day, "--out", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [x for x in lines if x["account_id"] == str(acct.account_id)]
    async with stack.router.engine(acct.shard).connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM order_events WHERE account_id = :a"),
                                    {"a": acct.account_id})).scalar_one()
    assert len(mine) == count
    assert {"new_order", "route", "route_accepted", "fill", "cancel"} <= {x["event_type"] for x in mine}
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    for x in mine:
        assert set(x) == {"firm_id", "event_id", "event_timestamp", "event_type", "event", "account_id",
                          "order_id", "client_order_id", "symbol", "side", "order_type",
                          "time_in_force", "qty", "notional", "price", "stop_price", "venue", "state"}
        assert x["firm_id"] == stack.settings.cat_firm_id and stamp.match(x["event_timestamp"])
    fills = [x for x in mine if x["event_type"] == "fill"]
    assert all(x["venue"] in ("MM1", "MM2") and D(x["qty"]) > 0 and D(x["price"]) > 0 for x in fills)


async def test_audit_cli_refuses_bad_input(stack: TradingStack) -> None:
    acct = await stack.account("0")
    cases = [
        ("not-a-uuid", "now", "not an account id"),
        (str(uuid.uuid4()), "now", "no account"),
        (str(acct.account_id), "2025-03-04T10:00:00", "offset"),  # no zone: never guessed
        (str(acct.account_id), "yesterday", "not an ISO 8601"),
        (str(acct.account_id), "2999-01-01T00:00:00Z", "future"),
        (str(acct.account_id), "2025-03-04T10:00:00Z" + "0" * 50, "too long"),
    ]
    for i, (account, as_of, why) in enumerate(cases):
        if i == 0:  # a real `python -m sherwood` process: the entry point's exit status
            code, out = await sherwood_subprocess(stack, "audit", "account", account, "--as-of", as_of)
        else:
            code, stdout, err = await sherwood_in_process(
                stack.env(), "audit", "account", account, "--as-of", as_of)
            out = stdout + err
        assert code == 2, (account, as_of, out)
        assert why in " ".join(out.split()), (why, out)
