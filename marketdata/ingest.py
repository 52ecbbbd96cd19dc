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
  shortest form, whatever form the feed wrote them in; ``t`` RFC 3339 with nanoseconds;
  exchange and tape codes 1-4 ASCII letters or digits, else the tick is ``malformed``; a halt's
  or resumption's reason code up to 8, else the default ``T1`` / ``T2``) plus two fields of
  ours: ``sq`` the per-symbol sequence number (one counter per symbol over q/t/s/b, +1 per
  message, persisted in the hash ``<prefix>:md:seq`` so a restart continues it) and ``it`` the
  ingest time (ns since the epoch).
* **publish** on the channel ``<prefix>:md:<SYMBOL>`` and, several messages a publish, on its
  batch channel for the fan-out (:mod:`marketdata.batches`) (one pipelined write per batch, its replies
  counted by :class:`marketdata.ingest_writer.PipelinedWriter`, not awaited), update the
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

One ingest process per symbol set (sequence numbers are per process): several run side by side
as :mod:`marketdata.ingest_workers`, each over its share of the symbols. If Redis is down the ticks
of that moment are dropped (``redis_unavailable``) and ingest reconnects with backoff: the read
path is approximate; bars keep accumulating and go to Postgres regardless.

The hot path (:meth:`Ingest.process`) works on the feed's bytes: no decoding but the symbol's
lookup, each message formatted once as bytes and wrapped in its RESP command there; the per-batch
writes (latest quote and trade, sequence numbers) are one ``HSET`` each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncEngine

from marketdata import batches
from marketdata.bars import minute_start
from marketdata.feed_listener import FeedListener
from marketdata.ingest_bars import IngestBars, rfc3339_ns
from marketdata.ingest_writer import PipelinedWriter
from marketdata.resp import encode, encode_publish
from marketdata.store import MarketDataStore
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

_sec_b: dict[int, bytes] = {}

_QUOTE = (b'{"T":"q","S":"%s","bx":"%s","bp":%s,"bs":%d,"ax":"%s","ap":%s,"as":%d,"t":"%s","c":["R"],'
          b'"z":"%s","sq":%d,"it":%s')  # (no closing brace: the latest-quote hash adds "mx")
_TRADE = b'{"T":"t","S":"%s","i":%d,"x":"%s","p":%r,"s":%d,"t":"%s","c":["@"],"z":"%s","sq":%d,"it":%s}'
_HALT = (b'{"T":"s","S":"%s","sc":"H","sm":"Trading Halt","rc":"%s","rm":"Halt","t":"%s","z":"C",'
         b'"sq":%d,"it":%s}')
_RESUME = (b'{"T":"s","S":"%s","sc":"T","sm":"Trading Resumption","rc":"%s","rm":"Resume","t":"%s",'
           b'"z":"C","sq":%d,"it":%s}')
PRICE_CACHE_MAX = 200_000
CODE_MAX = 4  # exchange and tape codes: 1-4 ASCII letters or digits
REASON_MAX = 8  # a halt's reason code


def rfc3339_ns_b(t_ns: int) -> bytes:
    """:func:`marketdata.ingest_bars.rfc3339_ns` as bytes (the second's part cached)."""
    sec, ns = divmod(t_ns, 1_000_000_000)
    head = _sec_b.get(sec)
    if head is None:
        if len(_sec_b) > 4096:
            _sec_b.clear()
        head = _sec_b[sec] = rfc3339_ns(sec * 1_000_000_000)[:19].encode()
    return b"%s.%09dZ" % (head, ns)


def _bulk(x: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(x), x)


REASONS = ("malformed", "unknown_symbol", "non_positive_price", "absurd_price", "bad_size", "crossed",
           "locked", "stale", "future", "out_of_order", "halted", "redis_unavailable")


class Ingest(FeedListener, IngestBars):
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
        self.writer = PipelinedWriter(redis_url)
        self._tasks: list[asyncio.Task[None]] = []
        self._chan_cache: dict[str, bytes] = {}
        self._known = {s.encode(): s for s in known}  # the feed's symbol bytes -> the symbol
        self._codes: set[bytes] = set()  # exchange/tape code combinations seen valid
        self._prices: dict[bytes, tuple[float, bytes]] = {}  # feed price text -> (value, JSON form)
        self._resp: dict[str, tuple[bytes, bytes, int]] = {}  # symbol -> (RESP bulk, PUBLISH head, shard)
        self._batch_chans = [batches.channel(prefix, k) for k in range(batches.BATCH_SHARDS)]
        self._mx_tail = b',"mx":%s}' % str(quote_max_age_s).encode()
        self._hset_heads = {k: _bulk(b"HSET") + _bulk(k.encode())
                            for k in (self.keys.quotes_latest, self.keys.trades_latest, self.keys.md_seq)}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if await self.writer.connect() is not None:
            await self._load_state()
        self._tasks.append(asyncio.create_task(self._bar_loop(), name="ingest-bars"))

    async def _load_state(self) -> None:
        seq, halts = await self.writer.query([encode("HGETALL", self.keys.md_seq),
                                              encode("SMEMBERS", self.keys.halts)])
        if isinstance(seq, list):
            for k, v in zip(seq[::2], seq[1::2], strict=True):
                if isinstance(k, bytes) and isinstance(v, bytes):
                    self.seq[k.decode()] = max(self.seq.get(k.decode(), 0), int(v))
        if isinstance(halts, list):
            self.halted |= {h.decode() for h in halts if isinstance(h, bytes)}

    async def close(self) -> None:
        await self.stop_listening()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        with contextlib.suppress(Exception):
            await self.flush_bars(final_all=False)
        await self.writer.close()

    # -- Redis ------------------------------------------------------------------------------
    async def _send(self, parts: list[bytes], n_messages: int, n_commands: int | None = None) -> bool:
        """Write a batch of commands (``parts`` joined: ``n_commands`` of them, by default one per
        part), pipelined; its messages count as dropped if Redis is unavailable."""
        if await self.writer.send(parts, len(parts) if n_commands is None else n_commands):
            return True
        self.dropped["redis_unavailable"] += n_messages
        return False

    async def sync(self) -> None:
        """Wait until Redis has answered every command written so far (tests, benches)."""
        await self.writer.sync()

    def _chan(self, sym: str) -> bytes:
        c = self._chan_cache.get(sym)
        if c is None:
            c = self._chan_cache[sym] = self.keys.md_channel(sym).encode()
        return c

    def _sym_resp(self, sym: str) -> tuple[bytes, bytes, int]:
        """The symbol as a RESP bulk string, the head of a PUBLISH on its channel and its batch
        channel (:mod:`marketdata.batches`), cached."""
        r = self._resp.get(sym)  # (bounded: only known symbols come here)
        if r is None:
            r = self._resp[sym] = (_bulk(sym.encode()),
                                   b"*3\r\n" + _bulk(b"PUBLISH") + _bulk(self._chan(sym)),
                                   batches.shard_of(sym.encode()))
        return r

    def _batch_commands(self, groups: list[list[bytes]]) -> list[bytes]:
        """One PUBLISH per batch channel with messages (several if over MAX_BATCH_BYTES)."""
        out = []
        for k, msgs in enumerate(groups):
            if msgs:
                chan = self._batch_chans[k]
                out += [encode_publish(chan, p) for p in batches.payloads(msgs)]
        return out

    def _publish_commands(self, msgs: list[tuple[str, bytes]]) -> list[bytes]:
        """The messages on their symbols' channels, then in batches on the batch channels."""
        groups: list[list[bytes]] = [[] for _ in range(batches.BATCH_SHARDS)]
        out = []
        for sym, msg in msgs:
            r = self._resp.get(sym) or self._sym_resp(sym)
            out.append(b"%s$%d\r\n%s\r\n" % (r[1], len(msg), msg))
            groups[r[2]].append(msg)
        return out + self._batch_commands(groups)

    def _hset(self, key: str, fields: dict[str, bytes], tail: bytes = b"") -> bytes:
        """``HSET key sym value+tail ...`` for every symbol in ``fields``, as one RESP command."""
        resp = self._resp
        parts = [b"*%d\r\n" % (2 + 2 * len(fields)), self._hset_heads[key]]
        n = len(tail)
        for sym, v in fields.items():
            parts.append(resp[sym][0])
            parts.append(b"$%d\r\n%s%s\r\n" % (len(v) + n, v, tail))
        return b"".join(parts)

    def _next_seq(self, sym: str) -> int:
        s = self.seq.get(sym, 0) + 1
        self.seq[sym] = s
        return s

    # -- the hot path -----------------------------------------------------------------------
    async def process(self, lines: list[bytes]) -> int:
        """Validate, normalize and publish a batch of feed lines. Returns how many were accepted."""
        now = self.clock()
        now_b = b"%d" % now
        prices = self._prices
        if len(prices) > PRICE_CACHE_MAX:
            prices.clear()
        good_codes = self._codes
        ncmd = 0  # commands in cmds (a command may be several parts)
        oldest = now - self.max_age_ns
        newest = now + self.max_future_ns
        known = self._known
        dropped = self.dropped
        last_px = self.last_px
        last_t = self.last_t
        seqs = self.seq
        resp = self._resp
        sym_resp = self._sym_resp
        max_price = self.max_price
        max_jump = self.max_jump
        cmds: list[bytes] = []
        groups: list[list[bytes]] = [[] for _ in range(batches.BATCH_SHARDS)]  # batch channel -> msgs
        latest_q: dict[str, bytes] = {}  # symbol -> its last quote in the batch (no closing brace)
        latest_t: dict[str, bytes] = {}
        halts_add: list[str] = []
        halts_del: list[str] = []
        nq = nt = ns = 0
        cached_t, cached_ts = -1, b""
        for line in lines:
            if not line:
                continue
            p = line.split(b",")
            kind = p[0]
            try:
                sym = known.get(p[1])
                if sym is None:
                    dropped["unknown_symbol"] += 1
                    continue
                if kind == b"Q":
                    bpx = prices.get(p[2]) or self._price(p[2])
                    bp = bpx[0]
                    bs = int(p[3])
                    apx = prices.get(p[4]) or self._price(p[4])
                    ap = apx[0]
                    asz = int(p[5])
                    t = int(p[6])
                    codes = p[7] + b"," + p[8] + b"," + p[9]  # (one check for the three)
                    if not (codes in good_codes or self._good_codes(codes)):
                        dropped["malformed"] += 1
                        continue
                elif kind == b"T":
                    px = float(p[2])
                    size = int(p[3])
                    t = int(p[4])
                    tid = int(p[5])
                    x = p[6]
                    z = p[7]
                    if not (x + b"," + z in good_codes or self._good_codes(x + b"," + z)):
                        dropped["malformed"] += 1
                        continue
                    dpx = Decimal(p[2].decode())
                elif kind == b"H" or kind == b"R":
                    t = int(p[2])
                    code = p[3] if len(p) > 3 else b""
                    if code and (len(code) > REASON_MAX or not code.isalnum()):
                        log.warning("%s of %s with an unreadable reason code %r: sent with the default",
                                    "halt" if kind == b"H" else "resumption", sym, code[:32])
                        code = b""
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
                seq = seqs.get(sym, 0) + 1
                seqs[sym] = seq
                if t != cached_t:
                    cached_t, cached_ts = t, rfc3339_ns_b(t)
                body = _QUOTE % (p[1], p[7], bpx[1], bs, p[8], apx[1], asz, cached_ts, p[9], seq, now_b)
                r = resp.get(sym) or sym_resp(sym)
                cmds += (r[1], b"$%d\r\n" % (len(body) + 1), body, b"}\r\n")
                groups[r[2]].append(body + b"}")
                ncmd += 1
                latest_q[sym] = body
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
                    self.trade_rows.append((sym, t, tid, x.decode(), dpx, size, z.decode()))
                seq = self._next_seq(sym)
                msg = _TRADE % (p[1], tid, x, px, size, rfc3339_ns_b(t), z, seq, now_b)
                r = resp.get(sym) or sym_resp(sym)
                cmds.append(b"%s$%d\r\n%s\r\n" % (r[1], len(msg), msg))
                groups[r[2]].append(msg)
                ncmd += 1
                latest_t[sym] = msg
                nt += 1
            else:
                last_t[sym] = t
                seq = self._next_seq(sym)
                if kind == b"H":
                    self.halted.add(sym)
                    halts_add.append(sym)
                    msg = _HALT % (p[1], code or b"T1", rfc3339_ns_b(t), seq, now_b)
                else:
                    self.halted.discard(sym)
                    halts_del.append(sym)
                    msg = _RESUME % (p[1], code or b"T2", rfc3339_ns_b(t), seq, now_b)
                r = resp.get(sym) or sym_resp(sym)
                cmds.append(b"%s$%d\r\n%s\r\n" % (r[1], len(msg), msg))
                groups[r[2]].append(msg)
                ncmd += 1
                ns += 1
        n = nq + nt + ns
        if n:
            bcmds = self._batch_commands(groups)
            cmds += bcmds
            ncmd += len(bcmds)
        tail = [] if not n else [self._hset(self.keys.md_seq, {
            # the sequence numbers, persisted with the messages so that a restart continues them
            s: b"%d" % seqs[s] for s in latest_q.keys() | latest_t.keys() | set(halts_add) | set(halts_del)})]
        if latest_q:
            tail.append(self._hset(self.keys.quotes_latest, latest_q, self._mx_tail))
        if latest_t:
            tail.append(self._hset(self.keys.trades_latest, latest_t))
        if halts_add:
            tail.append(encode("SADD", self.keys.halts, *halts_add))
        if halts_del:
            tail.append(encode("SREM", self.keys.halts, *halts_del))
        # tell every trading process at once (db.controls.ControlsCache), not at its next resync
        for sym, halted in [(s, True) for s in halts_add] + [(s, False) for s in halts_del]:
            tail.append(encode_publish(self.keys.controls_events.encode(), json.dumps(
                {"symbol": sym, "halted": halted, "reason": "market-data halt" if halted else ""}).encode()))
        self.accepted["quotes"] += nq
        self.accepted["trades"] += nt
        self.accepted["statuses"] += ns
        tail.extend(self._counter_commands())
        if ncmd or tail:
            await self._send([*cmds, *tail], n, ncmd + len(tail))
        return n

    def _price(self, text: bytes) -> tuple[float, bytes]:
        """A feed price and its JSON form: repr, the shortest (the feed's "187.", ".5" or
        "0187.10" are no JSON), remembered (prices repeat; bounded: PRICE_CACHE_MAX)."""
        v = float(text)
        r = self._prices[text] = (v, repr(v).encode())
        return r

    def _good_codes(self, codes: bytes) -> bool:
        """Exchange and tape codes (``bx,ax,z`` or ``x,z``): 1-``CODE_MAX`` ASCII letters or
        digits each. Good ones are remembered (a few distinct ones in any feed; bounded)."""
        if not all(0 < len(c) <= CODE_MAX and c.isalnum() for c in codes.split(b",")):
            return False
        if len(self._codes) > 10_000:
            self._codes.clear()
        self._codes.add(codes)
        return True

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
