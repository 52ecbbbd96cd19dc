"""The gateway link (activities/gateway_link.py) over real sockets: what it carries, and that
every way it can fail answers ``None`` (the workflow then uses the gateway's activity) except
the gateway's own non-retryable refusals, which are raised as they are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.gateway_link import GatewayLink, GatewayLinkServer, gateway_proof, worker_proof
from domain.execution import VenueAck, VenueEvent, VenueOrder
from sherwood.embedded import free_port
from tests.venue_reports import fix_report

STACK = "default/execution-gateway/test"
SECRET = "0123456789abcdef" * 4


def order(n: int = 1, qty: str = "10") -> VenueOrder:
    return VenueOrder(order_id=f"00000000-0000-0000-0000-{n:012d}", account_id="acct", shard=0,
                      symbol="AAPL", side="buy", qty=qty, order_type="market", time_in_force="day")


def report(o: VenueOrder, exec_id: str, exec_type: str, cum: str) -> VenueEvent:
    return fix_report(
        order_id=o.order_id, venue="MM1", exec_id=exec_id, msg_type="8", cl_ord_id=o.cl_ord_id,
        exec_type=exec_type,
        ord_status=exec_type, last_qty=cum, last_px="187.50", cum_qty=cum, leaves_qty="0",
        avg_px="187.50", transact_time="20261126-10:00:00.000")


async def filled(o: VenueOrder) -> VenueAck:
    return VenueAck(venue="MM1", cl_ord_id=o.cl_ord_id,
                    reports=[report(o, "E1", "0", "0"), report(o, "E2", "F", o.qty)])


class Recording:
    """A gateway ``send`` that fills every order and remembers what it was asked to send."""

    def __init__(self) -> None:
        self.calls: list[VenueOrder] = []

    async def __call__(self, o: VenueOrder) -> VenueAck:
        self.calls.append(o)
        return await filled(o)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[GatewayLinkServer]]]:
    servers: list[GatewayLinkServer] = []

    async def start(send: Callable[[VenueOrder], Awaitable[VenueAck]] = filled, *, port: int = 0,
                    stack: str = STACK, **kw: Any) -> GatewayLinkServer:
        server = GatewayLinkServer(send, "127.0.0.1", port, stack, secret=SECRET, **kw)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def link(server: GatewayLinkServer | int, *, secret: str = SECRET, **kw: Any) -> GatewayLink:
    port = server if isinstance(server, int) else server.port
    return GatewayLink(f"127.0.0.1:{port}", STACK, secret=secret, **kw)


async def test_carries_the_ack_with_its_reports(serve) -> None:  # type: ignore[no-untyped-def]
    client = link(await serve())
    try:
        o = order()
        ack = await client.send_new_order(o)
        assert ack == await filled(o)
    finally:
        await client.close()


async def test_concurrent_calls_are_multiplexed_and_answered_out_of_order(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow_first(o: VenueOrder) -> VenueAck:
        await asyncio.sleep(0.3 if o.order_id.endswith("1") else 0.0)
        return await filled(o)

    client = link(await serve(slow_first))
    try:
        t0 = time.monotonic()
        acks = await asyncio.gather(*(client.send_new_order(order(n)) for n in range(1, 21)))
        assert [a.reports[1].order_id for a in acks if a] == [order(n).order_id for n in range(1, 21)]
        assert time.monotonic() - t0 < 1.0  # one slow call did not hold the others up
    finally:
        await client.close()


async def test_non_retryable_refusal_is_raised_retryable_ones_fall_back(serve) -> None:  # type: ignore[no-untyped-def]
    async def refuse(o: VenueOrder) -> VenueAck:
        if o.symbol == "HALT":
            raise ApplicationError("trading in HALT is halted", type="symbol_halted", non_retryable=True)
        if o.qty == "2":
            raise ApplicationError("no venue is logged on", type="venue_unavailable")
        raise RuntimeError("database hiccup")

    client = link(await serve(refuse))
    try:
        with pytest.raises(ApplicationError) as err:
            o = order()
            o.symbol = "HALT"
            await client.send_new_order(o)
        assert err.value.type == "symbol_halted" and err.value.non_retryable
        assert await client.send_new_order(order(2, qty="2")) is None
        assert await client.send_new_order(order(3)) is None
        assert await client.send_new_order(order(4, qty="2")) is None  # the link still works
    finally:
        await client.close()


async def test_slower_than_the_timeout_falls_back(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow(o: VenueOrder) -> VenueAck:
        await asyncio.sleep(1.0)
        return await filled(o)

    client = link(await serve(slow), timeout_s=0.2)
    try:
        t0 = time.monotonic()
        assert await client.send_new_order(order()) is None
        assert time.monotonic() - t0 < 0.5
    finally:
        await client.close()


async def test_gateway_down_falls_back_at_once_and_is_retried_later(serve) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    client = link(port, retry_after_s=0.5)
    try:
        t0 = time.monotonic()
        assert await client.send_new_order(order()) is None  # refused
        await serve(port=port)
        assert await client.send_new_order(order()) is None  # not tried again yet
        assert time.monotonic() - t0 < 0.3
        await asyncio.sleep(0.6)
        assert await client.send_new_order(order()) is not None
    finally:
        await client.close()


async def test_connection_lost_mid_call_falls_back_and_reconnects(serve) -> None:  # type: ignore[no-untyped-def]
    started, release = asyncio.Event(), asyncio.Event()

    async def hang(o: VenueOrder) -> VenueAck:
        started.set()
        await release.wait()
        raise AssertionError("answered on a lost connection")

    port = free_port()
    server = await serve(hang, port=port)
    client = link(port, timeout_s=5)
    try:
        call = asyncio.create_task(client.send_new_order(order()))
        await started.wait()
        for writer in list(server._conns):  # the gateway's end of the connection goes away
            writer.transport.abort()
        t0 = time.monotonic()
        assert await call is None
        assert time.monotonic() - t0 < 1
        server.send = filled
        assert await client.send_new_order(order(2)) is not None  # a new connection
    finally:
        release.set()
        await client.close()


async def test_another_stacks_shard_worker_is_turned_away(serve) -> None:  # type: ignore[no-untyped-def]
    record = Recording()
    server = await serve(record, stack="default/execution-gateway/sherwood")
    client = link(server)
    try:
        assert await client.send_new_order(order()) is None
        assert record.calls == []  # nothing was sent by the wrong gateway
    finally:
        await client.close()


async def test_bad_lines_get_a_clear_error_and_change_nothing(serve) -> None:  # type: ignore[no-untyped-def]
    record = Recording()
    server = await serve(record)
    reader, writer = await authenticated(server)
    try:
        for line, code in ((b"7 cancel_everything {}\n", b'"unknown_operation"'),
                           (b"8 send_new_order {not json\n", b'"internal"'),
                           (b'9 send_new_order {"order_id": "x"}\n', b'"internal"')):
            writer.write(line)
            answer = await asyncio.wait_for(reader.readline(), 5)
            call_id, kind, body = answer.split(b" ", 2)
            assert (call_id, kind) == (line.split(b" ")[0], b"error") and code in body, answer
        assert record.calls == []
        writer.write(b"10 send_new_order " + _json(order()) + b"\n")  # the connection still serves
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"10 ok ")
    finally:
        writer.close()


def _json(o: VenueOrder) -> bytes:
    from activities.gateway_link import _encode

    return _encode(o)


# ============================================================================ authentication


async def authenticated(server: GatewayLinkServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection through the hello, the gateway's proof checked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head, _, nonce = (await asyncio.wait_for(reader.readline(), 5)).rstrip(b"\n").rpartition(b" ")
    assert head == b"0 challenge"
    mine = "ab" * 32
    proof = worker_proof(SECRET, nonce.decode(), mine, STACK)
    writer.write(b"0 hello %s %s %s\n" % (STACK.encode(), mine.encode(), proof.encode()))
    answer = await asyncio.wait_for(reader.readline(), 5)
    assert answer == b"0 ok %s\n" % gateway_proof(SECRET, nonce.decode(), mine, STACK).encode()
    return reader, writer


async def test_a_shard_worker_with_another_secret_is_turned_away(serve) -> None:  # type: ignore[no-untyped-def]
    record = Recording()
    server = await serve(record)
    client = link(server, secret="f" * 64)
    try:
        assert await client.send_new_order(order()) is None
        assert record.calls == [] and server.refused == 1
        assert server._conns == set()  # the gateway hung up
    finally:
        await client.close()


async def test_a_peer_silent_past_the_hello_timeout_is_hung_up_on(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(hello_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.readline()).startswith(b"0 challenge ")
        assert await asyncio.wait_for(reader.readline(), 2) == b""  # closed, nothing said
        assert server.refused == 1
    finally:
        writer.close()


async def test_a_gateway_that_cannot_prove_the_secret_is_not_used() -> None:
    """Mutual authentication: a process on the gateway's port (the gateway down, a stale
    address) that does not hold the secret gets the shard worker's hello, never an order."""
    received: list[bytes] = []
    hung_up = asyncio.Event()

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0 challenge " + b"cd" * 32 + b"\n")
        while line := await reader.readline():
            received.append(line)
            if line.startswith(b"0 hello "):
                writer.write(b"0 ok " + b"ee" * 32 + b"\n")  # a guess
        writer.close()
        hung_up.set()  # the shard worker closed the connection: it has said all it will

    fake_gateway = await asyncio.start_server(fake, "127.0.0.1", 0)
    client = link(fake_gateway.sockets[0].getsockname()[1])
    try:
        assert await client.send_new_order(order()) is None
        await asyncio.wait_for(hung_up.wait(), 5)
        assert [ln.split(b" ")[1] for ln in received] == [b"hello"]
    finally:
        await client.close()
        fake_gateway.close()


# ============================================================================ calls in flight


async def test_calls_beyond_the_in_flight_limit_are_refused_not_run(serve) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()
    running: list[VenueOrder] = []

    async def hold(o: VenueOrder) -> VenueAck:
        running.append(o)
        await release.wait()
        return await filled(o)

    server = await serve(hold, max_in_flight=4)
    reader, writer = await authenticated(server)
    try:
        for n in range(1, 8):
            writer.write(b"%d send_new_order %s\n" % (n, _json(order(n))))
        busy = [await asyncio.wait_for(reader.readline(), 5) for _ in range(3)]
        assert [b.split(b" ")[:2] for b in busy] == [[b"5", b"error"], [b"6", b"error"],
                                                     [b"7", b"error"]], busy
        assert all(b'"link_busy"' in b and b'"non_retryable": false' in b for b in busy), busy
        assert [o.order_id for o in running] == [order(n).order_id for n in range(1, 5)]
        release.set()
        done = sorted([await asyncio.wait_for(reader.readline(), 5) for _ in range(4)])
        assert [d.split(b" ")[:2] for d in done] == [[str(n).encode(), b"ok"] for n in range(1, 5)]
        writer.write(b"8 send_new_order " + _json(order(8)) + b"\n")  # slots free again
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"8 ok ")
    finally:
        writer.close()


async def test_the_shard_worker_waits_for_a_slot_instead_of_being_refused(serve) -> None:  # type: ignore[no-untyped-def]
    now, peak = 0, 0

    async def count(o: VenueOrder) -> VenueAck:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.05)
        now -= 1
        return await filled(o)

    server = await serve(count, max_in_flight=2)
    client = link(server, max_in_flight=2, timeout_s=5)
    try:
        acks = await asyncio.gather(*(client.send_new_order(order(n)) for n in range(1, 9)))
        assert all(ack is not None for ack in acks) and peak == 2
    finally:
        await client.close()


async def test_connections_that_have_not_proved_anything_are_capped(serve) -> None:  # type: ignore[no-untyped-def]
    """Peers that connect and never answer the challenge hold at most ``max_unauthenticated``
    connections (each for the hello timeout at most); past it a new one is closed at once, and a
    shard worker gets in again as soon as one is gone."""
    server = await serve(max_unauthenticated=2, hello_timeout_s=30)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    try:
        for reader, _ in idle:
            assert (await reader.readline()).startswith(b"0 challenge ")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.readline(), 5) == b""  # no challenge: closed
        writer.close()
        idle[0][1].close()
        for _ in range(100):  # the gateway sees it go
            if server.unauthenticated < 2:
                break
            await asyncio.sleep(0.02)
        client = link(server)
        try:
            assert await client.send_new_order(order()) is not None
        finally:
            await client.close()
    finally:
        for _, w in idle:
            w.close()
