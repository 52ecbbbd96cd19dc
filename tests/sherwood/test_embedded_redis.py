"""The embedded Redis of `sherwood dev`: what it keeps on disk stays bounded under the feed's
quote writes, and a start with a large dataset waits until Redis has loaded it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from sherwood.contracts import RedisKeys
from sherwood.embedded import EmbeddedError, EmbeddedRedis, free_port

# Redis's own knob to make loading a dataset take seconds: a pause per key loaded (while
# loading, Redis serves clients every 2 MB read, so the keys are large).
SLOW_LOAD = {"key-load-delay": "100"}
KEYS = 20_000


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def populate(url: str, keys: int) -> None:
    r = redis.Redis.from_url(url)
    r.eval("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'k' .. i, ARGV[2]) end return 1",
           0, keys, "x" * 1024)
    r.save()
    r.close()


def test_a_start_on_a_large_dataset_waits_until_it_is_loaded(tmp_path: Path) -> None:
    port = free_port()
    rd = EmbeddedRedis(tmp_path / "redis", port=port)
    url = rd.start()
    try:
        populate(url, KEYS)
    finally:
        rd.stop()
    slow = EmbeddedRedis(tmp_path / "redis", port=port, options=SLOW_LOAD)
    slow.start()
    try:
        r = redis.Redis.from_url(url, socket_timeout=5)
        # answered at once: no BusyLoadingError ("Redis is loading the dataset in memory")
        assert r.dbsize() == KEYS
        assert r.info("persistence")["loading"] == 0
    finally:
        slow.stop()


def test_a_start_gives_up_on_a_load_that_takes_too_long(tmp_path: Path) -> None:
    port = free_port()
    rd = EmbeddedRedis(tmp_path / "redis", port=port)
    url = rd.start()
    try:
        populate(url, KEYS)
    finally:
        rd.stop()
    slow = EmbeddedRedis(tmp_path / "redis", port=port, options=SLOW_LOAD, load_timeout_s=0.5)
    with pytest.raises(EmbeddedError, match="still loading"):
        slow.start()
    assert slow.proc is None or slow.proc.poll() is not None  # not left running


def test_the_disk_stays_bounded_under_a_flood_of_quote_writes(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    rd = EmbeddedRedis(data, port=free_port())
    url = rd.start()
    keys = RedisKeys("flood")
    symbols = [f"S{n:05d}" for n in range(5_000)]
    quote = ('{"T":"q","S":"%s","bx":"V","bp":187.41,"bs":3,"ax":"V","ap":187.5,"as":2,'
             '"t":"2026-01-02T15:04:05.123456789Z","c":["R"],"z":"C","sq":%d,"it":1,"mx":30.0}')
    try:
        r = redis.Redis.from_url(url)
        written = 0
        for seq in range(40):  # 200,000 latest-quote writes, ~30 MB of quotes
            mapping = {sym: quote % (sym, seq) for sym in symbols}
            r.hset(keys.quotes_latest, mapping=mapping)
            r.hset(keys.md_seq, mapping={sym: seq for sym in symbols})
            written += sum(len(v) for v in mapping.values())
        assert written > 30_000_000
        assert r.hlen(keys.quotes_latest) == 5_000
        r.close()
    finally:
        rd.stop()
    # what is on disk is about the live dataset (~2 MB), not the history of writes
    assert dir_size(data) < 8_000_000, sorted((p.name, p.stat().st_size) for p in data.iterdir())
    rd.start()  # and it starts again
    rd.stop()


def test_a_password_is_required_and_the_url_carries_it(tmp_path: Path) -> None:
    """The embedded Redis of `sherwood dev` runs with requirepass (the machine's Redis in CI has
    none): a client without the password is refused, the URL's password is accepted, and the
    password is on no command line."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from sherwood.redis_client import RedisTimeouts, redis_from_url

    rd = EmbeddedRedis(tmp_path / "redis", port=free_port(), password="s3cret-Pass_word")
    url = rd.start()
    try:
        assert url.startswith("redis://:s3cret-Pass_word@")
        # asked once: redis-py retries a refused login 3 times with backoff by default (~2.4 s)
        once = Retry(NoBackoff(), 0)
        anonymous = redis.Redis(host="127.0.0.1", port=rd.port, retry=once)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(host="127.0.0.1", port=rd.port, password="nope", retry=once)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
        assert rd.proc is not None
        assert b"s3cret" not in Path(f"/proc/{rd.proc.pid}/cmdline").read_bytes()
        assert not any(b"s3cret" in p.read_bytes() for p in (tmp_path / "redis").rglob("*") if p.is_file())

        async def ping() -> bool:
            r = redis_from_url(url, RedisTimeouts(2, 2, 15))
            try:
                return bool(await r.ping())
            finally:
                await r.aclose()

        import asyncio

        assert asyncio.run(ping())
    finally:
        rd.stop()


def test_a_password_redis_cannot_read_from_its_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EmbeddedRedis(tmp_path, port=free_port(), password='a" b')
