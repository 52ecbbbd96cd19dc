"""Redis users per process kind (sherwood/redis_acl.py) on an embedded Redis started with them, as
`sherwood dev` starts its own: the fan-out's user reads and subscribes to quotes and nothing else,
ingest's writes and publishes quotes and nothing else, the services' user does what the services
do under the prefix and none of Redis's dangerous commands. (The tests' machine Redis has no
users: the ACL applies where it is configured.)"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError

from domain.universe import known_symbols
from marketdata.ingest import Ingest
from marketdata.resp import RespConnection, RespError, encode
from sherwood.contracts import RedisKeys
from sherwood.embedded import EmbeddedRedis, free_port
from sherwood.redis_acl import USERS, acl_lines, acl_rules, url_for, user_name
from tests.marketdata.helpers import q

PREFIX = "acltest"
KEYS = RedisKeys(PREFIX)
PASSWORDS = {kind: f"pw-{kind}-{uuid.uuid4().hex[:8]}" for kind in USERS}
ACCOUNT = uuid.uuid4()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    rd = EmbeddedRedis(tmp_path_factory.mktemp("redis-acl"), port=free_port(), password="admin-pw",
                       acl=acl_lines(PREFIX, PASSWORDS))
    rd.start()
    yield rd
    rd.stop()


def url(rd: EmbeddedRedis, kind: str) -> str:
    return url_for(rd.url, user_name(PREFIX, kind), PASSWORDS[kind])


def client(rd: EmbeddedRedis, kind: str) -> redis.Redis:
    return redis.Redis.from_url(url(rd, kind), socket_timeout=5)


def test_the_fanout_user_reads_quotes_and_nothing_else(server: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(server.url)
    admin.hset(KEYS.quotes_latest, "AAPL", '{"bp":1,"ap":2}')
    admin.sadd(KEYS.halts, "HALTD")
    r = client(server, "quotes")
    assert r.hget(KEYS.quotes_latest, "AAPL") == b'{"bp":1,"ap":2}'
    assert r.hmget(KEYS.trades_latest, ["AAPL"]) == [None]
    assert r.smembers(KEYS.halts) == {b"HALTD"}
    for refused in (
        lambda: r.set(KEYS.account_shard(ACCOUNT), 1),  # an order's routing
        lambda: r.get(KEYS.account_shard(ACCOUNT)),
        lambda: r.delete(KEYS.ratelimit("k")),
        lambda: r.hset(KEYS.ratelimit("k"), "tokens", 1),
        lambda: r.hset(KEYS.quotes_latest, "AAPL", "forged"),  # reads only
        lambda: r.delete(KEYS.quotes_latest),
        lambda: r.srem(KEYS.halts, "HALTD"),
        lambda: r.hset(KEYS.controls, "AAPL", "{}"),
        lambda: r.publish(KEYS.md_channel("AAPL"), "forged"),
        lambda: r.publish(KEYS.trade_updates(ACCOUNT), "forged"),
        lambda: r.flushall(),
        lambda: r.keys("*"),
    ):
        with pytest.raises(NoPermissionError):
            refused()
    assert admin.hget(KEYS.quotes_latest, "AAPL") == b'{"bp":1,"ap":2}'
    p = r.pubsub()
    p.subscribe(KEYS.trade_updates(ACCOUNT))  # another account's order updates
    with pytest.raises(NoPermissionError):
        p.get_message(timeout=2)
    p.close()
    r.close()
    admin.close()


async def test_the_fanout_client_subscribes_as_its_user(server: EmbeddedRedis) -> None:
    """marketdata/resp.py's client (the fan-out's) authenticates with the URL's user and may
    SUBSCRIBE and PSUBSCRIBE the quote channels; PUBLISH is refused."""
    conn = await RespConnection.connect(url(server, "quotes"), select_db=False)
    try:
        sub, psub = await conn.pipeline([encode("SUBSCRIBE", KEYS.md_channel("AAPL")),
                                         encode("PSUBSCRIBE", KEYS.md_channel_prefix + "*")])
        assert sub == [b"subscribe", KEYS.md_channel("AAPL").encode(), 1]
        assert psub == [b"psubscribe", (KEYS.md_channel_prefix + "*").encode(), 2]
    finally:
        conn.close()
    conn = await RespConnection.connect(url(server, "quotes"))
    try:
        (reply,) = await conn.pipeline([encode("PUBLISH", KEYS.md_channel("AAPL"), "x")])
        assert isinstance(reply, RespError) and str(reply).startswith("NOPERM")
    finally:
        conn.close()


async def test_ingest_publishes_quotes_the_fanout_user_receives(server: EmbeddedRedis) -> None:
    """The real ingest, as its user, writes the latest quote and publishes it; the fan-out's user
    reads both."""
    reader = client(server, "quotes")
    p = reader.pubsub()
    p.subscribe(KEYS.md_channel("AAPL"))
    assert p.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    ing = Ingest(url(server, "ingest"), PREFIX, known=known_symbols())
    await ing.start()
    try:
        assert await ing.process([q("AAPL", "187.40", "187.42")]) == 1
        await ing.sync()
    finally:
        await ing.close()
    deadline = time.monotonic() + 5
    msg = None
    while msg is None or msg["type"] != "message":
        assert time.monotonic() < deadline, "the quote was not delivered"
        msg = await asyncio.to_thread(p.get_message, timeout=0.5)
    assert json.loads(msg["data"])["bp"] == 187.4
    assert json.loads(reader.hget(KEYS.quotes_latest, "AAPL") or b"{}")["ap"] == 187.42
    assert ing.dropped.get("redis_unavailable", 0) == 0
    p.close()
    reader.close()


def test_the_ingest_user_writes_quotes_and_touches_nothing_else(server: EmbeddedRedis) -> None:
    r = client(server, "ingest")
    r.hset(KEYS.quotes_latest, "MSFT", "{}")
    r.hset(KEYS.md_seq, "MSFT", 1)
    r.hincrby(KEYS.md_dropped, "stale", 1)
    r.sadd(KEYS.halts, "MSFT")  # a halt off the feed
    r.publish(KEYS.md_channel("MSFT"), "{}")
    r.publish(KEYS.controls_events, "{}")
    for refused in (
        lambda: r.set(KEYS.account_shard(ACCOUNT), 1),
        lambda: r.delete(KEYS.ratelimit("k")),
        lambda: r.hset(KEYS.controls, "MSFT", "{}"),  # the operators' controls
        lambda: r.publish(KEYS.trade_updates(ACCOUNT), "forged"),
        lambda: r.set(KEYS.bank_instruction("x"), "approve"),
        lambda: r.set("other-stack:quotes:latest", "x"),
        lambda: r.flushall(),
        lambda: r.config_get("*"),
    ):
        with pytest.raises(NoPermissionError):
            refused()
    r.close()


async def test_the_service_user_does_what_the_services_do(server: EmbeddedRedis) -> None:
    from api.ratelimit import _LUA
    from sherwood.redis_client import RedisTimeouts, redis_from_url

    r = redis_from_url(url(server, "service"), RedisTimeouts())
    try:
        await r.set(KEYS.account_shard(ACCOUNT), 2, ex=60)  # db/router.py
        assert await r.get(KEYS.account_shard(ACCOUNT)) == b"2"
        allowed, _, _ = await r.register_script(_LUA)(  # api/ratelimit.py
            keys=[KEYS.ratelimit("acct")], args=[10, 10, 1, 1])
        assert allowed == 1
        pipe = r.pipeline(transaction=True)  # db/controls.py: the mirror of a halt
        pipe.sadd(KEYS.halts, "AAPL")
        pipe.hset(KEYS.controls, "AAPL", "{}")
        pipe.publish(KEYS.controls_events, "{}")
        pipe.publish(KEYS.md_channel("AAPL"), "{}")
        await pipe.execute()
        await r.publish(KEYS.trade_updates(ACCOUNT), "{}")  # workers/outbox.py
        ps = r.pubsub()  # api/routers/stream.py
        await ps.subscribe(KEYS.trade_updates(ACCOUNT))
        assert (await ps.get_message(timeout=2))["type"] == "subscribe"  # type: ignore[index]
        await ps.aclose()
        # api/admission.py: take a slot, wait for freed ones (a pattern subscription), and
        # the shard's letting go (workers/outbox.py) announces the freed slot
        from sherwood.admission_slots import LET_GO, TAKE, let_go_keys
        assert await r.register_script(TAKE)(
            keys=[KEYS.admission(0), KEYS.admission_holds(0)], args=[2, 60000, "o1"]) == 1
        freed = r.pubsub(ignore_subscribe_messages=True)
        await freed.psubscribe(KEYS.admission_freed_pattern())
        assert await r.register_script(LET_GO)(keys=let_go_keys(KEYS, 0), args=["drop", "o1"]) == 1
        m = None
        while m is None:
            m = await freed.get_message(timeout=2)
        assert m["data"] == b"1"
        await freed.aclose()
        for refused in (r.flushall(), r.keys("*"), r.config_get("*"), r.set("elsewhere", 1)):
            with pytest.raises(NoPermissionError):
                await refused
    finally:
        await r.aclose()


def test_the_users_come_back_with_a_restart(tmp_path: Path) -> None:
    rd = EmbeddedRedis(tmp_path / "redis", port=free_port(), password="admin-pw",
                       acl=acl_lines(PREFIX, PASSWORDS))
    rd.start()
    rd.stop()
    rd.start()
    try:
        r = client(rd, "quotes")
        assert r.smembers(KEYS.halts) == set()
        with pytest.raises(NoPermissionError):
            r.set(KEYS.halts, 1)
        r.close()
        assert b"pw-quotes" not in Path(f"/proc/{rd.proc.pid}/cmdline").read_bytes()  # type: ignore[union-attr]
    finally:
        rd.stop()


def test_the_acl_lines() -> None:
    lines = acl_lines("sw", {"quotes": "a", "service": "b"})
    assert lines == [f"user sw-quotes reset on >a {acl_rules('sw', 'quotes')}",
                     f"user sw-service reset on >b {acl_rules('sw', 'service')}"]
    assert "~sw:quotes:latest" in lines[0] and "&sw:md:*" in lines[0] and "+publish" not in lines[0]
    assert "~sw:*" in lines[1] and "-@dangerous" in lines[1]
    with pytest.raises(ValueError):
        acl_lines("sw", {"quotes": "with space"})
    with pytest.raises(ValueError):
        EmbeddedRedis(Path("/tmp"), port=1, acl=["requirepass x"])
    assert url_for("redis://:p@h:1/0", "u", "p/w") == "redis://u:p%2Fw@h:1/0"


def test_the_lines_sherwood_redis_acl_prints_apply_to_a_configured_redis(server: EmbeddedRedis) -> None:
    """What an operator does on a Redis of their own: apply the ACL SETUSER commands
    `sherwood redis-acl --commands` prints; the users then work as planned."""
    import os
    import shlex
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env.update(SHERWOOD_REDIS_PREFIX="opstack", SHERWOOD_REDIS_QUOTES_PASSWORD="q-pw",
               SHERWOOD_REDIS_INGEST_PASSWORD="i-pw")
    out = subprocess.run([sys.executable, "-m", "sherwood", "redis-acl", "--commands"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == len(USERS) and all(line.startswith("ACL SETUSER opstack-") for line in lines)
    assert "redis://opstack-service:" in out.stderr  # the URL each process kind gets
    admin = redis.Redis.from_url(server.url)
    for line in lines:
        assert admin.execute_command(*shlex.split(line)) in (b"OK", "OK", True)
    r = redis.Redis.from_url(url_for(server.url, "opstack-quotes", "q-pw"))
    assert r.hget("opstack:quotes:latest", "AAPL") is None
    with pytest.raises(NoPermissionError):
        r.hset("opstack:quotes:latest", "AAPL", "x")
    r.close()
    admin.close()
