"""Canceling any order of a bracket cancels the whole group (Alpaca: "canceling a leg cancels the
group"): a held take-profit or stop-loss leg while the entry rests at a venue, and the same while
the entry is queued for the open outside market hours. DELETE answers 204 and everything the
group held is released; the books stay clean."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import TradingStack, headers
from tests.workflows.order_helpers import balances, place
from tests.workflows.test_order_groups import SYM, clean_books, wait_legs
from tests.workflows.test_order_queued import evening


async def bracket(stack: TradingStack, acct: Any, **entry: str) -> dict[str, Any]:
    return await place(stack, acct, symbol=SYM, qty="5", side="buy", time_in_force="day",
                       order_class="bracket", take_profit={"limit_price": "199"},
                       stop_loss={"stop_price": "140"}, **entry)


async def cancel(stack: TradingStack, acct: Any, order_id: str) -> None:
    async with stack.http() as http:
        r = await http.delete(f"/v2/orders/{order_id}", headers=headers(acct))
    assert r.status_code == 204, r.text


@pytest.mark.parametrize("leg", ["take_profit", "stop_loss"])
async def test_canceling_a_held_leg_of_a_resting_bracket_cancels_the_group(
    stack: TradingStack, leg: str,
) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    o = await bracket(stack, acct, type="limit", limit_price="150")
    got = await wait_legs(stack, acct, o["id"], {"parent": "new", "take_profit": "held",
                                                  "stop_loss": "held"})
    await cancel(stack, acct, got[leg]["id"])
    await wait_legs(stack, acct, o["id"], {"parent": "canceled", "take_profit": "canceled",
                                           "stop_loss": "canceled"})
    assert await balances(stack, acct) == {"cash": 100000}
    await clean_books(stack, acct, o["id"])


@pytest.mark.parametrize("which", ["parent", "take_profit", "stop_loss"])
async def test_canceling_any_order_of_a_bracket_queued_for_the_open_cancels_the_group(
    stack: TradingStack, which: str,
) -> None:
    await stack.set_quote(SYM, "190.00", "190.05")
    acct = await stack.account("100000")
    async with evening(stack, wait_s=600.0):
        o = await bracket(stack, acct, type="market")
        got = await wait_legs(stack, acct, o["id"], {"parent": "accepted", "take_profit": "held",
                                                      "stop_loss": "held"})
        await cancel(stack, acct, got[which]["id"])
        await wait_legs(stack, acct, o["id"], {"parent": "canceled", "take_profit": "canceled",
                                               "stop_loss": "canceled"})
    assert await balances(stack, acct) == {"cash": 100000}
    await clean_books(stack, acct, o["id"])
