"""Execution gateway activities (task queue ``execution-gateway``).

:class:`GatewayActivities` holds the gateway store, one :class:`fix.session.FixSession` per venue
and the routing policy; register its bound methods with a Temporal worker::

    acts = GatewayActivities(store, {"MM1": session1, "MM2": session2}, routing="round_robin")
    Worker(client, task_queue=GATEWAY_TASK_QUEUE,
           activities=[acts.send_new_order, acts.abandon_new_order, acts.send_cancel,
                       acts.send_replace, acts.send_status])

Idempotency (DESIGN: order id -> FIX ClOrdID): every outbound ClOrdID is reserved in
``gateway_orders`` before it is handed to the FIX session. A retry that finds it ``sent`` sends
nothing (``VenueAck.resent=True``); one that finds it ``sending`` (the previous attempt died
between reserving and sending) sends the same message again with PossResend(97)=Y on the SAME
venue: the venue deduplicates by ClOrdID. Once ``FixSession.send`` returned, the message is in the
session store and reaches the venue even across reconnects (ResendRequest), so ``sent`` is final.

Venue choice (an order that names no venue): :func:`domain.routing.choose_venue` over the
logged-on venues and their recent quality (:class:`domain.routing.VenueQuality`, fed with every
new venue report by the gateway's inbound handler via :meth:`GatewayActivities.observe`, warmed
from the gateway database at start by :meth:`GatewayActivities.warm_start`; a replacement's
reports count for the route it belongs to). A venue whose session is down is never a candidate,
so orders fail over at once. The route, with the
NBBO at routing time (``quotes``: the market-data path's latest quote) and its age, is recorded
in ``gateway_routes`` before the order is sent: the execution-quality reports start from it.

Errors: ``VenueUnavailable`` (no/that venue not logged on) is retryable; ``UnknownVenue`` and
``InvalidOrder`` are not.

The FIX messages themselves are built and parsed by :mod:`fix.messages`; recording inbound
reports and signalling their :class:`domain.execution.VenueEvent` to the order workflows is
:mod:`workers.gateway`'s job.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

import simplefix
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gateway_ports import MarketSource, QuoteSource, ReportSource
from db.gateway import ABANDONED, SENDING, SENT, GatewayStore, RouteRecord, SendReservation
from domain.execution import (
    VenueAck,
    VenueCancel,
    VenueEvent,
    VenueEventKind,
    VenueOrder,
    VenueReplace,
    status_cl_ord_id,
)
from domain.routing import (
    ROUTING_POLICIES,
    RoutingChoice,
    RoutingWeights,
    VenueQuality,
    VenueStats,
    choose_venue,
    scoped,
)
from fix.messages import (
    InvalidOrderMessage,
    MsgType,
    new_order_single,
    order_cancel_replace_request,
    order_cancel_request,
    order_status_request,
)
from fix.session import FixSession
from marketdata.quotes import Quote
from sherwood.faults import final_unless_transient

log = logging.getLogger(__name__)

# error type names (ApplicationError.type) the order workflow can match on
VENUE_UNAVAILABLE = "VenueUnavailable"
UNKNOWN_VENUE = "UnknownVenue"
INVALID_ORDER = "InvalidOrder"


# ============================================================================ FIX codec


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_ORDER, non_retryable=True)


def _build(build: Callable[..., simplefix.FixMessage], req: object, *,
           poss_resend: bool = False) -> simplefix.FixMessage:
    """The FIX message for ``req``; an order FIX cannot express is a non-retryable refusal."""
    try:
        return build(req, poss_resend=poss_resend)
    except InvalidOrderMessage as exc:
        raise _invalid(str(exc)) from exc


# ============================================================================ activities


class GatewayActivities:
    """The gateway's activities over its venue sessions (see the module docstring)."""

    def __init__(
        self,
        store: GatewayStore,
        sessions: Mapping[str, FixSession],
        routing: str = "round_robin",
        halted: Callable[[str], Awaitable[bool]] | None = None,
        reports: ReportSource | None = None,
        first_report_wait_s: float = 0.25,
        report_linger_s: float = 0.05,
        quotes: QuoteSource | None = None,
        market: MarketSource | None = None,
        weights: RoutingWeights = RoutingWeights(),
        rng: random.Random | None = None,
        quality_window: int = 100,
        clock: Callable[[], float] = time.monotonic,
        sending_wait_s: float = 5.0,
    ) -> None:
        if routing not in ROUTING_POLICIES:
            raise ValueError(f"unknown routing policy {routing!r} (one of {ROUTING_POLICIES})")
        if not sessions:
            raise ValueError("the gateway needs at least one venue")
        self.store = store
        self.sessions = dict(sessions)
        self.routing = routing
        self._venues = list(self.sessions)
        self._rr = itertools.count()
        self._halted = halted
        # None: every venue answer goes out as a signal (nothing in the send_new_order result)
        self.early_reports = reports
        self.first_report_wait_s = first_report_wait_s
        self.report_linger_s = report_linger_s
        # how long an abandon waits for a send in flight to be marked sent (abandon_new_order);
        # well above a live attempt's send + first_report_wait_s + report_linger_s
        self.sending_wait_s = sending_wait_s
        self.quotes = quotes
        # the halt check and the NBBO in one round trip; ``halted``, when given, decides the halt
        # instead (tests override it), and the quote is then read on its own
        self.market = market
        self.weights = weights
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self.quality = VenueQuality(window=quality_window)

    # ------------------------------------------------------------------ venue choice

    def logged_on_venues(self) -> list[str]:
        return [v for v in self._venues if self.sessions[v].logged_on.is_set()]

    def choose_venue(self, requested: str | None) -> str:
        return self.route(requested).venue

    def route(self, requested: str | None, order: VenueOrder | None = None) -> RoutingChoice:
        """The venue for a new order: the one it names, else the routing policy's choice over
        the logged-on venues (``VenueUnavailable`` when none is). Smart routing scores by the
        order's symbol or size bucket where every venue has the data (``domain.routing.scoped``),
        else venue-wide."""
        if requested is not None:
            self._session(requested)
            return RoutingChoice(requested, "requested")
        up = set(self.logged_on_venues())
        venues = [(v, v in up) for v in self._venues]
        stats: Sequence[VenueStats]
        if self.routing == "smart" and order is not None:
            _, stats = scoped(self.quality.by_scope(venues, order.symbol, _qty(order.qty)),
                              self.weights.scope_min_orders)
        elif self.routing == "smart":
            stats = [self.quality.stats(v, connected) for v, connected in venues]
        else:  # first, round_robin: who is logged on is all they look at (no pass over the window)
            stats = [VenueStats(v, connected) for v, connected in venues]
        choice = choose_venue(self.routing, stats, draw=self._rng.random(),
                              turn=next(self._rr) if self.routing == "round_robin" else 0,
                              weights=self.weights)
        if choice is None:
            raise ApplicationError("no venue is logged on", type=VENUE_UNAVAILABLE)
        return choice

    def observe(self, event: VenueEvent, at: float | None = None) -> None:
        """A new venue report (the gateway's inbound handler calls this once per report; a
        warm start replays the recorded ones with their arrival time ``at``): feeds the recent
        quality of the venue the order was routed to. A replacement's reports count for the
        order it replaced (the venue's Replaced links them)."""
        when = self._clock() if at is None else at
        q = self.quality
        if event.kind == VenueEventKind.REPLACED:
            if event.cl_ord_id and event.cl_ord_id != event.order_id:
                q.replaced(event.cl_ord_id, event.order_id)
        elif event.kind == VenueEventKind.FILL and event.last_px is not None:
            try:
                qty, px = Decimal(event.last_qty), Decimal(event.last_px)
            except ArithmeticError:
                return
            if qty.is_finite() and px.is_finite():
                q.filled(event.order_id, qty, px, when)
        elif event.at_close:
            return  # our own expiry of a DAY order at the close: nothing the venue decided
        elif event.cl_ord_id != event.order_id:
            # a cancel's, replace's or status request's answer: only a cancel counts
            if event.kind == VenueEventKind.CANCELED:
                q.canceled(event.order_id, by_venue=False)
        elif event.kind == VenueEventKind.REJECTED:
            q.rejected(event.order_id)
        elif event.kind == VenueEventKind.CANCELED:
            q.canceled(event.order_id, by_venue=True)
        elif event.kind == VenueEventKind.EXPIRED:
            q.ended(event.order_id)

    async def warm_start(self) -> int:
        """Warm the venues' recent quality from the gateway database (the last
        ``quality.window`` routes per venue and their reports, replayed through
        :meth:`observe`), so a restarted gateway routes by what it knew. Returns how many routes
        it loaded."""
        recent = await self.store.recent_routes(self._venues, self.quality.window)
        for r in recent.routes:
            self.quality.routed(r.order_id, r.venue, r.side, r.at, r.bid, r.ask, symbol=r.symbol,
                                qty=_qty(r.qty))
        for new, root in recent.replacements:
            self.quality.replaced(new, root)
        for event, at in recent.reports:
            self.observe(event, at)
        return len(recent.routes)

    async def _at_routing(self, symbol: str) -> tuple[bool, Quote | None, int | None]:
        """Is ``symbol`` halted, and its NBBO with its age (None, None: none usable): one read
        of both through ``market``, else the ``halted`` check and the quote one after the other
        (no halt check: not halted)."""
        if self._halted is None and self.market is not None:
            seen = await self.market.at_routing(symbol)
            return seen.halted, *_aged(seen.quote)
        halted = self._halted is not None and await self._halted(symbol)
        return halted, *await self._nbbo(symbol)

    async def _nbbo(self, symbol: str) -> tuple[Quote | None, int | None]:
        source = self.quotes if self.quotes is not None else self.market
        if source is None:
            return None, None
        try:
            q = await source.get(symbol)
        except Exception:  # advisory: routing never waits on market data
            log.warning("no NBBO for %s at routing", symbol, exc_info=True)
            return None, None
        return _aged(q)

    def _session(self, venue: str) -> FixSession:
        session = self.sessions.get(venue)
        if session is None:
            raise ApplicationError(f"unknown venue {venue!r}", type=UNKNOWN_VENUE, non_retryable=True)
        return session

    def _logged_on(self, venue: str) -> FixSession:
        session = self._session(venue)
        if not session.logged_on.is_set():
            raise ApplicationError(f"venue {venue} is not logged on", type=VENUE_UNAVAILABLE)
        return session

    # ------------------------------------------------------------------ activities

    @activity.defn(name="send_new_order")
    @final_unless_transient
    async def send_new_order(self, order: VenueOrder) -> VenueAck:
        """Hand the order to a venue once, ever (ClOrdID = order id), and return with the
        venue's first answers when they come within a short wait (see :class:`VenueAck`)."""
        _build(new_order_single, order)  # validate before reserving anything
        if self.early_reports is None:
            return (await self._send_new_order(order))[0]
        async with self.early_reports.watch(order.order_id) as watch:
            # the ClOrdID is marked ``sent`` with the reports handed over, by one statement;
            # until then it reads ``sending``, which a retry treats as sent maybe: it sends again
            # with PossResend=Y and the venue deduplicates by ClOrdID (the module docstring)
            ack, seq, again = await self._send_new_order(order, mark=False)
            if not ack.resent:
                await watch.wait(self.first_report_wait_s, self.report_linger_s)
                ack.reports = list(watch.reports)
                if again:
                    # An earlier attempt reserved the ClOrdID and may still hold the venue's
                    # first answers (it hangs past its timeout, then hands them over in a result
                    # nobody reads, marked delivered, so never signalled): this result carries
                    # everything recorded for the order, which holds what the watch saw (the
                    # inbound handler records a report before it hands it to a watch). Each
                    # report is booked once whatever repeats (the workflow goes by ExecID).
                    ack.reports = await self.early_reports.recorded(order.order_id)
                await self.early_reports.handed_over(
                    ack.reports, sent=(order.cl_ord_id, seq) if seq is not None else None)
            return ack

    async def _already_sent(self, order: VenueOrder, venue: str) -> VenueAck:
        log.info("order %s already sent to %s (retry): not sending again", order.order_id, venue)
        # A retry: the previous attempt may have handed reports over in a result that never
        # reached the workflow, so return everything recorded for the order.
        reports = await self.early_reports.recorded(order.order_id) if self.early_reports else []
        return VenueAck(venue=venue, cl_ord_id=order.cl_ord_id, resent=True, reports=reports)

    async def _send_new_order(self, order: VenueOrder, *,
                              mark: bool = True) -> tuple[VenueAck, int | None, bool]:
        """The send; returns the ack, the MsgSeqNum it went out with (None: not sent now) and
        whether an earlier attempt had reserved the ClOrdID (this one sent it again).
        ``mark=False``: the caller marks the ClOrdID ``sent`` (``handed_over``)."""
        # The reservation is the first statement (it says whether this is a retry): one round
        # trip per order. Only under a halt is the ClOrdID looked up first, because a halt stops
        # an order not yet handed over, never one a previous attempt may have sent. The NBBO the
        # route records comes with the halt check (one Redis round trip for both).
        halted, quote, age = await self._at_routing(order.symbol)
        if halted and await self.store.get_send(order.cl_ord_id) is None:
            # the last gate before a venue: a halt acknowledged before this point stops the order
            raise ApplicationError(f"trading in {order.symbol} is halted", type="symbol_halted",
                                   non_retryable=True)
        try:
            choice = self.route(order.venue, order)
            venue = choice.venue
            session = self._logged_on(venue)
        except ApplicationError:
            # no venue to send to; a retry of an order already sent needs none
            existing = await self.store.get_send(order.cl_ord_id)
            if existing is not None and existing.status == SENT:
                return await self._already_sent(order, existing.venue), None, True
            raise
        res = await self.store.reserve_send(order.cl_ord_id, order.order_id, venue,
                                             MsgType.NEW_ORDER_SINGLE, account_id=order.account_id,
                                             shard=order.shard)
        if res.status == SENT:
            return await self._already_sent(order, res.venue), None, True
        if res.status == ABANDONED:  # its workflow gave up routing it: never sent, never will be
            raise ApplicationError(f"order {order.order_id} was abandoned before it was sent",
                                   type="abandoned", non_retryable=True)
        if res.venue != venue:  # lost a race with a concurrent attempt that chose another venue
            session = self._logged_on(res.venue)
            choice = RoutingChoice(res.venue, "retry")
        await self._record_route(order, choice, quote, age)
        poss_resend = not res.created
        seq = await session.send(_build(new_order_single, order, poss_resend=poss_resend))
        if mark:
            await self.store.mark_sent(order.cl_ord_id, seq)
        log.info("order %s -> %s NewOrderSingle seq %d%s", order.order_id, res.venue, seq,
                 " PossResend" if poss_resend else "")
        return VenueAck(venue=res.venue, cl_ord_id=order.cl_ord_id), seq, poss_resend

    async def _record_route(self, order: VenueOrder, choice: RoutingChoice, quote: Quote | None,
                            age: int | None) -> None:
        self.quality.routed(order.order_id, choice.venue, order.side, self._clock(),
                            quote.bid if quote else None, quote.ask if quote else None,
                            symbol=order.symbol, qty=_qty(order.qty))
        await self.store.record_route(RouteRecord(
            order.order_id, choice.venue, self.routing, choice.reason, order.symbol, order.side,
            order.order_type, order.time_in_force, order.qty, order.limit_price,
            quote.bid if quote else None, quote.ask if quote else None, age))

    @activity.defn(name="abandon_new_order")
    @final_unless_transient
    async def abandon_new_order(self, order: VenueOrder) -> VenueAck | None:
        """The order workflow gives up routing ``order`` (no venue within its deadline, or the
        customer canceled it while it was routing): None when it was never sent and now never
        will be; its ``VenueAck`` (with every report recorded) when a send got it to a venue
        first -- the order then lives on at that venue."""
        res = await self.store.abandon(order.cl_ord_id, order.order_id)
        if res.status == ABANDONED:
            log.info("order %s abandoned before it was sent", order.order_id)
            return None
        if res.status == SENDING:
            res = await self._after_send_in_flight(res)
        return await self._already_sent(order, res.venue)

    async def _after_send_in_flight(self, res: SendReservation) -> SendReservation:
        """A send attempt holds the ClOrdID (``sending``): it may hand the venue's first answers
        over in its own result, which the workflow, abandoning, never reads (found by the chaos
        run: a fill lost that way left its order open). Wait, at most ``sending_wait_s``, for
        the attempt to mark it sent with those answers recorded, so that the abandon's answer
        carries them. An attempt that died leaves it ``sending``: then what is recorded is all
        there is, and what the venue sends later goes out as signals."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sending_wait_s
        while res.status == SENDING and loop.time() < deadline:
            await asyncio.sleep(0.02)
            res = await self.store.get_send(res.cl_ord_id) or res
        return res

    @activity.defn(name="send_cancel")
    @final_unless_transient
    async def send_cancel(self, req: VenueCancel) -> str:
        """OrderCancelRequest for the order; returns the cancel's ClOrdID (``<order>:C<n>``, or
        ``<order>:X<n>`` for a DAY order's own cancel at the close)."""
        cl_ord_id = req.cl_ord_id
        await self._send_once(cl_ord_id, req, MsgType.ORDER_CANCEL_REQUEST, order_cancel_request)
        return cl_ord_id

    @activity.defn(name="send_replace")
    @final_unless_transient
    async def send_replace(self, req: VenueReplace) -> str:
        """OrderCancelReplaceRequest of ``req.orig_order_id`` under the replacement's id as
        ClOrdID, once, ever (reserved like a new order: its reports find the replacement's home);
        returns that ClOrdID. The venue's answer (Replaced or OrderCancelReject) is booked by the
        original order (``fix.reports``)."""
        order, key = req.order, req.order.order_id

        def build(r: VenueReplace, *, poss_resend: bool = False) -> simplefix.FixMessage:
            return order_cancel_replace_request(r.order, orig_cl_ord_id=r.orig_order_id,
                                                cl_ord_id=key, poss_resend=poss_resend)

        _build(build, req)  # validate
        session = self._logged_on(req.venue)
        # the replacement's route is the original's: its fills count for that route
        res = await self.store.reserve_send(key, key, req.venue, MsgType.ORDER_CANCEL_REPLACE_REQUEST,
                                            account_id=order.account_id, shard=order.shard,
                                            route_of=req.orig_order_id)
        self.quality.replaced(key, req.orig_order_id)
        if res.status == SENT:
            log.info("replace %s already sent (retry): not sending again", key)
            return key
        seq = await session.send(_build(build, req, poss_resend=not res.created))
        await self.store.mark_sent(key, seq)
        log.info("order %s -> %s OrderCancelReplaceRequest %s seq %d", req.orig_order_id, req.venue,
                 key, seq)
        return key

    @activity.defn(name="send_status")
    @final_unless_transient
    async def send_status(self, req: VenueCancel) -> str:
        """OrderStatusRequest for the order; returns the request id ``<order>:S<n>`` (sent as
        OrdStatusReqID; the venue answers an ExecutionReport ExecType=I under the order's own
        ClOrdID)."""
        req_id = status_cl_ord_id(req.order_id, req.attempt)
        await self._send_once(req_id, req, MsgType.ORDER_STATUS_REQUEST, order_status_request)
        return req_id

    async def _send_once(self, key: str, req: VenueCancel, msg_type: str, build: _Builder) -> None:
        _build(build, req)  # validate
        session = self._logged_on(req.venue)
        res = await self.store.reserve_send(key, req.order_id, req.venue, msg_type)
        if res.status == SENT:
            log.info("%s %s already sent (retry): not sending again", msg_type, key)
            return
        seq = await session.send(_build(build, req, poss_resend=not res.created))
        await self.store.mark_sent(key, seq)
        log.info("order %s -> %s %s %s seq %d", req.order_id, req.venue, msg_type, key, seq)


def _aged(quote: Quote | None) -> tuple[Quote | None, int | None]:
    """The quote and its age now (ms; None without a quote or a time of its own)."""
    return quote, (quote.age_ms(time.time_ns()) if quote is not None else None)


def _qty(text: str) -> Decimal | None:
    """An order quantity for the size bucket; None when unreadable."""
    try:
        q = Decimal(text)
    except ArithmeticError:
        return None
    return q if q.is_finite() else None


class _Builder(Protocol):
    def __call__(self, req: VenueCancel, *, poss_resend: bool = False) -> simplefix.FixMessage: ...
