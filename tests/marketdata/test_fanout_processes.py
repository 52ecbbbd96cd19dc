"""``fanout_processes`` > 1: several fan-out processes on one port, each serving its clients."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from db.accounts import OpenedAccount
from marketdata import batches
from marketdata.fanout import run_fanout
from marketdata.ingest import Ingest
from sherwood.embedded import free_port
from sherwood.settings import Settings
from tests.marketdata.conftest import Client
from tests.marketdata.helpers import q


async def _client(port: int, account: OpenedAccount) -> Client:
    ws = await connect(f"ws://127.0.0.1:{port}/v2/iex", open_timeout=10)
    c = Client(ws, False)
    assert await c.recv(10) == [{"T": "success", "msg": "connected"}]
    got = await c.request({"action": "auth", "key": account.credentials.key_id,
                           "secret": account.credentials.secret_key})
    assert got == [{"T": "success", "msg": "authenticated"}]
    return c


async def test_clients_of_the_second_process_get_quotes(
        migrated: Settings, prefix: str, account: OpenedAccount, ingest: Ingest, redis: Redis) -> None:
    port = free_port()
    settings = migrated.model_copy(update={"fanout_processes": 2, "fanout_port": port, "redis_prefix": prefix,
                                           "fanout_max_connections_per_key": 0,
                                           "fanout_ping_interval_s": None, "fanout_flush_interval_s": 0.005})
    stop = asyncio.Event()
    task = asyncio.create_task(run_fanout(settings, stop))
    chan = batches.channel(prefix, batches.shard_of(b"AAPL")).decode()
    clients: list[Client] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        # each process subscribes the channel once for its own clients: 2 subscribers on Redis
        # means a client landed on each (the kernel picks a process per connection)
        while (await redis.pubsub_numsub(chan))[0][1] < 2:
            assert loop.time() < end, "no client reached a second fan-out process"
            assert not task.done(), task
            try:
                c = await _client(port, account)
            except OSError:  # not listening yet
                await asyncio.sleep(0.2)
                continue
            clients.append(c)
            await c.request({"action": "subscribe", "quotes": ["AAPL"]})
        assert (await redis.pubsub_numsub(chan))[0][1] == 2
        await ingest.process([q("AAPL", "187.10", "187.12")])
        for c in clients:
            m = await c.until(lambda m: m.get("T") == "q", 5.0)
            assert m["S"] == "AAPL" and m["bp"] == 187.10
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.ws.close()
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_child_that_dies_ends_the_fanout(migrated: Settings, prefix: str) -> None:
    """The supervisor restarts the fan-out as one: a dead child is not left unnoticed."""
    settings = migrated.model_copy(update={"fanout_processes": 2, "fanout_port": free_port(),
                                           "redis_prefix": prefix})
    before = set(multiprocessing.active_children())
    task = asyncio.create_task(run_fanout(settings, asyncio.Event()))
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while not (children := set(multiprocessing.active_children()) - before):
        assert loop.time() < end and not task.done()
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # let it finish starting (or not: either way the death must show)
    for child in children:
        os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="fan-out process"):
        await asyncio.wait_for(task, 30)
