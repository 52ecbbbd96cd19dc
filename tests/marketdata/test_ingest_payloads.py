"""What ingest publishes: Alpaca's v2 shapes byte for byte, and valid JSON whatever the feed sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from domain.universe import known_symbols
from marketdata.ingest import Ingest
from sherwood.contracts import RedisKeys
from sherwood.settings import Settings

T = 1_700_000_000_123_456_789
NOW = T + 10**9


@pytest.fixture
async def fixed_ingest(migrated: Settings, prefix: str) -> AsyncIterator[Ingest]:
    assert migrated.redis_url
    ing = Ingest(migrated.redis_url, prefix, known=known_symbols(), clock=lambda: NOW)
    await ing.start()
    yield ing
    await ing.close()


async def published(redis: Redis, prefix: str, ing: Ingest, lines: list[bytes]) -> list[tuple[str, bytes]]:
    """(channel's symbol, payload) of everything ``ing.process(lines)`` published, in order."""
    chan_prefix = RedisKeys(prefix).md_channel_prefix
    ps = redis.pubsub()
    await ps.psubscribe(chan_prefix + "*")
    assert (await ps.get_message(timeout=2.0)) is not None  # the psubscribe confirmation
    await ing.process(lines)
    await ing.sync()
    out = []
    while (m := await ps.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        out.append((m["channel"].decode().removeprefix(chan_prefix), m["data"]))
    await ps.aclose()
    return out


async def test_quote_trade_halt_resume_byte_for_byte(redis: Redis, prefix: str, fixed_ingest: Ingest) -> None:
    lines = [f"Q,AAPL,187.1,3,187.12,4,{T},Q,P,C".encode(), f"T,AAPL,187.11,100,{T + 1},42,Q,C".encode(),
             f"H,MSFT,{T + 2},T12".encode(), f"R,MSFT,{T + 3},".encode()]
    got = await published(redis, prefix, fixed_ingest, lines)
    quote = (b'{"T":"q","S":"AAPL","bx":"Q","bp":187.1,"bs":3,"ax":"P","ap":187.12,"as":4,'
             b'"t":"2023-11-14T22:13:20.123456789Z","c":["R"],"z":"C","sq":1,"it":1700000001123456789')
    trade = (b'{"T":"t","S":"AAPL","i":42,"x":"Q","p":187.11,"s":100,"t":"2023-11-14T22:13:20.123456790Z",'
             b'"c":["@"],"z":"C","sq":2,"it":1700000001123456789}')
    assert got == [
        ("AAPL", quote + b"}"),
        ("AAPL", trade),
        ("MSFT", b'{"T":"s","S":"MSFT","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Halt",'
                 b'"t":"2023-11-14T22:13:20.123456791Z","z":"C","sq":1,"it":1700000001123456789}'),
        ("MSFT", b'{"T":"s","S":"MSFT","sc":"T","sm":"Trading Resumption","rc":"T2","rm":"Resume",'
                 b'"t":"2023-11-14T22:13:20.123456792Z","z":"C","sq":2,"it":1700000001123456789}'),
    ]
    keys = RedisKeys(prefix)
    assert await redis.hgetall(keys.quotes_latest) == {b"AAPL": quote + b',"mx":30.0}'}
    assert await redis.hgetall(keys.trades_latest) == {b"AAPL": trade}
    assert await redis.hgetall(keys.md_seq) == {b"AAPL": b"2", b"MSFT": b"2"}
    assert await redis.smembers(keys.halts) == set()
    assert await redis.hgetall(keys.md_accepted) == {b"quotes": b"1", b"trades": b"1", b"statuses": b"2"}


async def test_prices_in_any_float_form_are_published_as_json_numbers(
        redis: Redis, prefix: str, fixed_ingest: Ingest) -> None:
    # float() takes all of these; as JSON numbers "187." / ".52" / "0187.10" are not
    lines = [f"Q,AAPL,187.,3,187.12,4,{T},Q,P,C".encode(), f"Q,MSFT,.51,3,.52,4,{T},Q,P,C".encode(),
             f"Q,NVDA,0187.10,3,187.20,4,{T},Q,P,C".encode()]
    got = await published(redis, prefix, fixed_ingest, lines)
    assert [(s, json.loads(p)["bp"], json.loads(p)["ap"]) for s, p in got] == [
        ("AAPL", 187.0, 187.12), ("MSFT", 0.51, 0.52), ("NVDA", 187.1, 187.2)]
    for value in (await redis.hgetall(RedisKeys(prefix).quotes_latest)).values():
        json.loads(value)


async def test_codes_that_would_break_the_json_are_malformed(
        redis: Redis, prefix: str, fixed_ingest: Ingest) -> None:
    bad = [f'Q,AAPL,187.10,3,187.12,4,{T},Q",P,C'.encode(),  # bid exchange
           f"Q,AAPL,187.10,3,187.12,4,{T},Q,P\\,C".encode(),  # ask exchange
           f'Q,AAPL,187.10,3,187.12,4,{T},Q,P,"}}'.encode(),  # tape
           f'T,AAPL,187.11,100,{T},1,Q"x,C'.encode(),  # trade exchange
           f"T,AAPL,187.11,100,{T},1,Q,C\u00e9".encode(),  # trade tape, not ASCII
           f"Q,AAPL,187.10,3,187.12,4,{T},,P,C".encode()]  # empty exchange
    good = f"Q,AAPL,187.10,3,187.12,4,{T + 1},Q,P,C".encode()
    got = await published(redis, prefix, fixed_ingest, [*bad, good])
    assert [json.loads(p)["bx"] for _s, p in got] == ["Q"]
    assert fixed_ingest.dropped["malformed"] == len(bad)
    # a halt is never lost to its reason code: a code that cannot be sent is replaced by the default
    got = await published(redis, prefix, fixed_ingest, [f'H,MSFT,{T},T1","x":"y'.encode()])
    assert [(s, json.loads(p)["sc"], json.loads(p)["rc"]) for s, p in got] == [("MSFT", "H", "T1")]
    assert await redis.smembers(RedisKeys(prefix).halts) == {b"MSFT"}


async def test_a_feed_connection_without_newlines_is_closed_not_buffered(fixed_ingest: Ingest) -> None:
    server = await fixed_ingest.serve_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    with contextlib.suppress(ConnectionError):
        for _ in range(24):  # 1.5 MiB, no line end
            writer.write(b"Q" * 65536)
            await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:  # closed with our bytes unread: a reset
        rest = b""
    assert rest == b""  # closed by ingest, not waiting for a line end forever
    writer.close()
