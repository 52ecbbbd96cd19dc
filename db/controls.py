"""Symbol controls: trading halts and ``close_only`` / ``blocked`` restrictions.

The directory database holds the truth (and an append-only history); Redis mirrors it for speed:
the set ``<prefix>:halts`` (also read by venues and by the gateway right before it routes), the
hash ``<prefix>:controls`` (symbol -> JSON) and the channel ``<prefix>:controls:events``, on which
every process's :class:`ControlsCache` learns a change within milliseconds. A cache also resyncs
periodically, so a missed message or a Redis restart heals itself; with Redis down it keeps the
last state it knew (and the gateway falls back to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.risk import SymbolControl
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)



def _encode(c: SymbolControl) -> str:
    return json.dumps({"halted": c.halted, "restriction": c.restriction, "reason": c.reason})


def _decode(raw: bytes | str) -> SymbolControl:
    d = json.loads(raw)
    return SymbolControl(bool(d.get("halted")), d.get("restriction"), d.get("reason") or "")


def status_message(symbol: str, c: SymbolControl) -> str:
    """Alpaca's trading status message (``T`` first, compact: the fan-out reads ``T`` at byte 6)
    for an operations halt or resumption. No ``sq``: sequence numbers are ingest's, per symbol;
    ``it`` is the publish time, as ingest stamps its messages."""
    now = time.time_ns()
    sec, ns = divmod(now, 1_000_000_000)
    t = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"
    return json.dumps({"T": "s", "S": symbol, "sc": "H" if c.halted else "T",
                       "sm": "Trading Halt" if c.halted else "Trading Resumption",
                       "rc": "", "rm": c.reason, "t": t, "z": "C", "it": now}, separators=(",", ":"))


class ControlsStore:
    """Writes controls (directory DB first, then the Redis mirror and the change event)."""

    def __init__(self, directory: AsyncEngine, redis: Redis | None, prefix: str) -> None:
        self.directory = directory
        self.redis = redis
        self.prefix = prefix

    async def set(self, symbol: str, *, actor: str, halted: bool | None = None,
                  restriction: str | bool | None = False, reason: str = "") -> SymbolControl:
        """Change a symbol's controls; ``restriction=False`` leaves it unchanged, None clears it.
        Returns once every process can see it (DB committed, Redis updated, event published)."""
        symbol = symbol.upper()
        async with self.directory.begin() as conn:
            row = (await conn.execute(text(
                "SELECT halted, restriction FROM symbol_controls WHERE symbol = :s FOR UPDATE"),
                {"s": symbol})).one_or_none()
            cur_halted = row.halted if row else False
            cur_restriction = row.restriction if row else None
            new = SymbolControl(cur_halted if halted is None else halted,
                                cur_restriction if restriction is False else restriction,  # type: ignore[arg-type]
                                reason)
            await conn.execute(text(
                "INSERT INTO symbol_controls (symbol, halted, restriction, reason, updated_by) "
                "VALUES (:s, :h, :r, :why, :a) ON CONFLICT (symbol) DO UPDATE SET halted = :h, "
                "restriction = :r, reason = :why, updated_by = :a, updated_at = clock_timestamp()"),
                {"s": symbol, "h": new.halted, "r": new.restriction, "why": reason, "a": actor})
            await conn.execute(text(
                "INSERT INTO symbol_control_events (symbol, halted, restriction, reason, actor) "
                "VALUES (:s, :h, :r, :why, :a)"),
                {"s": symbol, "h": new.halted, "r": new.restriction, "why": reason, "a": actor})
        await self._mirror(symbol, new, status=new.halted != cur_halted)
        return new

    async def _mirror(self, symbol: str, c: SymbolControl, *, status: bool = False) -> None:
        """The Redis mirror and the change event; with ``status`` (the halt flag changed) also a
        trading status ``T:"s"`` on the symbol's market-data channel, so stream clients subscribed
        to ``statuses`` see an operations halt or resumption like one from the feed."""
        if self.redis is None:
            return
        keys = RedisKeys(self.prefix)
        pipe = self.redis.pipeline(transaction=True)
        if status:
            pipe.publish(keys.md_channel(symbol), status_message(symbol, c))
        if c.halted:
            pipe.sadd(keys.halts, symbol)
        else:
            pipe.srem(keys.halts, symbol)
        pipe.hset(keys.controls, symbol, _encode(c))
        pipe.publish(keys.controls_events, json.dumps({"symbol": symbol, **json.loads(_encode(c))}))
        await pipe.execute()

    async def all(self) -> dict[str, SymbolControl]:
        async with self.directory.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT symbol, halted, restriction, reason FROM symbol_controls"))).all()
        return {r.symbol: SymbolControl(r.halted, r.restriction, r.reason) for r in rows
                if r.halted or r.restriction}

    async def resync_redis(self) -> None:
        """Rewrite the Redis mirror from the database (after a Redis restart)."""
        for symbol, c in (await self.all()).items():
            await self._mirror(symbol, c)


class ControlsCache:
    """A process-local view of every symbol's controls, pushed by Redis pub/sub."""

    def __init__(self, redis: Redis | None, prefix: str, *, resync_s: float = 5.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.resync_s = resync_s
        self._controls: dict[str, SymbolControl] = {}
        self._task: asyncio.Task[None] | None = None
        self.last_change = 0.0  # monotonic time the cache last applied a change
        self._ready = asyncio.Event()

    def get(self, symbol: str) -> SymbolControl | None:
        return self._controls.get(symbol.upper())

    def snapshot(self) -> dict[str, SymbolControl]:
        return dict(self._controls)

    async def start(self) -> None:
        if self.redis is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="controls-cache")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _load(self) -> None:
        assert self.redis is not None
        raw = await self.redis.hgetall(RedisKeys(self.prefix).controls)
        halted = {s.decode() if isinstance(s, bytes) else s
                  for s in await self.redis.smembers(RedisKeys(self.prefix).halts)}
        controls = {}
        for k, v in raw.items():
            sym = k.decode() if isinstance(k, bytes) else k
            controls[sym] = _decode(v)
        for sym in halted:  # halts written by the feed straight into the set
            c = controls.get(sym, SymbolControl())
            controls[sym] = SymbolControl(True, c.restriction, c.reason or "halted")
        for sym, c in list(controls.items()):
            if sym not in halted and c.halted:
                controls[sym] = SymbolControl(False, c.restriction, c.reason)
        self._controls = {s: c for s, c in controls.items() if c.halted or c.restriction}

    async def _run(self) -> None:
        assert self.redis is not None
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(RedisKeys(self.prefix).controls_events)
                await self._load()
                self._ready.set()
                next_resync = time.monotonic() + self.resync_s
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        d = json.loads(msg["data"])
                        old = self._controls.get(d["symbol"], SymbolControl())
                        # the feed announces halts only: a restriction set by operations stays
                        restriction = d["restriction"] if "restriction" in d else old.restriction
                        c = SymbolControl(bool(d.get("halted")), restriction, d.get("reason") or "")
                        if c.halted or c.restriction:
                            self._controls[d["symbol"]] = c
                        else:
                            self._controls.pop(d["symbol"], None)
                        self.last_change = time.monotonic()
                    if time.monotonic() >= next_resync:
                        await self._load()
                        next_resync = time.monotonic() + self.resync_s
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("controls cache lost Redis (%s); keeping the last known state", exc)
                self._ready.set()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


async def is_halted_now(redis: Redis | None, prefix: str, symbol: str,
                        fallback: ControlsCache | None) -> bool:
    """Authoritative-now halt check for the routing point: Redis itself, else the cache."""
    if redis is not None:
        try:
            return bool(await redis.sismember(RedisKeys(prefix).halts, symbol.upper()))
        except (RedisError, OSError) as exc:
            log.warning("halt check fell back to the cache: %s", exc)
    c = fallback.get(symbol) if fallback else None
    return bool(c and c.halted)
