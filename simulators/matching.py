"""The simulated market maker's order-matching engine: pure order state, no I/O, no clock.

:class:`MatchingEngine` keeps one venue's orders and decides, from the quotes it is given, when
and at what price they fill. It takes a new order as the :class:`fix.messages.NewOrderSingle`
that arrived and returns what happened as plain report objects (:class:`VenueReport`,
:class:`VenueCancelReject`) that the FIX glue in :mod:`simulators.market_maker` turns into
ExecutionReport(8) / OrderCancelReject(9) messages. Codes (Side, OrdStatus, ExecType ...) are the
FIX ones, named by :mod:`fix.messages`.

It deliberately does NOT read quotes (the caller pushes them with :meth:`MatchingEngine.set_quote`),
does not read the time (every call that may fill takes ``now``, a monotonic number of seconds),
does not sleep, neither builds nor parses FIX messages, and keeps nothing on disk: order state
lives in memory for the life of the process.

Cancel/replace (:meth:`MatchingEngine.replace`, an OrderCancelReplaceRequest): a working order
takes the new terms (OrderQty is the new total, fills so far included; price, stop, time in
force) and the new ClOrdID, keeps its OrderID and its fills, and answers ExecType 5 (Replaced)
under the new ClOrdID with OrigClOrdID the old one; later reports carry the new ClOrdID. A fill
before the request stays a fill of the order as it was. Refused with an OrderCancelReject
(CxlRejResponseTo 2): an unknown or finished order, a duplicate ClOrdID, another symbol or
side, invalid terms, a halted symbol, or a total at or below what has filled.

Fill model (a wholesaler internalising retail flow, not an exchange book):

* a market order fills at the quote (buy at the ask, sell at the bid) improved by
  ``price_improvement_bps`` and rounded to $0.0001 towards the quote (improvement is never more
  than configured, and the price is never worse than the quote);
* a limit order fills when marketable (buy: ask <= limit, sell: bid >= limit) at the improved
  quote, which is never worse than the limit; otherwise it rests and fills when a later quote
  crosses it;
* stop (3) and stop-limit (4) orders trigger when the ask rises to the stop (buy) or the bid falls
  to it (sell), then behave as market / limit orders;
* each execution is at most one *slice*: ``fill_slices`` is a cyclic pattern of slice sizes
  (``[400, 300, 300]`` fills 1,000 shares as 400 + 300 + 300; ``[100]`` is a max slice size) and
  ``fill_delay`` seconds separate consecutive slices of one order (0 = all slices at once);
* IOC and FOK orders are decided at once, ignoring ``fill_delay``: at most ``max_liquidity``
  shares are available to each of them at the quote (None = unlimited). IOC fills what is
  available and cancels the rest (ExecType 4); FOK fills completely or is canceled untouched.
  ``max_liquidity`` does not limit DAY/GTC orders;
* DAY orders expire (ExecType C) when :meth:`MatchingEngine.expire_day_orders` is called; GTC
  orders rest until filled or canceled;
* auction orders (TimeInForce 2 AtTheOpening, 7 AtTheClose; market or limit) never match before
  their auction (:meth:`MatchingEngine.auction`, run by the caller at the open / close): there a
  market order or a marketable limit fills its whole rest at one price (no slices), the rest
  expires (ExecType C);
* a halted symbol rejects new orders and its resting orders do not fill while it is halted.

How venues differ (so a smart router has something to learn; every draw comes from the engine's
own ``random.Random(seed)``, so a run is reproducible): ``price_improvement_cents`` takes a fixed
amount off the price per share on top of the bps (never past the quote's other side: a buy never
pays less than the bid), ``improvement_jitter_cents`` adds a uniform draw in ``[0, jitter]``;
``reject_rate`` refuses that share of new orders (OrdRejReason 0, "venue declined");
``partial_fill_rate`` fills that share of DAY/GTC orders in two halves (the second after
``fill_delay``).

ClOrdID is the idempotency key: a NewOrderSingle whose ClOrdID the venue has already seen (live,
done or rejected order) never creates a second order; it is answered with an order-status report
(ExecType I) of the existing order carrying Text "duplicate ClOrdID".
"""

from __future__ import annotations

import itertools
import logging
import random
import secrets
from collections.abc import Iterable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from fix.messages import (
    CxlRejReason,
    CxlRejResponseTo,
    ExecType,
    NewOrderSingle,
    OrderCancelReplaceRequest,
    OrdRejReason,
    OrdStatus,
    Side,
    Tag,
    TimeInForce,
    field_label,
)
from simulators.venue_orders import (
    AUCTIONS,
    PRICE_QUANTUM,
    STATUS_NAMES,
    ZERO,
    Order,
    Quote,
    Rejected,
    Report,
    VenueCancelReject,
    VenueReport,
    fmt_decimal,
    improve,
    on_tick,
    rejected,
    tick_size,
    validate_order,
)

log = logging.getLogger(__name__)


class MatchingEngine:
    """One venue's orders and fill logic (see the module docstring for the fill model).

    Every public method returns the reports to send, in order. Nothing here blocks or does I/O.
    """

    def __init__(
        self,
        venue: str,
        *,
        price_improvement_bps: Decimal | int | str = 0,
        fill_slices: Sequence[Decimal | int] | None = None,
        fill_delay: float = 0.0,
        max_liquidity: Decimal | int | None = None,
        halted: Iterable[str] = (),
        id_prefix: str | None = None,
        price_improvement_cents: Decimal | int | str = 0,
        improvement_jitter_cents: Decimal | int | str = 0,
        reject_rate: float = 0.0,
        partial_fill_rate: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        self.venue = venue
        self.price_improvement_bps = Decimal(price_improvement_bps)
        self.price_improvement_cents = Decimal(price_improvement_cents)
        self.improvement_jitter_cents = Decimal(improvement_jitter_cents)
        if self.price_improvement_cents < ZERO or self.improvement_jitter_cents < ZERO:
            raise ValueError("price improvement must not be negative")
        if not (0.0 <= reject_rate <= 1.0 and 0.0 <= partial_fill_rate <= 1.0):
            raise ValueError("reject_rate and partial_fill_rate are shares in [0, 1]")
        self.reject_rate = float(reject_rate)
        self.partial_fill_rate = float(partial_fill_rate)
        self.rng = random.Random(seed)
        slices = [Decimal(s) for s in (fill_slices or [])]
        if any(s <= ZERO or s != s.to_integral_value() for s in slices):
            raise ValueError(f"fill slices must be positive integers: {fill_slices}")
        self.fill_slices: list[Decimal] = slices
        self.fill_delay = float(fill_delay)
        self.max_liquidity = None if max_liquidity is None else Decimal(max_liquidity)
        self.halted: set[str] = {s.upper() for s in halted}
        # ExecIDs/OrderIDs must never repeat across restarts of the simulator (the gateway books
        # one fill per ExecID, ever), so every run gets its own random prefix.
        self.id_prefix = id_prefix if id_prefix is not None else f"{venue}-{secrets.token_hex(4)}"
        self._exec_ids = itertools.count(1)
        self._order_ids = itertools.count(1)
        self._orders: dict[str, Order] = {}
        self._by_cl_ord_id: dict[str, Order] = {}
        self._quotes: dict[str, Quote] = {}

    # ----------------------------------------------------------------------------- queries
    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    def order(self, cl_ord_id: str) -> Order | None:
        """The order known by ``cl_ord_id`` (its own or that of the cancel that ended it)."""
        return self._by_cl_ord_id.get(cl_ord_id)

    def orders(self) -> list[Order]:
        return list(self._orders.values())

    def late_trade(self, cl_ord_id: str, qty: Decimal, price: Decimal) -> VenueReport:
        """Fault injection: a trade on an order after the venue ended it (canceled, expired) --
        a racing or buggy venue. The order's own state records the trade (its cumulative
        quantity grows); nothing else about it changes."""
        order = self._by_cl_ord_id[cl_ord_id]
        order.cum_qty += qty
        order.notional += qty * price
        order.fills.append((qty, price))
        return self._report(order, ExecType.TRADE, last_qty=qty, last_px=price,
                            text="late trade after the order ended")

    def working_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if o.working]

    def working_symbols(self) -> set[str]:
        return {o.symbol for o in self._orders.values() if o.working}

    def next_fill_due(self) -> float | None:
        """Earliest ``now`` at which a delayed next slice of some working order may fill."""
        due = [
            o.next_fill_at for o in self._orders.values() if o.working and o.fills and o.triggered
        ]
        return min(due) if due else None

    # ----------------------------------------------------------------------------- inputs
    def set_quote(self, symbol: str, bid: Decimal | str, ask: Decimal | str) -> None:
        """Record the current quote for ``symbol`` (does not match; call :meth:`match`)."""
        bid_d, ask_d = Decimal(bid), Decimal(ask)
        if bid_d <= ZERO or ask_d <= ZERO or bid_d > ask_d:
            raise ValueError(f"bad quote for {symbol}: {bid}/{ask}")
        self._quotes[symbol] = Quote(symbol, bid_d, ask_d)

    def put_quote(self, quote: Quote) -> None:
        self.set_quote(quote.symbol, quote.bid, quote.ask)

    def submit(self, req: NewOrderSingle, now: float, *, halted: bool = False) -> list[Report]:
        """Accept (ExecType 0, then any immediate fills) or reject (ExecType 8) a new order.

        ``halted`` adds an external halt (e.g. from Redis) to the engine's own ``halted`` set.
        A ClOrdID seen before yields only a status report of the existing order.
        """
        if req.cl_ord_id and req.cl_ord_id in self._by_cl_ord_id:
            existing = self._by_cl_ord_id[req.cl_ord_id]
            log.info("%s: duplicate ClOrdID %s", self.venue, req.cl_ord_id)
            return [self._report(existing, ExecType.ORDER_STATUS, text="duplicate ClOrdID")]
        try:
            order = self._validate(req, halted=halted)
            if self.reject_rate and self.rng.random() < self.reject_rate:
                raise Rejected(OrdRejReason.BROKER_OPTION, "venue declined")
        except Rejected as rej:
            return [self._reject(req, rej.reason, rej.text)]
        if self.partial_fill_rate and self.rng.random() < self.partial_fill_rate:
            order.halves = True
        self._orders[order.order_id] = order
        self._by_cl_ord_id[order.cl_ord_id] = order
        reports: list[Report] = [self._report(order, ExecType.NEW)]
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            reports += self._execute_immediate(order)
        else:
            reports += self._work(order, now)
        return reports

    def cancel(
        self,
        orig_cl_ord_id: str | None,
        cl_ord_id: str | None,
        *,
        symbol: str | None = None,
        side: str | None = None,
    ) -> list[Report]:
        """Cancel the rest of a working order (ExecType 4) or answer an OrderCancelReject."""
        cxl_id = cl_ord_id or "NONE"
        if not orig_cl_ord_id:
            return [VenueCancelReject(
                "NONE", cxl_id, "NONE", OrdStatus.REJECTED, CxlRejReason.UNKNOWN_ORDER,
                f"missing required field {field_label(Tag.ORIG_CL_ORD_ID)}")]
        order = self._by_cl_ord_id.get(orig_cl_ord_id)
        if order is None:
            return [VenueCancelReject("NONE", cxl_id, orig_cl_ord_id, OrdStatus.REJECTED,
                                      CxlRejReason.UNKNOWN_ORDER, "unknown order")]
        if not order.working:
            return [VenueCancelReject(
                order.order_id, cxl_id, orig_cl_ord_id, order.ord_status, CxlRejReason.TOO_LATE,
                f"too late to cancel: order is {STATUS_NAMES[order.ord_status]}")]
        if cl_ord_id is None or not cl_ord_id:
            return [VenueCancelReject(
                order.order_id, cxl_id, orig_cl_ord_id, order.ord_status,
                CxlRejReason.UNKNOWN_ORDER, f"missing required field {field_label(Tag.CL_ORD_ID)}")]
        if cl_ord_id in self._by_cl_ord_id:
            return [VenueCancelReject(order.order_id, cxl_id, orig_cl_ord_id, order.ord_status,
                                      CxlRejReason.DUPLICATE_CLORDID, "duplicate ClOrdID")]
        order.ord_status = OrdStatus.CANCELED
        self._by_cl_ord_id[cl_ord_id] = order
        return [self._report(order, ExecType.CANCELED, cl_ord_id=cl_ord_id,
                             orig_cl_ord_id=orig_cl_ord_id)]

    def replace(self, req: OrderCancelReplaceRequest, now: float, *,
                halted: bool = False) -> list[Report]:
        """Give a working order new terms (ExecType 5, then any fills they make possible) or
        answer an OrderCancelReject (CxlRejResponseTo 2; a halted symbol's orders are not
        replaced); see the module docstring."""
        orig, cl = (req.orig_cl_ord_id or "").strip(), (req.cl_ord_id or "").strip()
        order = self._by_cl_ord_id.get(orig) if orig else None

        def refuse(reason: int, why: str) -> list[Report]:
            return [VenueCancelReject(
                order.order_id if order else "NONE", cl or "NONE", orig or "NONE",
                order.ord_status if order else OrdStatus.REJECTED, reason, why,
                CxlRejResponseTo.ORDER_CANCEL_REPLACE_REQUEST)]

        if order is None:
            return refuse(CxlRejReason.UNKNOWN_ORDER, "unknown order")
        if not order.working or order.cl_ord_id != orig:
            return refuse(CxlRejReason.TOO_LATE,
                          f"too late to replace: order is {STATUS_NAMES.get(order.ord_status, 'replaced')}")
        if not cl or cl in self._by_cl_ord_id:
            return refuse(CxlRejReason.DUPLICATE_CLORDID if cl else CxlRejReason.UNKNOWN_ORDER,
                          "duplicate ClOrdID" if cl else "missing required field ClOrdID(11)")
        try:
            terms = self._validate(NewOrderSingle(
                cl, req.symbol, req.side, req.order_qty, req.ord_type, req.price, req.stop_px,
                req.time_in_force), halted=halted)
        except Rejected as rej:
            return refuse(CxlRejReason.BROKER_OPTION, rej.text)
        if (terms.symbol, terms.side) != (order.symbol, order.side):
            return refuse(CxlRejReason.BROKER_OPTION, "symbol and side cannot be replaced")
        if terms.order_qty <= order.cum_qty:
            return refuse(CxlRejReason.BROKER_OPTION, f"quantity {fmt_decimal(terms.order_qty)} "
                          f"is not above the {fmt_decimal(order.cum_qty)} filled")
        order.cl_ord_id, order.order_qty, order.ord_type = cl, terms.order_qty, terms.ord_type
        order.price, order.stop_px, order.time_in_force = terms.price, terms.stop_px, terms.time_in_force
        order.triggered = terms.triggered
        self._by_cl_ord_id[cl] = order
        reports: list[Report] = [self._report(order, ExecType.REPLACED, orig_cl_ord_id=orig)]
        return reports + self._work(order, now)

    def status(
        self, cl_ord_id: str | None, *, symbol: str | None = None, side: str | None = None
    ) -> VenueReport:
        """An order-status report (ExecType I); unknown orders get OrdStatus 8, Text unknown order."""
        order = self._by_cl_ord_id.get(cl_ord_id) if cl_ord_id else None
        if order is None:
            return VenueReport(
                order_id="NONE", exec_id=self._next_exec_id(), exec_type=ExecType.ORDER_STATUS,
                ord_status=OrdStatus.REJECTED, cl_ord_id=cl_ord_id or "NONE",
                symbol=symbol or "NONE", side=side or Side.BUY, order_qty=ZERO, leaves_qty=ZERO,
                cum_qty=ZERO, avg_px=ZERO, ord_rej_reason=OrdRejReason.UNKNOWN_ORDER,
                text="unknown order",
            )
        return self._report(order, ExecType.ORDER_STATUS, cl_ord_id=cl_ord_id)

    def match(self, now: float, symbols: Iterable[str] | None = None) -> list[Report]:
        """Fill what the current quotes allow for resting orders (in arrival order)."""
        wanted = None if symbols is None else set(symbols)
        reports: list[Report] = []
        for order in sorted(self.working_orders(), key=lambda o: o.seq):
            if wanted is None or order.symbol in wanted:
                reports += self._work(order, now)
        return reports

    def auction(self, which: str, now: float) -> list[Report]:
        """The opening (``which`` = ``open``) or closing auction: every working order of that
        auction (TimeInForce 2 / 7) executes its whole rest at one price when executable (a
        market order, a limit the quote crosses: the price a resting order would get), else
        expires (ExecType C), as do those of a halted symbol. Fill slices do not apply."""
        tif = AUCTIONS[which]
        reports: list[Report] = []
        for order in sorted(self.working_orders(), key=lambda o: o.seq):
            if order.time_in_force != tif:
                continue
            quote = self._quotes.get(order.symbol)
            halted = quote is None or self._is_halted(order.symbol)
            px = None if halted or quote is None else self._fill_price(order, quote)
            if px is not None:
                reports.append(self._fill(order, order.order_qty - order.cum_qty, px, now))
            else:
                order.ord_status = OrdStatus.EXPIRED
                name = "opening" if which == "open" else "closing"
                reports.append(self._report(order, ExecType.EXPIRED,
                                            text=f"not executed in the {name} auction"))
        return reports

    def expire_day_orders(self) -> list[Report]:
        """Expire every working DAY order (ExecType C, OrdStatus C): the market has closed."""
        reports: list[Report] = []
        for order in sorted(self.working_orders(), key=lambda o: o.seq):
            if order.time_in_force == TimeInForce.DAY:
                order.ord_status = OrdStatus.EXPIRED
                reports.append(self._report(order, ExecType.EXPIRED, text="day order expired"))
        return reports

    # ----------------------------------------------------------------------------- internals
    def _next_exec_id(self) -> str:
        return f"{self.id_prefix}-E{next(self._exec_ids)}"

    def _validate(self, req: NewOrderSingle, *, halted: bool) -> Order:
        return validate_order(req, quoted=self._quotes, halted=halted,
                              halted_symbols=self.halted, seq=len(self._orders),
                              new_order_id=lambda: f"{self.id_prefix}-O{next(self._order_ids)}")

    def _is_halted(self, symbol: str) -> bool:
        return symbol.upper() in self.halted

    def _trigger(self, order: Order, quote: Quote) -> None:
        if order.triggered or order.stop_px is None:
            return
        if (order.side == Side.BUY and quote.ask >= order.stop_px) or (
            order.side == Side.SELL and quote.bid <= order.stop_px
        ):
            order.triggered = True
            log.info("%s: stop %s triggered at %s/%s", self.venue, order.cl_ord_id,
                     quote.bid, quote.ask)

    def _fill_price(self, order: Order, quote: Quote) -> Decimal | None:
        """The price ``order`` can execute at now, or None when it is not executable."""
        if not order.triggered:
            return None
        if order.side == Side.BUY:
            if order.price is not None and quote.ask > order.price:
                return None
            return self._improve_more(improve(quote.ask, Side.BUY, self.price_improvement_bps),
                                      Side.BUY, quote)
        if order.price is not None and quote.bid < order.price:
            return None
        return self._improve_more(improve(quote.bid, Side.SELL, self.price_improvement_bps),
                                  Side.SELL, quote)

    def _improve_more(self, px: Decimal, side: str, quote: Quote) -> Decimal:
        """``px`` improved by the fixed cents (+ jitter), never past the quote's other side."""
        cents = self.price_improvement_cents
        if self.improvement_jitter_cents:
            cents += self.improvement_jitter_cents * Decimal(str(round(self.rng.random(), 4)))
        if cents <= ZERO:
            return px
        step = (cents / 100).quantize(PRICE_QUANTUM, rounding=ROUND_FLOOR)
        return max(px - step, quote.bid) if side == Side.BUY else min(px + step, quote.ask)

    def _slice_qty(self, order: Order) -> Decimal:
        leaves = order.order_qty - order.cum_qty
        if order.halves and not order.fills and leaves > 1:
            return (leaves / 2).to_integral_value(rounding=ROUND_CEILING)
        if not self.fill_slices:
            return leaves
        return min(leaves, self.fill_slices[len(order.fills) % len(self.fill_slices)])

    def _fill(self, order: Order, qty: Decimal, px: Decimal, now: float) -> VenueReport:
        order.cum_qty += qty
        order.notional += qty * px
        order.fills.append((qty, px))
        order.ord_status = (
            OrdStatus.FILLED if order.cum_qty == order.order_qty else OrdStatus.PARTIALLY_FILLED
        )
        order.next_fill_at = now + self.fill_delay
        return self._report(order, ExecType.TRADE, last_qty=qty, last_px=px)

    def _work(self, order: Order, now: float) -> list[Report]:
        """Fill slices of a DAY/GTC order while executable and no slice delay is pending (an
        auction order waits for its auction)."""
        reports: list[Report] = []
        auction = order.time_in_force in AUCTIONS.values()
        while not auction and order.working and not self._is_halted(order.symbol):
            quote = self._quotes.get(order.symbol)
            if quote is None:
                break
            self._trigger(order, quote)
            px = self._fill_price(order, quote)
            if px is None or (order.fills and now < order.next_fill_at):
                break
            reports.append(self._fill(order, self._slice_qty(order), px, now))
        return reports

    def _execute_immediate(self, order: Order) -> list[Report]:
        """IOC / FOK: fill what ``max_liquidity`` allows now, in slices; cancel any rest."""
        quote = self._quotes[order.symbol]
        px = self._fill_price(order, quote)
        available = ZERO if px is None else (
            order.order_qty if self.max_liquidity is None else min(order.order_qty,
                                                                    self.max_liquidity))
        reports: list[Report] = []
        if order.time_in_force == TimeInForce.FOK and available < order.order_qty:
            available = ZERO
        assert px is not None or available == ZERO
        while px is not None and order.cum_qty < available:
            qty = min(self._slice_qty(order), available - order.cum_qty)
            reports.append(self._fill(order, qty, px, 0.0))
        if order.working:
            order.ord_status = OrdStatus.CANCELED
            kind = "IOC" if order.time_in_force == TimeInForce.IOC else "FOK"
            reports.append(self._report(
                order, ExecType.CANCELED,
                text=f"{kind}: unfilled quantity canceled" if order.cum_qty else
                f"{kind}: no liquidity at the limit, canceled"))
        return reports

    def _report(
        self,
        order: Order,
        exec_type: str,
        *,
        cl_ord_id: str | None = None,
        orig_cl_ord_id: str | None = None,
        last_qty: Decimal = ZERO,
        last_px: Decimal = ZERO,
        text: str | None = None,
    ) -> VenueReport:
        return VenueReport(
            order_id=order.order_id, exec_id=self._next_exec_id(), exec_type=exec_type,
            ord_status=order.ord_status, cl_ord_id=cl_ord_id or order.cl_ord_id,
            symbol=order.symbol, side=order.side, order_qty=order.order_qty,
            leaves_qty=order.leaves_qty, cum_qty=order.cum_qty, avg_px=order.avg_px,
            last_qty=last_qty, last_px=last_px, orig_cl_ord_id=orig_cl_ord_id,
            ord_type=order.ord_type, price=order.price, stop_px=order.stop_px,
            time_in_force=order.time_in_force, text=text,
        )

    def _reject(self, req: NewOrderSingle, reason: int, text: str) -> VenueReport:
        log.info("%s: reject %s: %s", self.venue, req.cl_ord_id, text)
        report, ghost = rejected(req, self._next_exec_id(), reason, text)
        # Remember rejected ClOrdIDs too: a retry of a rejected order gets its status, never a
        # fresh order (ClOrdID is the idempotency key).
        if ghost is not None:
            self._by_cl_ord_id[ghost.cl_ord_id] = ghost
        return report


# the vocabulary (simulators/venue_orders.py) stays importable from here, as before the split
__all__ = ["ZERO", "MatchingEngine", "Order", "Quote", "Report", "VenueCancelReject", "VenueReport",
           "fmt_decimal", "improve", "on_tick", "tick_size"]
