"""Market-data ingest: validate, normalize, sequence, publish; latest quote/trade; halts; bars.

Input: the exchange feed's line protocol (see :mod:`simulators.exchange_feed`), over TCP on
``127.0.0.1:<marketdata_feed_port>`` or handed in-process to :meth:`Ingest.process`.

Per line:

* **validate** -- a bad tick is dropped and counted by reason in the Redis hash
  ``<prefix>:md:dropped`` (and :attr:`Ingest.dropped`): ``malformed``, ``unknown_symbol`` (not in
  ``domain.universe.universe(marketdata_universe_size)``), ``non_positive_price``, ``absurd_price``
  (above ``marketdata_max_price`` or more than ``marketdata_max_jump`` off the symbol's last
  accepted price), ``bad_size``, ``crossed`` (bid > ask), ``locked`` (bid == ask), ``stale``
  (older than ``marketdata_max_tick_age_s``, or a trade for a minute whose bar went out and is
  no longer kept for updates),
  ``future`` (more than ``marketdata_max_future_s`` ahead), ``out_of_order`` (older than the
  symbol's last accepted tick), ``halted`` (a trade while halted), ``redis_unavailable``.
  Accepted counts are in ``<prefix>:md:accepted`` (``quotes``, ``trades``, ``statuses``, ``bars``).
* **normalize** to Alpaca's v2 stream shapes (``T`` first; prices as JSON numbers in their
  shortest form; ``t`` RFC 3339 with nanoseconds) plus two fields of ours: ``sq`` the per-symbol
  sequence number (one counter per symbol over q/t/s/b, +1 per message, persisted in the hash
  ``<prefix>:md:seq`` so a restart continues it) and ``it`` the ingest time (ns since the epoch).
* **publish** on the channel ``<prefix>:md:<SYMBOL>`` (one pipelined write per batch), update the
  hashes ``<prefix>:quotes:latest`` (the format :mod:`marketdata.quotes` reads, plus ``mx``: the
  ``quote_max_age_s`` after which readers treat it as no quote) and ``<prefix>:trades:latest``.
  Halts go to the set ``<prefix>:halts`` (what the simulated market makers read) and out as
  ``T:"s"`` messages.
* **bars**: trades aggregate into 1-minute bars; every ``marketdata_bar_flush_s`` the change since
  the last flush is upserted (merged, see :mod:`marketdata.bars`) into ``bars_1min`` of the
  market-data database; ``marketdata_bar_grace_s`` after a minute ends its final bar is published
  as ``T:"b"``, followed by the New York day's bar so far ``T:"d"`` (read from ``bars_1day``,
  ``t`` the day's midnight in New York; only with a database). The same deltas, merged per
  bucket (:func:`marketdata.bars.rollup`), are upserted into ``bars_5min``, ``bars_15min``,
  ``bars_1hour`` and ``bars_1day`` in the same transaction: every timeframe is aggregated as
  trades arrive, never on a request. Accepted trades go to ``trades`` in the same transaction
  (historical trades; deleted after ``marketdata_trade_retention_s``, swept every minute). The
  writes are :class:`marketdata.store.MarketDataStore`'s; the bar half of the ingest is
  :class:`marketdata.ingest_bars.IngestBars`. A trade that
  arrives after its minute's bar went out (in order, within ``marketdata_max_tick_age_s``)
  updates that bar: merged into Postgres and published as ``T:"u"`` (then ``T:"d"``) at the next
  flush.

One ingest process per symbol set (sequence numbers are per process). If Redis is down the ticks
of that moment are dropped (``redis_unavailable``) and ingest reconnects with backoff: the read
path is approximate; bars keep accumulating and go to Postgres regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketdata.bars import minute_start
from marketdata.ingest_bars import IngestBars, rfc3339_ns
from marketdata.resp import RespConnection, RespError, encode, encode_publish
from marketdata.store import MarketDataStore
from sherwood import metrics
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

REASONS = ("malformed", "unknown_symbol", "non_positive_price", "absurd_price", "bad_size", "crossed",
           "locked", "stale", "future", "out_of_order", "halted", "redis_unavailable")


class Ingest(IngestBars):
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        *,
        known: frozenset[str],
        engine: AsyncEngine | None = None,
        max_price: float = 1_000_000.0,
        max_jump: float = 0.5,
        max_tick_age_s: float = 5.0,
        max_future_s: float = 2.0,
        quote_max_age_s: float = 30.0,
        bar_flush_s: float = 1.0,
        bar_grace_s: float = 2.0,
        trade_retention_s: float = 7 * 86_400.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.keys = RedisKeys(prefix)
        self.known = known
        self.engine = engine
        self.store = MarketDataStore(engine) if engine is not None else None
        self.trade_retention_ns = int(trade_retention_s * 1e9)
        self.trade_rows = []
        self._swept_at = 0.0
        self.max_price = max_price
        self.max_jump = max_jump
        self.max_age_ns = int(max_tick_age_s * 1e9)
        self.max_future_ns = int(max_future_s * 1e9)
        self.quote_max_age_s = quote_max_age_s
        self.bar_flush_s = bar_flush_s
        self.bar_grace_ns = int(bar_grace_s * 1e9)
        self.clock = clock
        self.dropped: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.accepted: dict[str, int] = {"quotes": 0, "trades": 0, "statuses": 0, "bars": 0}
        self._pending_counts: dict[bytes, dict[str, int]] = {}
        self.seq: dict[str, int] = {}
        self.last_px: dict[str, float] = {}
        self.last_t: dict[str, int] = {}
        self.halted: set[str] = set()
        self.bars = {}
        self.bar_delta = {}
        self.final_minute = {}
        self.recent_final = {}
        self.updated = set()
        self.trades_log: list[tuple[str, int, Decimal, int]] | None = None  # tests: accepted trades
        self._conn: RespConnection | None = None
        self._down_until = 0.0
        self._backoff = 0.05
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._prefix_b = prefix.encode()
        self._chan_cache: dict[str, bytes] = {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_conn()
        if self._conn is not None:
            await self._load_state()
        self._tasks.append(asyncio.create_task(self._bar_loop(), name="ingest-bars"))

    async def _load_state(self) -> None:
        assert self._conn is not None
        seq, halts = await self._conn.pipeline([encode("HGETALL", self.keys.md_seq),
                                                encode("SMEMBERS", self.keys.halts)])
        if isinstance(seq, list):
            for k, v in zip(seq[::2], seq[1::2], strict=True):
                if isinstance(k, bytes) and isinstance(v, bytes):
                    self.seq[k.decode()] = max(self.seq.get(k.decode(), 0), int(v))
        if isinstance(halts, list):
            self.halted |= {h.decode() for h in halts if isinstance(h, bytes)}

    async def serve_tcp(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self._handle_feed, host, port, limit=1 << 20)
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        with contextlib.suppress(Exception):
            await self.flush_bars(final_all=False)
        if self._conn is not None:
            conn = self._conn
            with contextlib.suppress(OSError, RespError, asyncio.TimeoutError):
                await asyncio.wait_for(conn.pipeline([encode("PING")]) if self._reader_task is None
                                       else self._wait_replies(), 2.0)
            self._drop_conn(conn)
            await conn.aclose()

    async def _handle_feed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rest = b""
        try:
            while True:
                chunk = await reader.read(1 << 18)
                if not chunk:
                    break
                data = rest + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                rest = data[cut + 1:]
                await self.process(data[:cut].split(b"\n"))
        except (ConnectionError, OSError) as exc:
            log.info("feed connection lost: %s", exc)
        finally:
            writer.close()

    # -- Redis ------------------------------------------------------------------------------
    async def _ensure_conn(self) -> RespConnection | None:
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._down_until:
            return None
        try:
            self._conn = await RespConnection.connect(self.redis_url, connect_timeout=1.0)
            self._backoff = 0.05
            log.info("ingest connected to Redis")
            return self._conn
        except (TimeoutError, OSError, RespError) as exc:
            self._down_until = time.monotonic() + self._backoff
            log.warning("Redis unavailable (%s); retrying in %.2fs", exc, self._backoff)
            self._backoff = min(self._backoff * 2, 2.0)
            return None

    async def _send(self, commands: list[bytes], n_messages: int) -> bool:
        """Write a batch; replies are consumed by a reader task (no round trip per batch)."""
        async with self._lock:
            conn = await self._ensure_conn()
            if conn is None:
                self.dropped["redis_unavailable"] += n_messages
                return False
            try:
                if self._reader_task is not None and self._reader_task.done():
                    # the reply reader ended (EOF or a reset): this connection is dead
                    raise RespError("the Redis connection was closed")
                if self._reader_task is None:
                    self._reader_task = asyncio.create_task(self._consume_replies(conn))
                conn.write(b"".join(commands))
                self._outstanding += len(commands)
                await asyncio.wait_for(conn.writer.drain(), 5.0)
                while self._outstanding > 100_000 and not self._reader_task.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if self._reader_task.done():
                    raise RespError("reply reader stopped")
            # RuntimeError: uvloop's write on a transport it closed after a reset
            except (TimeoutError, OSError, RespError, RuntimeError) as exc:
                log.warning("Redis write failed (%s); reconnecting", exc)
                self._drop_conn(conn)
                self.dropped["redis_unavailable"] += n_messages
                return False
            return True

    def _drop_conn(self, conn: RespConnection) -> None:
        conn.close()
        if self._conn is conn:
            self._conn = None
            self._outstanding = 0
            self._down_until = time.monotonic() + self._backoff
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    async def _consume_replies(self, conn: RespConnection) -> None:
        """Every ingest command answers one integer line (or one error line): count lines."""
        reader = conn.reader
        tail = b""
        while True:
            try:
                chunk = await reader.read(1 << 20)
            except OSError as exc:  # a reset: the next write drops the connection
                log.warning("the ingest connection to Redis failed: %s", exc)
                return
            if not chunk:
                log.warning("Redis closed the ingest connection")
                return
            data = tail + chunk
            self._outstanding -= data.count(b"\r\n")
            cut = data.rfind(b"\r\n")
            tail = data[cut + 2:]
            if data.startswith(b"-") or b"\r\n-" in data:
                log.warning("Redis error reply in ingest pipeline: %r", data[data.find(b"-"):][:200])

    async def _wait_replies(self) -> None:
        while self._outstanding > 0 and self._reader_task is not None and not self._reader_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    async def sync(self) -> None:
        """Wait until Redis has answered every command written so far (tests, benches)."""
        await self._wait_replies()

    def _chan(self, sym: str) -> bytes:
        c = self._chan_cache.get(sym)
        if c is None:
            c = self._chan_cache[sym] = self.keys.md_channel(sym).encode()
        return c

    def _next_seq(self, sym: str) -> int:
        s = self.seq.get(sym, 0) + 1
        self.seq[sym] = s
        return s

    # -- the hot path -----------------------------------------------------------------------
    async def process(self, lines: list[bytes]) -> int:
        """Validate, normalize and publish a batch of feed lines. Returns how many were accepted."""
        now = self.clock()
        oldest = now - self.max_age_ns
        newest = now + self.max_future_ns
        known = self.known
        dropped = self.dropped
        last_px = self.last_px
        last_t = self.last_t
        max_price = self.max_price
        max_jump = self.max_jump
        cmds: list[bytes] = []
        latest_q: dict[str, str] = {}
        latest_t: dict[str, str] = {}
        halts_add: list[str] = []
        halts_del: list[str] = []
        nq = nt = ns = 0
        mx = self.quote_max_age_s
        cached_t, cached_ts = -1, ""
        for line in lines:
            if not line:
                continue
            p = line.split(b",")
            kind = p[0]
            try:
                sym = p[1].decode()
                if sym not in known:
                    dropped["unknown_symbol"] += 1
                    continue
                if kind == b"Q":
                    bps = p[2].decode()
                    aps = p[4].decode()
                    bp = float(bps)
                    bs = int(p[3])
                    ap = float(aps)
                    asz = int(p[5])
                    t = int(p[6])
                    bx = p[7].decode()
                    ax = p[8].decode()
                    z = p[9].decode()
                elif kind == b"T":
                    px = float(p[2])
                    size = int(p[3])
                    t = int(p[4])
                    tid = int(p[5])
                    x = p[6].decode()
                    z = p[7].decode()
                    dpx = Decimal(p[2].decode())
                elif kind == b"H" or kind == b"R":
                    t = int(p[2])
                    code = p[3].decode() if len(p) > 3 else ""
                else:
                    dropped["malformed"] += 1
                    continue
            except (IndexError, ValueError, UnicodeDecodeError, InvalidOperation):
                dropped["malformed"] += 1
                continue
            if t < oldest:
                dropped["stale"] += 1
                continue
            if t > newest:
                dropped["future"] += 1
                continue
            if t < last_t.get(sym, 0):
                dropped["out_of_order"] += 1
                continue
            if kind == b"Q":
                if not (bp > 0 and ap > 0):
                    dropped["non_positive_price"] += 1
                    continue
                if bp > max_price or ap > max_price or bp != bp or ap != ap:
                    dropped["absurd_price"] += 1
                    continue
                mid = (bp + ap) * 0.5
                ref = last_px.get(sym)
                if ref is not None and abs(mid - ref) > max_jump * ref:
                    dropped["absurd_price"] += 1
                    continue
                if bs < 0 or asz < 0:
                    dropped["bad_size"] += 1
                    continue
                if bp > ap:
                    dropped["crossed"] += 1
                    continue
                if bp == ap:
                    dropped["locked"] += 1
                    continue
                last_px[sym] = mid
                last_t[sym] = t
                seq = self._next_seq(sym)
                if not bps.replace(".", "", 1).isdigit():  # normalize: a plain JSON number
                    bps = repr(bp)
                if not aps.replace(".", "", 1).isdigit():
                    aps = repr(ap)
                if t != cached_t:
                    cached_t, cached_ts = t, rfc3339_ns(t)
                body = (f'{{"T":"q","S":"{sym}","bx":"{bx}","bp":{bps},"bs":{bs},"ax":"{ax}",'
                        f'"ap":{aps},"as":{asz},"t":"{cached_ts}","c":["R"],"z":"{z}",'
                        f'"sq":{seq},"it":{now}')
                cmds.append(encode_publish(self._chan(sym), (body + "}").encode()))
                latest_q[sym] = f'{body},"mx":{mx}}}'
                nq += 1
            elif kind == b"T":
                if not px > 0:
                    dropped["non_positive_price"] += 1
                    continue
                ref = last_px.get(sym)
                if px > max_price or (ref is not None and abs(px - ref) > max_jump * ref):
                    dropped["absurd_price"] += 1
                    continue
                if size <= 0:
                    dropped["bad_size"] += 1
                    continue
                if sym in self.halted:
                    dropped["halted"] += 1
                    continue
                minute = minute_start(t)
                if minute <= self.final_minute.get(sym, -1):
                    # its bar went out already: a trade in order but after the grace updates it
                    # (T:"u") while the bar is recent; older ones are stale
                    done = self.recent_final.get((sym, minute))
                    if done is None:
                        dropped["stale"] += 1
                        continue
                    done.add(dpx, size)
                    self.updated.add((sym, minute))
                last_t[sym] = t
                self._add_trade(sym, minute, dpx, size)
                if self.trades_log is not None:
                    self.trades_log.append((sym, t, dpx, size))
                if self.store is not None:
                    self.trade_rows.append((sym, t, tid, x, dpx, size, z))
                seq = self._next_seq(sym)
                msg = (f'{{"T":"t","S":"{sym}","i":{tid},"x":"{x}","p":{px!r},"s":{size},'
                       f'"t":"{rfc3339_ns(t)}","c":["@"],"z":"{z}","sq":{seq},"it":{now}}}')
                cmds.append(encode_publish(self._chan(sym), msg.encode()))
                latest_t[sym] = msg
                nt += 1
            else:
                last_t[sym] = t
                seq = self._next_seq(sym)
                if kind == b"H":
                    self.halted.add(sym)
                    halts_add.append(sym)
                    msg = (f'{{"T":"s","S":"{sym}","sc":"H","sm":"Trading Halt","rc":"{code or "T1"}",'
                           f'"rm":"Halt","t":"{rfc3339_ns(t)}","z":"C","sq":{seq},"it":{now}}}')
                else:
                    self.halted.discard(sym)
                    halts_del.append(sym)
                    msg = (f'{{"T":"s","S":"{sym}","sc":"T","sm":"Trading Resumption",'
                           f'"rc":"{code or "T2"}","rm":"Resume","t":"{rfc3339_ns(t)}","z":"C",'
                           f'"sq":{seq},"it":{now}}}')
                cmds.append(encode_publish(self._chan(sym), msg.encode()))
                ns += 1
        n = nq + nt + ns
        if latest_q:
            args: list[bytes | str] = ["HSET", self.keys.quotes_latest]
            for k, v in latest_q.items():
                args += [k, v]
            cmds.append(encode(*args))
        if latest_t:
            args = ["HSET", self.keys.trades_latest]
            for k, v in latest_t.items():
                args += [k, v]
            cmds.append(encode(*args))
        if halts_add:
            cmds.append(encode("SADD", self.keys.halts, *halts_add))
        if halts_del:
            cmds.append(encode("SREM", self.keys.halts, *halts_del))
        # tell every trading process at once (db.controls.ControlsCache), not at its next resync
        for sym, halted in [(s, True) for s in halts_add] + [(s, False) for s in halts_del]:
            cmds.append(encode_publish(self.keys.controls_events.encode(), json.dumps(
                {"symbol": sym, "halted": halted, "reason": "market-data halt" if halted else ""}).encode()))
        touched = set(latest_q) | set(latest_t) | set(halts_add) | set(halts_del)
        if touched:
            args = ["HSET", self.keys.md_seq]
            for sym in touched:
                args += [sym, str(self.seq[sym])]
            cmds.append(encode(*args))
        self.accepted["quotes"] += nq
        self.accepted["trades"] += nt
        self.accepted["statuses"] += ns
        cmds.extend(self._counter_commands())
        if cmds:
            await self._send(cmds, n)
        return n

    def _counter_commands(self) -> list[bytes]:
        out = []
        for key, counts in ((self.keys.md_dropped, self.dropped),
                            (self.keys.md_accepted, self.accepted)):
            seen = self._pending_counts.setdefault(key.encode(), {})
            for reason, total in counts.items():
                delta = total - seen.get(reason, 0)
                if delta:
                    out.append(encode("HINCRBY", key, reason, delta))
                    seen[reason] = total
        return out


def ingest_from_settings(settings: Any, engine: AsyncEngine | None) -> Ingest:
    from domain.universe import known_symbols

    assert settings.redis_url, "market-data ingest needs SHERWOOD_REDIS_URL"
    return Ingest(
        settings.redis_url, settings.redis_prefix,
        known=known_symbols(settings.marketdata_universe_size), engine=engine,
        max_price=settings.marketdata_max_price, max_jump=settings.marketdata_max_jump,
        max_tick_age_s=settings.marketdata_max_tick_age_s,
        max_future_s=settings.marketdata_max_future_s, quote_max_age_s=settings.quote_max_age_s,
        bar_flush_s=settings.marketdata_bar_flush_s, bar_grace_s=settings.marketdata_bar_grace_s,
        trade_retention_s=settings.marketdata_trade_retention_s)


async def run_ingest(settings: Any, stop: asyncio.Event | None = None) -> None:
    """``sherwood serve ingest``: migrate the market-data DB, listen for the feed, run until stopped."""
    from db.engines import make_engine
    from db.migrate import migrate_marketdata

    url = settings.marketdata_db_url_resolved()
    await asyncio.to_thread(migrate_marketdata, url)
    engine = make_engine(url, pool_size=2, max_overflow=2)
    ingest = ingest_from_settings(settings, engine)
    metrics.register_once(metrics.IngestCounters(ingest))
    await ingest.start()
    await ingest.serve_tcp(settings.bind_host, settings.marketdata_feed_port)
    log.info("ingest listening for the feed on %s:%s", settings.bind_host, settings.marketdata_feed_port)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await ingest.close()
        await engine.dispose()
