"""The gateway's direct link against an outsider: a local process with a raw socket, against the
real trading stack (gateway, FIX sessions, simulated venues). Whatever it sends -- the old
default hello, no proof, a proof made with another secret, a proof replayed from another
connection -- is refused with a generic message, the connection is closed, and nothing reaches a
venue: no ``gateway_orders`` reservation, no order at any venue's engine (proved by state once
the gateway has hung up, hence read nothing more).

Not here: the link's protocol with its own client (tests/activities/test_gateway_link.py), the
order workflow's use of it (tests/workflows/test_order_gateway_link.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid

from domain.execution import VenueOrder
from tests.stack import TradingStack


def outsider_order() -> VenueOrder:
    return VenueOrder(order_id=str(uuid.uuid4()), account_id=str(uuid.uuid4()), shard=0,
                      symbol="AAPL", side="buy", qty="5", order_type="market",
                      time_in_force="day")


def send_line(call_id: int, order: VenueOrder) -> bytes:
    from activities.gateway_link import _encode

    return b"%d send_new_order %s\n" % (call_id, _encode(order))


async def connect(stack: TradingStack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    link = stack.gateway.link
    assert link is not None
    return await asyncio.open_connection("127.0.0.1", link.port)


async def until_hung_up(reader: asyncio.StreamReader) -> list[bytes]:
    """Every line the gateway sends until it closes the connection (within 5 s)."""
    lines: list[bytes] = []
    try:
        while line := await asyncio.wait_for(reader.readline(), 5):
            lines.append(line)
    except TimeoutError:
        raise AssertionError(f"the gateway did not hang up; it answered {lines}") from None
    return lines


async def nothing_sent(stack: TradingStack, order: VenueOrder) -> None:
    assert await stack.gateway.store.get_send(order.cl_ord_id) is None
    for name, mm in stack.venues.items():
        assert mm.engine.order(order.cl_ord_id) is None, f"{name} got the outsider's order"


def assert_generic_refusal(lines: list[bytes], stack: TradingStack) -> None:
    """A refusal says that, and nothing about what the gateway expected."""
    answers = [ln for ln in lines if not ln.startswith(b"0 challenge ")]
    assert len(answers) == 1, lines
    call_id, kind, body = answers[0].rstrip(b"\n").split(b" ", 2)
    assert (call_id, kind) == (b"0", b"error"), answers
    err = json.loads(body)
    assert err["type"] == "link_refused" and err["non_retryable"] is True, err
    assert stack.settings.gateway_link_stack() not in err["message"], err


async def challenge(reader: asyncio.StreamReader) -> str:
    line = await asyncio.wait_for(reader.readline(), 5)
    head, _, nonce = line.rstrip(b"\n").rpartition(b" ")
    assert head == b"0 challenge", line
    return nonce.decode()


def hello(stack: TradingStack, server_nonce: str, *, secret: str | None = None,
          client_nonce: str | None = None) -> tuple[bytes, str]:
    """The hello line a shard worker with ``secret`` (default: the stack's own) sends."""
    from activities.gateway_link import worker_proof

    s = stack.settings
    assert s.gateway_link_secret is not None
    key = secret if secret is not None else s.gateway_link_secret.get_secret_value()
    cn = client_nonce or secrets.token_hex(32)
    proof = worker_proof(key, server_nonce, cn, s.gateway_link_stack())
    return b"0 hello %s %s %s\n" % (s.gateway_link_stack().encode(), cn.encode(), proof.encode()), cn


# ============================================================================ the outsider


async def test_the_old_default_hello_gets_nothing_sent(stack: TradingStack) -> None:
    """What the issue's outsider did: the default hello, then a send_new_order line."""
    order = outsider_order()
    reader, writer = await connect(stack)
    try:
        writer.write(b"0 hello %s\n" % stack.settings.gateway_link_stack().encode())
        writer.write(send_line(1, order))
        lines = await until_hung_up(reader)
    finally:
        writer.close()
    assert not any(ln.startswith(b"1 ") for ln in lines), lines
    assert_generic_refusal(lines, stack)
    await nothing_sent(stack, order)


async def test_a_call_without_any_hello_gets_nothing_sent(stack: TradingStack) -> None:
    order = outsider_order()
    reader, writer = await connect(stack)
    try:
        writer.write(send_line(1, order))
        lines = await until_hung_up(reader)
    finally:
        writer.close()
    assert_generic_refusal(lines, stack)
    await nothing_sent(stack, order)


async def test_a_proof_made_with_another_secret_gets_nothing_sent(stack: TradingStack) -> None:
    order = outsider_order()
    reader, writer = await connect(stack)
    try:
        line, _ = hello(stack, await challenge(reader), secret=secrets.token_hex(32))
        writer.write(line + send_line(1, order))
        lines = await until_hung_up(reader)
    finally:
        writer.close()
    assert_generic_refusal(lines, stack)
    await nothing_sent(stack, order)


async def test_a_proof_replayed_from_another_connection_gets_nothing_sent(
    stack: TradingStack,
) -> None:
    """An eavesdropper's copy of a shard worker's hello is worth nothing on its own connection:
    the proof covers the gateway's nonce, new for every connection."""
    order = outsider_order()
    r1, w1 = await connect(stack)
    r2, w2 = await connect(stack)
    try:
        seen, _ = hello(stack, await challenge(r1))  # the worker's hello on its connection
        await challenge(r2)
        w2.write(seen + send_line(1, order))  # replayed on the outsider's
        lines = await until_hung_up(r2)
    finally:
        w1.close()
        w2.close()
    assert_generic_refusal(lines, stack)
    await nothing_sent(stack, order)


async def test_the_gateway_proves_itself_too(stack: TradingStack) -> None:
    """Mutual: the gateway's ok carries its own proof over both nonces, which a fake gateway
    (no secret) cannot make; and with a right proof a raw client is served (the control: this
    file's absence checks would see an order that got through)."""
    from activities.gateway_link import gateway_proof

    s = stack.settings
    assert s.gateway_link_secret is not None
    # rests at the venue (no fill, nothing signalled to a workflow that does not exist)
    order = outsider_order()
    order.order_type, order.limit_price, order.time_in_force = "limit", "1.00", "gtc"
    reader, writer = await connect(stack)
    try:
        nonce = await challenge(reader)
        line, cn = hello(stack, nonce)
        writer.write(line)
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert answer == b"0 ok %s\n" % gateway_proof(
            s.gateway_link_secret.get_secret_value(), nonce, cn, s.gateway_link_stack()).encode()
        writer.write(send_line(1, order))
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"1 ok ")
    finally:
        writer.close()
    assert await stack.gateway.store.get_send(order.cl_ord_id) is not None
