"""The simulated venue's order vocabulary: prices and ticks, the quote, the order, the reports
it sends (:class:`VenueReport`, :class:`VenueCancelReject`), and the validation of a new order.

Pure values and functions: no I/O, no clock, no state. What an order does once accepted (when
and at what price it fills, cancel, replace, auctions) is :class:`simulators.matching.
MatchingEngine`'s, which re-exports every public name here (import them from either module).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from fix.messages import (
    LIMIT_TYPES,
    STOP_TYPES,
    WORKING_ORD_STATUSES,
    CxlRejResponseTo,
    ExecType,
    NewOrderSingle,
    OrdRejReason,
    OrdStatus,
    OrdType,
    Side,
    Tag,
    TimeInForce,
    field_label,
)

ZERO = Decimal(0)
PRICE_QUANTUM = Decimal("0.0001")
AVG_PX_QUANTUM = Decimal("1e-8")
PENNY = Decimal("0.01")
ONE = Decimal(1)
BPS = Decimal(10_000)
MAX_ORDER_QTY = Decimal(10_000_000)
MAX_PRICE = Decimal(1_000_000)


# What this venue accepts (FIX knows more codes than the simulator trades).
SIDES = frozenset({Side.BUY, Side.SELL})
ORD_TYPES = frozenset({OrdType.MARKET, OrdType.LIMIT, OrdType.STOP, OrdType.STOP_LIMIT})
TIMES_IN_FORCE = frozenset({TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK,
                            TimeInForce.AT_THE_OPENING, TimeInForce.AT_THE_CLOSE})
# auction orders: executed (or expired) only at their auction (MatchingEngine.auction)
AUCTIONS = {"open": TimeInForce.AT_THE_OPENING, "close": TimeInForce.AT_THE_CLOSE}


def tick_size(price: Decimal) -> Decimal:
    """The minimum price increment: $0.01 at or above $1, $0.0001 below (Reg NMS rule 612)."""
    return PENNY if price >= ONE else PRICE_QUANTUM


def on_tick(price: Decimal) -> bool:
    """True when ``price`` is a multiple of its tick size."""
    return price % tick_size(price) == ZERO


def improve(quote_px: Decimal, side: str, bps: Decimal) -> Decimal:
    """The quote price improved by ``bps`` for ``side``, rounded to $0.0001 towards the quote.

    Buys pay less than the ask, sells receive more than the bid; rounding towards the quote means
    the improvement never exceeds ``bps`` and the price is never worse than the quote.
    """
    if bps <= ZERO:
        return quote_px
    if side == Side.BUY:
        return (quote_px * (ONE - bps / BPS)).quantize(PRICE_QUANTUM, rounding=ROUND_CEILING)
    return (quote_px * (ONE + bps / BPS)).quantize(PRICE_QUANTUM, rounding=ROUND_FLOOR)


def fmt_decimal(value: Decimal) -> str:
    """A Decimal as a FIX/JSON string: plain notation, no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True)
class Quote:
    """A top-of-book quote. Prices are Decimals; sizes are informational only."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: int = 0
    ask_size: int = 0


@dataclass(frozen=True)
class VenueReport:
    """One ExecutionReport(8). ``exec_id`` is unique per venue; a fill keeps it forever."""

    order_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    cl_ord_id: str
    symbol: str
    side: str
    order_qty: Decimal
    leaves_qty: Decimal
    cum_qty: Decimal
    avg_px: Decimal
    last_qty: Decimal = ZERO
    last_px: Decimal = ZERO
    orig_cl_ord_id: str | None = None
    ord_type: str | None = None
    price: Decimal | None = None
    stop_px: Decimal | None = None
    time_in_force: str | None = None
    ord_rej_reason: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class VenueCancelReject:
    """One OrderCancelReject(9): a reply to an OrderCancelRequest (CxlRejResponseTo 1) or to an
    OrderCancelReplaceRequest (``response_to`` 2)."""

    order_id: str
    cl_ord_id: str
    orig_cl_ord_id: str
    ord_status: str
    cxl_rej_reason: int
    text: str
    response_to: str = CxlRejResponseTo.ORDER_CANCEL_REQUEST


Report = VenueReport | VenueCancelReject


@dataclass
class Order:
    """A live or finished order at the venue. Mutated only by :class:`MatchingEngine`."""

    order_id: str
    cl_ord_id: str
    symbol: str
    side: str
    order_qty: Decimal
    ord_type: str
    price: Decimal | None
    stop_px: Decimal | None
    time_in_force: str
    seq: int
    ord_status: str = OrdStatus.NEW
    cum_qty: Decimal = ZERO
    notional: Decimal = ZERO
    fills: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    triggered: bool = True
    next_fill_at: float = 0.0
    halves: bool = False  # partial_fill_rate drew this order: it fills in two halves

    @property
    def working(self) -> bool:
        return self.ord_status in WORKING_ORD_STATUSES

    @property
    def leaves_qty(self) -> Decimal:
        return self.order_qty - self.cum_qty if self.working else ZERO

    @property
    def avg_px(self) -> Decimal:
        if self.cum_qty == ZERO:
            return ZERO
        with localcontext() as ctx:
            ctx.prec = 60
            return (self.notional / self.cum_qty).quantize(AVG_PX_QUANTUM, ROUND_HALF_EVEN)


class Rejected(Exception):
    """A new order (or new terms) the venue refuses: the OrdRejReason and the Text."""

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


def parse_decimal(raw: str) -> Decimal:
    """A finite Decimal from FIX field text; ValueError otherwise."""
    try:
        value = Decimal(raw.strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(raw) from exc
    if not value.is_finite():
        raise ValueError(raw)
    return value


def validate_order(req: NewOrderSingle, *, quoted: Container[str], halted: bool,
                   halted_symbols: Container[str], new_order_id: Callable[[], str],
                   seq: int) -> Order:
    """The order ``req`` asks for, or :class:`Rejected` (what this venue trades, a whole
    quantity, prices on tick and in range, a ``quoted`` symbol, not ``halted`` nor in
    ``halted_symbols``, upper-case). ``new_order_id`` is called only for an accepted order, so a
    rejection uses no OrderID. Changes no state of its own."""

    def required(value: str | None, tag: Tag) -> str:
        if value is None or value.strip() == "":
            raise Rejected(OrdRejReason.BROKER_OPTION,
                           f"missing required field {field_label(tag)}")
        return value.strip()

    def unsupported(value: str, tag: Tag) -> Rejected:
        return Rejected(OrdRejReason.UNSUPPORTED, f"unsupported {field_label(tag)}={value}")

    cl_ord_id = required(req.cl_ord_id, Tag.CL_ORD_ID)
    symbol = required(req.symbol, Tag.SYMBOL)
    side = required(req.side, Tag.SIDE)
    raw_qty = required(req.order_qty, Tag.ORDER_QTY)
    ord_type = required(req.ord_type, Tag.ORD_TYPE)
    if side not in SIDES:
        raise unsupported(side, Tag.SIDE)
    if ord_type not in ORD_TYPES:
        raise unsupported(ord_type, Tag.ORD_TYPE)
    tif = (req.time_in_force or TimeInForce.DAY).strip() or TimeInForce.DAY
    if tif not in TIMES_IN_FORCE:
        raise unsupported(tif, Tag.TIME_IN_FORCE)
    bad_qty = f"invalid quantity {field_label(Tag.ORDER_QTY)}={raw_qty}"
    try:
        qty = parse_decimal(raw_qty)
    except ValueError:
        raise Rejected(OrdRejReason.INCORRECT_QUANTITY, bad_qty) from None
    if qty <= ZERO or qty > MAX_ORDER_QTY or qty != qty.to_integral_value():
        raise Rejected(OrdRejReason.INCORRECT_QUANTITY,
                       f"{bad_qty}: must be a whole number of shares from 1 to "
                       f"{fmt_decimal(MAX_ORDER_QTY)}")
    price = _parse_price(req.price, Tag.PRICE) if ord_type in LIMIT_TYPES else None
    stop_px = _parse_price(req.stop_px, Tag.STOP_PX) if ord_type in STOP_TYPES else None
    if stop_px is not None and tif in (TimeInForce.IOC, TimeInForce.FOK):
        raise Rejected(OrdRejReason.UNSUPPORTED, "stop orders cannot be IOC or FOK")
    if tif in AUCTIONS.values() and ord_type not in (OrdType.MARKET, OrdType.LIMIT):
        raise Rejected(OrdRejReason.UNSUPPORTED, "auction orders are market or limit orders")
    if symbol not in quoted:
        raise Rejected(OrdRejReason.UNKNOWN_SYMBOL, f"unknown symbol {symbol}")
    if halted or symbol.upper() in halted_symbols:
        raise Rejected(OrdRejReason.EXCHANGE_CLOSED, f"halted: {symbol}")
    return Order(
        order_id=new_order_id(),
        cl_ord_id=cl_ord_id, symbol=symbol, side=side, order_qty=qty.quantize(ONE),
        ord_type=ord_type, price=price, stop_px=stop_px, time_in_force=tif,
        seq=seq, triggered=stop_px is None,
    )


def _parse_price(raw: str | None, tag: Tag) -> Decimal:
    if raw is None or raw.strip() == "":
        raise Rejected(OrdRejReason.BROKER_OPTION,
                       f"missing required field {field_label(tag)}")
    invalid = f"invalid price {field_label(tag)}={raw}"
    try:
        value = parse_decimal(raw)
    except ValueError:
        raise Rejected(OrdRejReason.BROKER_OPTION, invalid) from None
    if value <= ZERO or value > MAX_PRICE:
        raise Rejected(OrdRejReason.BROKER_OPTION,
                       f"{invalid}: must be above 0 and at most {fmt_decimal(MAX_PRICE)}")
    if not on_tick(value):
        raise Rejected(OrdRejReason.BROKER_OPTION,
                       f"{invalid}: not on a {fmt_decimal(tick_size(value))} tick")
    return value


def rejected(req: NewOrderSingle, exec_id: str, reason: int,
             text: str) -> tuple[VenueReport, Order | None]:
    """The ExecutionReport (ExecType 8) refusing ``req``, and the finished order that keeps its
    ClOrdID taken (None when it has none). Takes what it can from ``req``: an unusable quantity
    is reported as 0, a missing symbol or ClOrdID as NONE."""
    qty = ZERO
    try:
        if req.order_qty is not None:
            qty = parse_decimal(req.order_qty)
    except ValueError:
        qty = ZERO
    if not ZERO <= qty <= MAX_ORDER_QTY:
        qty = ZERO
    report = VenueReport(
        order_id="NONE", exec_id=exec_id, exec_type=ExecType.REJECTED,
        ord_status=OrdStatus.REJECTED, cl_ord_id=(req.cl_ord_id or "NONE").strip() or "NONE",
        symbol=(req.symbol or "NONE").strip() or "NONE",
        side=req.side if req.side in SIDES else Side.BUY,
        order_qty=qty, leaves_qty=ZERO, cum_qty=ZERO, avg_px=ZERO,
        ord_rej_reason=reason, text=text,
    )
    if not (req.cl_ord_id and req.cl_ord_id.strip()):
        return report, None
    return report, Order(
        order_id="NONE", cl_ord_id=req.cl_ord_id.strip(), symbol=report.symbol,
        side=report.side, order_qty=qty,
        ord_type=req.ord_type or OrdType.MARKET, price=None, stop_px=None,
        time_in_force=req.time_in_force or TimeInForce.DAY, seq=-1,
        ord_status=OrdStatus.REJECTED,
    )


# how a cancel or replace refused as too late names the order's state
STATUS_NAMES: dict[str, str] = {
    OrdStatus.NEW: "new",
    OrdStatus.PARTIALLY_FILLED: "partially filled",
    OrdStatus.FILLED: "filled",
    OrdStatus.CANCELED: "canceled",
    OrdStatus.REJECTED: "rejected",
    OrdStatus.EXPIRED: "expired",
}
