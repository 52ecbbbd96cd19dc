"""The execution gateway's metrics on the real stack: each venue's FIX session state is read
from the session itself (1 while logged on), a venue that skips outbound sequence numbers shows
up as sequence gaps of that venue."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.stack import TradingStack
from tests.workflows.order_helpers import place, wait_order


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_fix_sessions_and_sequence_gaps_are_measured(stack: TradingStack) -> None:
    await stack.gateway.wait_logged_on(timeout=20)
    for venue in stack.venues:
        assert value("sherwood_fix_session_up", venue=venue) == 1
    gaps = {venue: value("sherwood_fix_sequence_gaps_total", venue=venue) for venue in stack.venues}

    await stack.set_quote("F", "12.30", "12.31")
    acct = await stack.account("10000")
    with stack.venues_behave(skip_seq=True, skip_seq_every=1):
        orders = [await place(stack, acct, symbol="F", qty="1", side="buy", type="market",
                              time_in_force="day") for _ in range(4)]
        for o in orders:
            await wait_order(stack, acct, o["id"], {"filled"}, timeout=30)
    assert sum(value("sherwood_fix_sequence_gaps_total", venue=v) - gaps[v] for v in stack.venues) >= 1
    for venue in stack.venues:
        assert value("sherwood_fix_session_up", venue=venue) == 1
