"""Hostile and unusual request bodies against the whole stack: JSON numbers are read exactly
(never through a float), bodies without a JSON Content-Type are read as JSON, and every number
out of bounds, every unimplemented field, every oversized or over-deep body is answered at once
with a coded 4xx -- nothing held, no workflow started (proved by state: the workflow id the
request would have used does not exist, the balances are what they were)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.services.orders import order_id_for
from api.services.transfers import TRANSFER_NS
from api.services.transfers import workflow_id as transfer_workflow_id
from db.funding import FundingStore
from tests.stack import TradingStack, headers, served
from tests.workflows.conftest import Backoffice
from tests.workflows.order_helpers import balances, wait_order

PROBE_DEADLINE_S = 5.0
_base_url: list[str] = []


@pytest.fixture(scope="module", autouse=True)
async def base_url(stack: TradingStack) -> AsyncIterator[str]:
    """The API over a real socket, so a probe's deadline is a client timeout."""
    async with served(stack.app) as url:
        _base_url.append(url)
        yield url
        _base_url.remove(url)


async def post_raw(stack: TradingStack, acct: Any, path: str, body: str | bytes,
                   content_type: str | None = "application/json",
                   extra: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    """POST ``body`` exactly as given (numbers as the text we wrote), timed; fails past the
    probe deadline (a client timeout) instead of waiting on a hung request."""
    hdrs = {**headers(acct), **(extra or {})}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=_base_url[-1], timeout=PROBE_DEADLINE_S) as http:
        r = await http.post(path, headers=hdrs, content=body)
    return r, time.monotonic() - t0


async def no_workflow(stack: TradingStack, workflow_id: str) -> None:
    with pytest.raises(RPCError) as err:
        await stack.temporal.get_workflow_handle(workflow_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


def order_json(qty: str = "3", limit: str | None = "12.50", otype: str = "limit", coid: str = "",
               side: str = "buy", extra: str = "") -> str:
    """An order body with numbers written verbatim (``qty`` is JSON text: ``3.0``, ``"3"``)."""
    price = f', "limit_price": {limit}' if limit is not None else ""
    return (f'{{"symbol": "F", "qty": {qty}, "side": "{side}", "type": "{otype}", '
            f'"time_in_force": "day", "client_order_id": "{coid}"{price}{extra}}}')


# --- numbers as JSON numbers, bodies without a JSON Content-Type -------------------------

@pytest.mark.parametrize("content_type", ["application/json", None, "application/x-www-form-urlencoded"],
                         ids=["json", "no-content-type", "curl-default"])
async def test_json_numbers_are_read_exactly(stack: TradingStack, content_type: str | None) -> None:
    """alpaca-py sends ``"qty": 3.0``; curl -d sends form-urlencoded; both are JSON here."""
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    coid = f"num-{uuid.uuid4().hex[:8]}"
    r, _ = await post_raw(stack, acct, "/v2/orders", order_json("3.0", "1.10", coid=coid), content_type)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["qty"] == "3" and order["limit_price"] == "1.1" and order["client_order_id"] == coid
    assert (await balances(stack, acct))["cash_held"] == Decimal("3.30")  # 3 x 1.10, exactly
    async with stack.http() as http:
        assert (await http.delete(f"/v2/orders/{order['id']}", headers=headers(acct))).status_code == 204
    await wait_order(stack, acct, order["id"], {"canceled"})


async def test_a_number_as_a_string_still_works(stack: TradingStack) -> None:
    acct = await stack.account("1000")
    r, _ = await post_raw(stack, acct, "/v2/orders",
                          order_json('"3"', '"1.10"', coid=f"s-{uuid.uuid4().hex[:8]}"))
    assert r.status_code == 200, r.text
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{r.json()['id']}", headers=headers(acct))


# --- the probes and their relatives --------------------------------------------

PROBES = [
    # (qty, limit_price or None for a market order, expected reason)
    ("1e26", "12.50", "qty_out_of_range"),
    ("1e26", None, "qty_out_of_range"),
    ('"1e26"', None, "qty_out_of_range"),
    ("1E+50", "12.50", "qty_out_of_range"),
    ('"1E+50"', None, "qty_out_of_range"),
    ("1000000001", "1.00", "qty_out_of_range"),
    ("3", "1e30", "limit_price_out_of_range"),
    ("3", "1E+50", "limit_price_out_of_range"),
    ("3", '"1E+50"', "limit_price_out_of_range"),
    ("3", "1000000.01", "limit_price_out_of_range"),
    ("1" * 1000, "12.50", "qty_too_many_digits"),
    (f'"{"1" * 1000}"', "12.50", "qty_too_many_digits"),
    ("3", "1." + "0" * 1000, "limit_price_too_many_digits"),
    ('"NaN"', "12.50", "invalid_qty"),
    ("NaN", "12.50", "invalid_json"),
    ("Infinity", "12.50", "invalid_json"),
    ("3", "-Infinity", "invalid_json"),
    ('"Infinity"', "12.50", "invalid_qty"),
    ("-0", "12.50", "invalid_qty"),
    ("3", "-0.0", "invalid_limit_price"),
    ('"1_000"', "12.50", "invalid_qty"),
    ('"\u0663"', "12.50", "invalid_qty"),  # an Arabic-Indic three: Decimal() would read it
    ("3.0000000005", "12.50", "qty_too_many_decimals"),  # fractions: at most 9 decimals
    ("3", "12.505", "invalid_price_increment"),
    ("1e-1000000", "12.50", "qty_too_many_decimals"),
    ("true", "12.50", "invalid_qty"),
]


@pytest.mark.parametrize(("qty", "limit", "reason"), PROBES,
                         ids=[f"{q[:12]}-{p and p[:12]}" for q, p, _ in PROBES])
async def test_hostile_order_numbers_are_refused_at_once_with_nothing_held(
    stack: TradingStack, qty: str, limit: str | None, reason: str,
) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    before = await balances(stack, acct)
    coid = f"probe-{uuid.uuid4().hex[:8]}"
    r, took = await post_raw(stack, acct, "/v2/orders",
                             order_json(qty, limit, "limit" if limit else "market", coid))
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == reason, r.text
    assert r.json()["code"] == 42210000
    assert took < PROBE_DEADLINE_S
    assert await balances(stack, acct) == before
    await no_workflow(stack, str(order_id_for(acct.account_id, coid)))


# --- fields the server does not implement ------------------------------------------------

UNSUPPORTED = [
    # (bracket / oco / oto and their bad input: tests/workflows/test_order_groups.py)
    (', "order_class": "mleg"', "invalid_order_class"),
    (', "take_profit": {"limit_price": "14.00"}', "take_profit_not_allowed"),
    (', "stop_loss": {"stop_price": "11.00"}', "stop_loss_not_allowed"),
    (', "trail_price": "1.00"', "unexpected_trail"),  # a trail on a limit order
    (', "trail_percent": "5"', "unexpected_trail"),
    (', "notional": "100"', "qty_and_notional"),
    (', "legs": []', "legs_not_supported"),
    (', "position_intent": "sell_to_open"', "position_intent_not_supported"),
    (', "no_such_field": 1', "unknown_field"),
]


@pytest.mark.parametrize(("extra", "reason"), UNSUPPORTED, ids=[r for _, r in UNSUPPORTED])
async def test_an_unimplemented_field_is_refused_never_dropped(stack: TradingStack, extra: str,
                                                                 reason: str) -> None:
    acct = await stack.account("1000")
    before = await balances(stack, acct)
    coid = f"unsup-{uuid.uuid4().hex[:8]}"
    r, _ = await post_raw(stack, acct, "/v2/orders", order_json('"3"', '"12.50"', coid=coid, extra=extra))
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == reason, r.text
    assert await balances(stack, acct) == before
    await no_workflow(stack, str(order_id_for(acct.account_id, coid)))


# trailing stops: every bad trail is refused at once, nothing held, no workflow
TRAILING = [
    ('"trail_price": "1.00", "trail_percent": "5"', "day", "ambiguous_trail"),
    ('"trail_price": null', "day", "missing_trail"),
    ('"trail_price": "1.00", "limit_price": "12.00"', "day", "unexpected_limit_price"),
    ('"trail_price": "1.00", "stop_price": "12.00"', "day", "unexpected_stop_price"),
    ('"trail_price": "1.00"', "ioc", "invalid_time_in_force"),
    ('"trail_percent": "5"', "fok", "invalid_time_in_force"),
    ('"trail_price": "-1"', "day", "invalid_trail_price"),
    ('"trail_price": "1.005"', "day", "invalid_price_increment"),
    ('"trail_price": 1e30', "day", "trail_price_out_of_range"),
    ('"trail_percent": "0"', "day", "invalid_trail_percent"),
    ('"trail_percent": "100"', "day", "trail_percent_out_of_range"),
    ('"trail_percent": 1e30', "day", "trail_percent_out_of_range"),
    ('"trail_percent": "1.005"', "gtc", "invalid_trail_percent"),
    ('"trail_percent": "1' + "0" * 1000 + '"', "day", "trail_percent_too_many_digits"),
    ('"trail_percent": true', "day", "invalid_trail_percent"),
]


@pytest.mark.parametrize(("fields", "tif", "reason"), TRAILING, ids=[r for _, _, r in TRAILING])
async def test_a_bad_trailing_stop_is_refused_with_nothing_held(stack: TradingStack, fields: str,
                                                                tif: str, reason: str) -> None:
    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("1000")
    before = await balances(stack, acct)
    coid = f"trail-{uuid.uuid4().hex[:8]}"
    body = (f'{{"symbol": "F", "qty": "3", "side": "buy", "type": "trailing_stop", '
            f'"time_in_force": "{tif}", "client_order_id": "{coid}", {fields}}}')
    r, took = await post_raw(stack, acct, "/v2/orders", body)
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == reason, r.text
    assert took < PROBE_DEADLINE_S
    assert await balances(stack, acct) == before
    await no_workflow(stack, str(order_id_for(acct.account_id, coid)))


@pytest.mark.parametrize("extra", [', "order_class": "simple"', ', "order_class": ""',
                                   ', "order_class": null, "take_profit": null, "extended_hours": null',
                                   ', "position_intent": "buy_to_open"'])
async def test_the_simple_order_class_and_nulls_are_plain_orders(stack: TradingStack, extra: str) -> None:
    acct = await stack.account("1000")
    r, _ = await post_raw(stack, acct, "/v2/orders",
                          order_json("3", "1.10", coid=f"simple-{uuid.uuid4().hex[:8]}", extra=extra))
    assert r.status_code == 200, r.text
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{r.json()['id']}", headers=headers(acct))


async def test_client_order_id_up_to_128_characters(stack: TradingStack) -> None:
    acct = await stack.account("1000")
    ok = "c" * 120 + uuid.uuid4().hex[:8]
    r, _ = await post_raw(stack, acct, "/v2/orders", order_json("1", "1.10", coid=ok))
    assert r.status_code == 200, r.text
    assert r.json()["client_order_id"] == ok
    r, _ = await post_raw(stack, acct, "/v2/orders", order_json("1", "1.10", coid=ok + "x"))
    assert r.status_code == 422 and r.json()["reason"] == "invalid_client_order_id", r.text
    async with stack.http() as http:
        await http.delete(f"/v2/orders/{order_id_for(acct.account_id, ok)}", headers=headers(acct))


# --- bodies: size and depth before parsing, malformed JSON ------------------------------

async def test_an_oversized_body_is_refused_before_parsing(stack: TradingStack) -> None:
    acct = await stack.account("1000")
    coid = f"big-{uuid.uuid4().hex[:8]}"
    body = order_json("3", "1.10", coid=coid, extra=f', "pad": "{"x" * 70_000}"')
    r, took = await post_raw(stack, acct, "/v2/orders", body)
    assert r.status_code == 413 and r.json()["reason"] == "body_too_large", r.text
    assert took < PROBE_DEADLINE_S
    await no_workflow(stack, str(order_id_for(acct.account_id, coid)))


async def test_a_deeply_nested_body_is_refused_before_parsing(stack: TradingStack) -> None:
    acct = await stack.account("1000")
    body = order_json("3", "1.10", coid="deep", extra=f', "x": {"[" * 5000}{"]" * 5000}')
    r, _ = await post_raw(stack, acct, "/v2/orders", body)
    assert r.status_code == 422 and r.json()["reason"] == "body_too_deep", r.text


@pytest.mark.parametrize("body", ['{"symbol": "F", "qty": ', "[1, 2]", '"x"', b'{"a": "\xff"}'],
                         ids=["truncated", "array", "string", "bad-utf8"])
async def test_a_body_that_is_not_a_json_object_is_refused(stack: TradingStack, body: str | bytes) -> None:
    acct = await stack.account("1000")
    r, _ = await post_raw(stack, acct, "/v2/orders", body)
    assert r.status_code == 422 and r.json()["reason"] in ("invalid_json", "invalid_request"), r.text


# --- list limits --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v2/orders?status=all&limit=100000", "/v2/transfers?limit=100000",
                                  "/v2/account/activities?page_size=100000"])
async def test_list_limits_are_clamped(stack: TradingStack, path: str) -> None:
    acct = await stack.account("1000")
    async with stack.http() as http:
        r = await http.get(path, headers=headers(acct))
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), list)


# --- transfers ----------------------------------------------------------------------------

TRANSFER_PROBES = [
    ("1E+30", "amount_out_of_range"),
    ('"1E+30"', "amount_out_of_range"),
    ("10000000000.01", "amount_out_of_range"),
    ("1" * 1000, "amount_too_many_digits"),
    ("NaN", "invalid_json"),
    ('"Infinity"', "invalid_amount"),
    ("-0", "invalid_amount"),
    ("12.345", "invalid_amount"),
]


@pytest.mark.parametrize(("amount", "reason"), TRANSFER_PROBES, ids=[a[:12] for a, _ in TRANSFER_PROBES])
async def test_hostile_transfer_amounts_are_refused_at_once_with_nothing_moved(
    stack: TradingStack, amount: str, reason: str,
) -> None:
    acct = await stack.account("1000")
    before = await balances(stack, acct)
    key = f"probe-{uuid.uuid4().hex[:8]}"
    for direction in ("INCOMING", "OUTGOING"):
        r, took = await post_raw(stack, acct, "/v2/transfers",
                                 f'{{"amount": {amount}, "direction": "{direction}"}}',
                                 extra={"Idempotency-Key": key})
        assert r.status_code == 422, r.text
        assert r.json()["reason"] == reason, r.text
        assert took < PROBE_DEADLINE_S
    assert await balances(stack, acct) == before
    tid = str(uuid.uuid5(TRANSFER_NS, f"{acct.account_id}:{key}"))
    await no_workflow(stack, transfer_workflow_id(tid))
    assert await FundingStore(stack.router.engine(acct.shard)).list_for(acct.account_id, limit=10) == []


async def test_a_transfer_amount_as_a_json_number(stack: TradingStack, backoffice: Backoffice) -> None:
    acct = await stack.account("0")
    r, _ = await post_raw(stack, acct, "/v2/transfers", '{"amount": 500.25, "direction": "INCOMING"}',
                          content_type=None)
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "500.25"
    assert (await balances(stack, acct))["cash"] == Decimal("500.25")
