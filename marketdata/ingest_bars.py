"""Ingest's bars: 1-minute aggregation of accepted trades, the flush to the market-data DB, and
the bar messages (``T:"b"`` final minute, ``T:"u"`` a published minute updated, ``T:"d"`` the New
York day so far).

What it does: :class:`IngestBars` is the bar half of :class:`marketdata.ingest.Ingest` (a mixin:
the state lives on the ingest object, which also provides sequencing, channels and the Redis
writer). Every ``bar_flush_s`` the bar loop writes the deltas since the last flush, with the
accepted trades, in one statement (:class:`marketdata.store.MarketDataStore`); a minute is final
``bar_grace_s`` after it ends and only once written, then published as ``T:"b"`` and kept for
``max_tick_age_s`` so that a trade arriving late (in order) updates it (``T:"u"``); each bar
message is followed by the day's bar from ``bars_1day`` (``T:"d"``). Stored trades older than
the retention are swept every minute.

What it deliberately does not do: validate ticks or talk RESP itself (the ingest does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from marketdata.bars import MINUTE_NS, BarAcc, ny_midnight
from marketdata.store import MarketDataStore, TradeRow

log = logging.getLogger("marketdata.ingest")  # ingest's logger, as before the split

_sec_cache: dict[int, str] = {}


def rfc3339_ns(t_ns: int) -> str:
    sec, ns = divmod(t_ns, 1_000_000_000)
    head = _sec_cache.get(sec)
    if head is None:
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        head = _sec_cache[sec] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{ns:09d}Z"


def _num(x: Decimal) -> str:
    """A Decimal as a JSON number (no exponent)."""
    s = format(x.normalize(), "f")
    return s


class IngestBars:
    """The bar state and methods of :class:`marketdata.ingest.Ingest` (see the module docstring)."""

    store: MarketDataStore | None
    clock: Callable[[], int]
    bar_flush_s: float
    bar_grace_ns: int
    max_age_ns: int
    trade_retention_ns: int
    accepted: dict[str, int]
    bars: dict[tuple[str, int], BarAcc]  # open minutes: full bar so far
    bar_delta: dict[tuple[str, int], BarAcc]  # not yet written to Postgres
    final_minute: dict[str, int]  # last finalized minute per symbol
    recent_final: dict[tuple[str, int], BarAcc]  # published bars a trade may update
    updated: set[tuple[str, int]]  # published bars changed since (T:"u" due)
    trade_rows: list[TradeRow]  # accepted trades not yet in Postgres
    _swept_at: float

    # provided by the ingest
    def _next_seq(self, sym: str) -> int:
        raise NotImplementedError

    def _publish_commands(self, msgs: list[tuple[str, bytes]]) -> list[bytes]:
        raise NotImplementedError

    def _counter_commands(self) -> list[bytes]:
        raise NotImplementedError

    async def _send(self, commands: list[bytes], n_messages: int) -> bool:
        raise NotImplementedError

    def _add_trade(self, sym: str, minute: int, price: Decimal, size: int) -> None:
        key = (sym, minute)
        if key not in self.recent_final:  # (a published bar was updated by the caller)
            bar = self.bars.get(key)
            if bar is None:
                self.bars[key] = BarAcc.first(price, size)
            else:
                bar.add(price, size)
        d = self.bar_delta.get(key)
        if d is None:
            self.bar_delta[key] = BarAcc.first(price, size)
        else:
            d.add(price, size)

    async def _bar_loop(self) -> None:
        while True:
            await asyncio.sleep(self.bar_flush_s)
            try:
                await self.flush_bars()
            except Exception:  # keep ingesting; the deltas stay for the next flush
                log.exception("bar flush failed")
            if self.store is not None and time.monotonic() - self._swept_at > 60:
                self._swept_at = time.monotonic()
                try:
                    await self.sweep_trades()
                except Exception:
                    log.exception("trade retention sweep failed")

    async def sweep_trades(self) -> int:
        """Delete stored trades older than the retention (every minute from the bar loop)."""
        assert self.store is not None
        return await self.store.sweep_trades(self.clock() - self.trade_retention_ns)

    async def flush_bars(self, *, final_all: bool = False) -> None:
        """Upsert bar deltas into Postgres; publish (T:"b") and forget minutes now final."""
        if (self.bar_delta or self.trade_rows) and self.store is not None:
            delta, self.bar_delta = self.bar_delta, {}
            trades, self.trade_rows = self.trade_rows, []
            try:
                await self.store.write(delta, trades)
            except Exception:
                for key, b in delta.items():  # put back, merged before anything newer
                    newer = self.bar_delta.get(key)
                    if newer is not None:
                        b.merge(newer)
                    self.bar_delta[key] = b
                self.trade_rows[:0] = trades
                raise
        elif self.store is None:
            self.bar_delta.clear()
        now = self.clock()
        keep_after = now - self.max_age_ns - MINUTE_NS  # later trades for older minutes are stale
        for key in [k for k in self.recent_final if k[1] < keep_after]:
            del self.recent_final[key]
            self.updated.discard(key)
        done = [k for k in self.bars if final_all or k[1] + MINUTE_NS + self.bar_grace_ns <= now]
        if not done and not self.updated:
            return
        msgs: list[tuple[str, bytes]] = []
        days: dict[int, set[str]] = {}  # New York day (its midnight, ns) -> symbols whose bar changed
        for key in done:
            sym, minute = key
            if key in self.bar_delta:  # not yet in Postgres: stays open until written
                continue
            b = self.bars.pop(key)
            self.final_minute[sym] = max(self.final_minute.get(sym, -1), minute)
            self.recent_final[key] = b
            msgs.append(self._bar_message("b", sym, minute, b, now))
            days.setdefault(ny_midnight(minute), set()).add(sym)
        for key in [k for k in self.updated if k not in self.bar_delta]:
            self.updated.discard(key)
            sym, minute = key
            msgs.append(self._bar_message("u", sym, minute, self.recent_final[key], now))
            days.setdefault(ny_midnight(minute), set()).add(sym)
        if self.store is not None:
            for day, syms in days.items():
                for sym, bar in sorted((await self.store.day_bars(day, sorted(syms))).items()):
                    msgs.append(self._bar_message("d", sym, day, bar, now))
        if msgs:
            cmds = [*self._publish_commands(msgs), *self._counter_commands()]
            await self._send(cmds, len(cmds))

    def _bar_message(self, kind: str, sym: str, t: int, b: BarAcc, now: int) -> tuple[str, bytes]:
        """A published bar: ``b`` (final minute), ``u`` (a published minute updated), ``d`` (day)."""
        seq = self._next_seq(sym)
        msg = (f'{{"T":"{kind}","S":"{sym}","o":{_num(b.o)},"h":{_num(b.h)},"l":{_num(b.l)},'
               f'"c":{_num(b.c)},"v":{b.v},"t":"{rfc3339_ns(t)}","n":{b.n},'
               f'"vw":{_num(round(b.vw, 6))},"sq":{seq},"it":{now}}}')
        self.accepted["bars"] += 1
        return sym, msg.encode()
