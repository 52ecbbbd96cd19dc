"""A simulated wholesale market maker (Citadel/Virtu role): a FIX 4.4 acceptor around the engine.

:class:`MarketMaker` accepts one FIX session from the broker (``target_comp_id``, e.g.
SHERWOOD), turns NewOrderSingle(D) / OrderCancelRequest(F) / OrderCancelReplaceRequest(G) /
OrderStatusRequest(H) into calls on :class:`simulators.matching.MatchingEngine`, and sends the
resulting ExecutionReport(8) and OrderCancelReject(9) messages back (built by
:mod:`simulators.venue_messages`); any other application message gets a
BusinessMessageReject(j). Its configuration, :class:`MarketMakerConfig`, lives in
:mod:`simulators.venue_config` (importable from here too). Every message is parsed and built by
:mod:`fix.messages`. A periodic tick advances the quote source and lets resting orders, stops
and delayed partial-fill slices execute. Several instances (venues MM1, MM2 ...) can run side by
side in one process, each on its own port.

Quotes come from a :class:`simulators.quote_sources.QuoteSource` (a random walk, or the
marketdata Redis hash falling back to one). Tests pin prices with :meth:`MarketMaker.set_quote`.

Fault injection (each off by default; see :class:`MarketMakerConfig`) makes the venue misbehave
the ways a real one does so the execution gateway can be tested against them: latency, silence,
duplicate reports, PossResend re-sends, a dropped connection right after an ack, and outbound
sequence gaps. A venue with a ``data_dir`` also takes them at run time from
``<data_dir>/faults.json`` (:mod:`simulators.venue_faults`), so another process can switch them.

Auction orders (TimeInForce 2 AtTheOpening, 7 AtTheClose) are held until the venue's business
clock (the wall clock plus ``clock_offset_s``, or one injected: :meth:`MarketMaker.
set_business_clock`) passes the NYSE open or close (``domain.calendar``); each tick then runs
that auction (:meth:`simulators.matching.MatchingEngine.auction`).

Deliberately NOT done: order state is kept in memory only (a restart forgets orders, never FIX
sequence numbers, which live in the session store); no order book between customers, no
market-data messages, no session-level work (all of that is ``fix/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as _time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import simplefix

from domain import calendar
from fix.framing import encode
from fix.messages import (
    BusinessRejectReason,
    ExecType,
    MsgType,
    OrdStatus,
    Tag,
    business_message_reject,
    parse_new_order_single,
    parse_order_cancel_replace_request,
    parse_order_cancel_request,
    parse_order_status_request,
    text,
)
from fix.session import FixAcceptor, FixSession, SessionConfig
from fix.store import MemorySessionStore, SessionStore, SqliteSessionStore
from simulators.matching import (
    MatchingEngine,
    Quote,
    Report,
    VenueReport,
)
from simulators.quote_sources import (
    QuoteSource,
    RandomWalkQuoteSource,
    RedisQuoteSource,
)
from simulators.venue_config import MarketMakerConfig, parse_slices, parse_symbols
from simulators.venue_faults import FaultFile
from simulators.venue_messages import build_message, unsent_heartbeat

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
# The venue's own order messages; anything else gets a BusinessMessageReject.
_ORDER_MSG_TYPES = frozenset({MsgType.NEW_ORDER_SINGLE, MsgType.ORDER_CANCEL_REQUEST,
                              MsgType.ORDER_CANCEL_REPLACE_REQUEST, MsgType.ORDER_STATUS_REQUEST})


# =============================================================================== the venue


class MarketMaker:
    """One simulated venue: a FIX acceptor, a :class:`MatchingEngine` and a tick task.

    Use ``await mm.start()`` / ``await mm.stop()`` (or ``async with``); ``mm.port`` is the bound
    port (configure port 0 in tests). Order state is in memory; the FIX session store is a
    :class:`SqliteSessionStore` under ``data_dir`` when configured, else in memory (or ``store``).
    """

    def __init__(
        self,
        config: MarketMakerConfig | None = None,
        *,
        quote_source: QuoteSource | None = None,
        store: SessionStore | None = None,
        clock: Callable[[], float] = _time.monotonic,
        business_clock: Callable[[], datetime] | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config if config is not None else MarketMakerConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.venue = cfg.sender_comp_id
        self.engine = MatchingEngine(
            cfg.sender_comp_id,
            price_improvement_bps=cfg.price_improvement_bps,
            price_improvement_cents=cfg.price_improvement_cents,
            improvement_jitter_cents=cfg.improvement_jitter_cents,
            reject_rate=cfg.reject_rate,
            partial_fill_rate=cfg.partial_fill_rate,
            seed=cfg.seed,
            fill_slices=list(cfg.fill_slices) or None,
            fill_delay=cfg.fill_delay,
            max_liquidity=cfg.max_liquidity,
            halted=cfg.halted,
        )
        if quote_source is None:
            walk = RandomWalkQuoteSource(cfg.seed)
            quote_source = (
                RedisQuoteSource(cfg.redis_url, cfg.quotes_key, halts_key=cfg.halts_key,
                                 fallback=walk)
                if cfg.redis_url else walk
            )
        self.quotes: QuoteSource = quote_source
        self._owns_store = store is None
        self.store: SessionStore = store if store is not None else self._make_store(cfg)
        self._clock = clock
        offset = timedelta(seconds=cfg.clock_offset_s)
        self._business_clock = business_clock or (lambda: datetime.now(UTC) + offset)
        self._auctions_checked_at: datetime | None = None
        self._pinned: dict[str, Quote] = {}
        self._acceptor: FixAcceptor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[tuple[Report, bool]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._sent_reports: list[VenueReport] = []
        self._app_sent = 0
        self._dropped_once = False
        self._last_close_day: str | None = None
        self.seqs_skipped: list[int] = []
        # fault switches flipped from outside the process (simulators/venue_faults.py)
        self._base = (cfg, list(self.engine.fill_slices), self.engine.fill_delay)
        self._fault_file = FaultFile(cfg.data_dir) if cfg.data_dir is not None else None

    @staticmethod
    def _make_store(cfg: MarketMakerConfig) -> SessionStore:
        if cfg.data_dir is None:
            return MemorySessionStore()
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteSessionStore(
            cfg.data_dir / f"fix-{cfg.sender_comp_id}-{cfg.target_comp_id}.sqlite")

    # --------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise RuntimeError("market maker not started")
        return self._acceptor.port

    @property
    def session(self) -> FixSession:
        if self._acceptor is None:
            raise RuntimeError("market maker not started")
        return self._acceptor.session(self.config.target_comp_id)

    def session_config(self) -> SessionConfig:
        cfg = self.config
        return SessionConfig(
            sender_comp_id=cfg.sender_comp_id, target_comp_id=cfg.target_comp_id,
            heartbeat_interval=cfg.heartbeat_interval, **cfg.session_overrides,
        )

    async def start(self) -> None:
        """Bind the acceptor and start the tick and sender tasks."""
        cfg = self.config
        self._acceptor = FixAcceptor(
            cfg.host, cfg.port, {cfg.target_comp_id: (self.session_config(), self.store)},
            self._on_message,
        )
        self.apply_fault_file()
        await self._acceptor.start()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"{self.venue}-tick"),
            asyncio.create_task(self._sender_loop(), name=f"{self.venue}-sender"),
        ]
        log.info("market maker %s listening on %s:%s for %s", self.venue, cfg.host, self.port,
                 cfg.target_comp_id)

    async def stop(self) -> None:
        """Stop the tasks and the acceptor (Logout to the peer); close the quote source and the
        session store it opened. Reports still queued are dropped (they are not yet sequenced)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._acceptor is not None:
            await self._acceptor.stop()
        await self.quotes.close()
        close = getattr(self.store, "close", None)
        if self._owns_store and callable(close):
            close()
            self._owns_store = False

    async def __aenter__(self) -> MarketMaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --------------------------------------------------------------------- runtime controls
    def set_quote(self, symbol: str, bid: Decimal | str, ask: Decimal | str) -> None:
        """Pin ``symbol``'s quote (overrides the quote source) and let orders match at once."""
        quote = Quote(symbol, Decimal(bid), Decimal(ask))
        self.engine.put_quote(quote)
        self._pinned[symbol] = quote
        self._wake.set()

    def clear_quote(self, symbol: str) -> None:
        """Return ``symbol`` to the quote source."""
        self._pinned.pop(symbol, None)

    def halt(self, symbol: str) -> None:
        self.engine.halted.add(symbol.upper())

    def resume(self, symbol: str) -> None:
        self.engine.halted.discard(symbol.upper())
        self._wake.set()

    def send_late_trade(self, cl_ord_id: str, qty: Decimal, price: Decimal) -> str:
        """Fault injection (tests): report a trade on an order this venue has already ended;
        returns the report's ExecID."""
        report = self.engine.late_trade(cl_ord_id, qty, price)
        self._queue([report])
        return report.exec_id

    def expire_day_orders(self) -> None:
        """Expire working DAY orders now (the market closed); reports are queued for sending."""
        self._queue(self.engine.expire_day_orders())

    def apply_fault_file(self) -> None:
        """Apply ``<data_dir>/faults.json`` over the configuration this venue started with, if
        it changed since the last look (see :mod:`simulators.venue_faults`)."""
        if self._fault_file is None:
            return
        try:
            faults = self._fault_file.changed()
        except (OSError, ValueError) as exc:
            log.warning("%s: fault file ignored: %s", self.venue, exc)
            return
        if faults is None:
            return
        cfg, slices, delay = self._base
        before = self.config.drop_connection_after_ack
        self.config = replace(cfg, **faults.config)
        if self.config.drop_connection_after_ack and not before:
            self._dropped_once = False  # switched on again: drop once more
        self.engine.fill_slices = faults.engine.get("fill_slices", slices)
        self.engine.fill_delay = faults.engine.get("fill_delay", delay)
        log.info("%s: fault switches now %s %s", self.venue, faults.config, faults.engine)

    async def drain(self) -> None:
        """Wait until every queued report has been handed to the session (for tests)."""
        await self._outbox.join()

    # --------------------------------------------------------------------- inbound
    async def _on_message(self, session: FixSession, msg: simplefix.FixMessage) -> None:
        msg_type = text(msg, Tag.MSG_TYPE)
        if msg_type in _ORDER_MSG_TYPES and self.config.never_ack:
            log.info("%s never_ack: ignoring %s %s", self.venue, msg_type,
                     text(msg, Tag.CL_ORD_ID))
            return
        if msg_type == MsgType.NEW_ORDER_SINGLE:
            await self._on_new_order(msg)
        elif msg_type == MsgType.ORDER_CANCEL_REQUEST:
            cxl = parse_order_cancel_request(msg)
            self._queue(self.engine.cancel(cxl.orig_cl_ord_id, cxl.cl_ord_id,
                                           symbol=cxl.symbol, side=cxl.side))
        elif msg_type == MsgType.ORDER_CANCEL_REPLACE_REQUEST:
            rep = parse_order_cancel_replace_request(msg)
            halted = False
            if rep.symbol:
                await self._refresh_quote(rep.symbol)
                halted = rep.symbol.upper() in await self.quotes.halted_symbols()
            self._queue(self.engine.replace(rep, self._clock(), halted=halted))
        elif msg_type == MsgType.ORDER_STATUS_REQUEST:
            st = parse_order_status_request(msg)
            self._queue([self.engine.status(st.cl_ord_id, symbol=st.symbol, side=st.side)])
        else:
            await self._business_reject(session, msg, msg_type)

    async def _on_new_order(self, msg: simplefix.FixMessage) -> None:
        req = parse_new_order_single(msg)
        halted = False
        if req.symbol:
            await self._refresh_quote(req.symbol)
            halted = req.symbol.upper() in await self.quotes.halted_symbols()
        self._queue(self.engine.submit(req, self._clock(), halted=halted))

    async def _refresh_quote(self, symbol: str) -> None:
        quote = self._pinned.get(symbol) or await self.quotes.get_quote(symbol)
        if quote is not None:
            self.engine.put_quote(quote)

    async def _business_reject(
        self, session: FixSession, msg: simplefix.FixMessage, msg_type: str | None
    ) -> None:
        await session.send(business_message_reject(
            ref_seq_num=text(msg, Tag.MSG_SEQ_NUM), ref_msg_type=msg_type or "",
            reason=BusinessRejectReason.UNSUPPORTED_MESSAGE_TYPE,
            text=f"unsupported message type {msg_type}"))

    # --------------------------------------------------------------------- outbound
    def _queue(self, reports: Iterable[Report], *, poss_resend: bool = False) -> None:
        for report in reports:
            self._outbox.put_nowait((report, poss_resend))

    async def _sender_loop(self) -> None:
        """Send queued reports in order, applying the latency and report-level faults."""
        while True:
            report, poss_resend = await self._outbox.get()
            cfg = self.config  # read per report: fault switches may be flipped while running
            try:
                if cfg.latency > 0:
                    await asyncio.sleep(cfg.latency)
                await self._send_report(report, poss_resend=poss_resend)
                if isinstance(report, VenueReport):
                    if cfg.duplicate_reports:
                        log.info("%s duplicate_reports: re-sending %s", self.venue,
                                 report.exec_id)
                        await self._send_report(report)
                    if cfg.possresend_old and report.exec_type == ExecType.TRADE:
                        old = self._sent_reports[-2] if len(self._sent_reports) > 1 else report
                        log.info("%s possresend_old: re-sending %s with PossResend=Y",
                                 self.venue, old.exec_id)
                        await self._send_report(old, poss_resend=True)
                    if cfg.overfill and report.exec_type == ExecType.TRADE:
                        # a venue bug: a made-up trade for the whole order quantity again
                        extra = replace(report, exec_id=f"{report.exec_id}-over",
                                        last_qty=report.order_qty, leaves_qty=Decimal(0),
                                        cum_qty=report.cum_qty + report.order_qty,
                                        ord_status=OrdStatus.FILLED)
                        log.info("%s overfill: sending %s", self.venue, extra.exec_id)
                        await self._send_report(extra)
                    if (cfg.drop_connection_after_ack and not self._dropped_once
                            and report.exec_type == ExecType.NEW):
                        self._dropped_once = True
                        await self._drop_connection()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: failed to send %r", self.venue, report)
            finally:
                self._outbox.task_done()

    async def _send_report(self, report: Report, *, poss_resend: bool = False) -> None:
        session = self.session
        if self.config.skip_seq:
            self._app_sent += 1
            if self._app_sent % max(1, self.config.skip_seq_every) == 0:
                self._skip_outbound_seq()
        garble = None
        if isinstance(report, VenueReport) and report.exec_type == ExecType.TRADE:
            garble = self.config.garble_trades
        elif isinstance(report, VenueReport) and report.exec_type == ExecType.CANCELED:
            garble = self.config.garble_cancels
        if garble and isinstance(report, VenueReport):
            log.info("%s garbles %s: %s", self.venue, report.exec_id, garble)
        msg = build_message(report, poss_resend=poss_resend, garble=garble)
        await session.send(msg)
        if isinstance(report, VenueReport) and not poss_resend:
            self._sent_reports.append(report)

    def _skip_outbound_seq(self) -> None:
        """Burn one outbound MsgSeqNum: store a Heartbeat that is never sent under it.

        The peer sees a gap, sends a ResendRequest, and the session answers it with a gap fill
        (Heartbeats are admin messages and are never re-sent).
        """
        cfg = self.config
        seq = self.store.next_sender_seq()
        heartbeat = unsent_heartbeat(cfg.sender_comp_id, cfg.target_comp_id, seq)
        self.store.store_sent(seq, encode(heartbeat.pairs))
        self.seqs_skipped.append(seq)
        log.info("%s skip_seq: skipped outbound MsgSeqNum %d", self.venue, seq)

    async def _drop_connection(self) -> None:
        """Abort the TCP connection without a Logout (the FIX session itself lives on)."""
        log.info("%s drop_connection_after_ack: dropping the TCP connection", self.venue)
        session = self.session
        disconnect = getattr(session, "disconnect", None)
        if callable(disconnect):
            await disconnect()
            return
        # fix.session has no public "drop" (a real venue never wants one): reach the connection.
        conn = getattr(session, "_conn", None)
        if conn is None:
            return
        conn.close()
        conn.writer.transport.abort()

    # --------------------------------------------------------------------- ticks
    async def _tick_loop(self) -> None:
        """Advance quotes every ``tick_interval``; run delayed slices and matching when due."""
        next_tick = self._clock() + self.config.tick_interval
        while True:
            now = self._clock()
            due = self.engine.next_fill_due()
            wait = min(next_tick, due if due is not None else next_tick) - now
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            now = self._clock()
            try:
                self.apply_fault_file()
                if now >= next_tick:
                    next_tick = now + self.config.tick_interval
                    self.quotes.advance()
                    for symbol in self.engine.working_symbols():
                        await self._refresh_quote(symbol)
                    await self._check_close()
                    self.run_auctions()
                halted = await self.quotes.halted_symbols() if self.config.redis_url else set()
                symbols = [s for s in self.engine.working_symbols() if s.upper() not in halted]
                self._queue(self.engine.match(now, symbols))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: tick failed", self.venue)

    def set_business_clock(self, clock: Callable[[], datetime]) -> None:
        """Run the auctions on ``clock`` from now on (tests step it across an open or a close);
        the auctions before its current time are not run."""
        self._business_clock = clock
        self._auctions_checked_at = clock()

    def run_auctions(self) -> None:
        """Run every opening and closing auction (NYSE calendar) the business clock has passed
        since the last call: the orders of that auction (TimeInForce 2 / 7) execute or expire
        (:meth:`MatchingEngine.auction`). The first call only notes the time."""
        at, last = self._business_clock(), self._auctions_checked_at
        self._auctions_checked_at = at
        while last is not None:
            opens, closes = calendar.next_open(last), calendar.next_close(last)
            due = min(opens, closes)
            if due > at:
                break
            which = "open" if due == opens else "close"
            log.info("%s: %s auction at %s", self.venue, which, due.isoformat())
            self._queue(self.engine.auction(which, self._clock()))
            last = due

    async def _check_close(self) -> None:
        close = self.config.day_close
        if close is None:
            return
        local = datetime.now(NEW_YORK)
        today = local.date().isoformat()
        if local.time() >= close and self._last_close_day != today:
            self._last_close_day = today
            log.info("%s: market close %s reached, expiring DAY orders", self.venue, close)
            self.expire_day_orders()


# =============================================================================== entry point


async def run_market_maker(
    config: MarketMakerConfig,
    *,
    quote_source: QuoteSource | None = None,
    ready: Callable[[MarketMaker], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one venue until ``stop`` is set (or the task is cancelled).

    ``ready`` is called with the started :class:`MarketMaker` (e.g. to learn the bound port).
    """
    mm = MarketMaker(config, quote_source=quote_source)
    await mm.start()
    try:
        if ready is not None:
            result = ready(mm)
            if asyncio.iscoroutine(result):
                await result
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await mm.stop()


# MarketMakerConfig, build_message and the parsers live beside this module; still importable here
__all__ = ["MarketMaker", "MarketMakerConfig", "build_message", "parse_slices", "parse_symbols",
           "run_market_maker"]
