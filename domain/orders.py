"""Orders: the state machine, request validation, hold sizing and fill arithmetic. Pure.

The workflow and the activities both call these; nothing here touches a database, a clock or
the network. Quantities and prices are Decimal. Fractional quantities (up to 9 decimals) and
``notional`` (dollar-amount) orders are parsed and bounded here; how they fill is
``domain.fractional``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from domain.ledger import valid_symbol
from domain.money import NOTIONAL_BOUNDS, PRICE_BOUNDS, QTY_BOUNDS, USD, Bounds, bounded_decimal, check_scale
from domain.order_payloads import (  # noqa: F401  (re-exported: the payloads live there)
    AcceptOrderInput,
    OrderSnapshot,
    OrderTimeouts,
    PlaceOrderInput,
    ReplaceInput,
    RequestReplaceInput,
    ResolveFill,
    ResolveInput,
    TransitionInput,
)
from domain.order_state import (  # noqa: F401  (re-exported: the state machine lives there)
    _VENUE_OUTCOMES,
    ALPACA_STATUS,
    AT_VENUE,
    OPEN_STATUSES,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    OrderError,
    OrderState,
    S,
    alpaca_status,
    can_transition,
    transition,
)

# --- requests ----------------------------------------------------------------------------

SIDES = ("buy", "sell")
TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
# a trailing stop is held here (domain.trigger) until it fires: a DAY or GTC order only
TRAILING_TIFS = ("day", "gtc")
# a percent trail: 0 < p < 100, at most two decimals (a hundredth of a percent)
TRAIL_PERCENT_BOUNDS = Bounds(Decimal(100), 2)
# opg / cls: Alpaca's auction orders (market or limit on the open, on the close: domain.hours)
TIFS = ("day", "gtc", "ioc", "fok", "opg", "cls")
AUCTION_TIFS = ("opg", "cls")
MAX_CLIENT_ORDER_ID = 128  # Alpaca's limit
# Fields of an Alpaca order request this server reads.
KNOWN_FIELDS = frozenset({"symbol", "side", "type", "order_type", "time_in_force", "qty", "notional",
                          "limit_price",
                          "stop_price", "client_order_id", "extended_hours", "order_class",
                          "position_intent", "trail_price", "trail_percent", "take_profit",
                          "stop_loss"})
# Alpaca fields this server does not implement: refused when set, never dropped (a bracket
# order placed as a plain order would lose its stop-loss).
UNSUPPORTED_FIELDS = ("legs", "advanced_instructions")
SIMPLE_ORDER_CLASSES = ("simple", "")
# order groups (domain.order_groups parses them; this module parses simple orders only)
GROUP_ORDER_CLASSES = ("bracket", "oco", "oto")
LEG_FIELDS = ("take_profit", "stop_loss")
# what an order here always is (long only, no shorting): any other intent is refused
POSITION_INTENTS = {"buy": "buy_to_open", "sell": "sell_to_close"}
# Alpaca: fractional and notional orders are DAY only, no extended hours; notional orders are
# market orders of at least $1; fractional quantities are market or limit orders
MIN_NOTIONAL = Decimal(1)
FRACTIONAL_TYPES = ("market", "limit")


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    extended_hours: bool = False
    # a trailing stop's trail: exactly one is set (dollars, or percent of the high-water mark)
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    # a dollar amount (market DAY orders): ``qty`` is then 0 until the fill fixes it
    notional: Decimal | None = None

    @property
    def fractional(self) -> bool:
        """Filled at least in part by the firm (``domain.fractional``): a notional order or a
        quantity with a fraction of a share."""
        return self.notional is not None or self.qty != self.qty.to_integral_value()

    def hash(self) -> str:
        """Identity of what was asked (not of who or when): same body -> same hash. The trail
        fields count only when set, so orders of other types hash as they always did."""
        body: dict[str, object] = {
            "symbol": self.symbol, "side": self.side, "type": self.type,
            "time_in_force": self.time_in_force, "qty": _canon(self.qty),
            "limit_price": _canon(self.limit_price), "stop_price": _canon(self.stop_price),
            "extended_hours": self.extended_hours,
        }
        body.update(self._trail(_canon))
        if self.notional is not None:  # absent otherwise: the hashes of qty orders are unchanged
            body["notional"] = _canon(self.notional)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_wire(self) -> dict[str, str | bool | None]:
        wire: dict[str, str | bool | None] = {
            "symbol": self.symbol, "side": self.side, "type": self.type,
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else str(self.limit_price),
            "stop_price": None if self.stop_price is None else str(self.stop_price),
            "client_order_id": self.client_order_id, "extended_hours": self.extended_hours,
            **self._trail(str),
        }
        if self.notional is not None:
            wire["notional"] = str(self.notional)
        else:
            wire["qty"] = str(self.qty)
        return wire

    def _trail(self, fmt: Callable[[Decimal], str | None]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        if self.trail_price is not None:
            out["trail_price"] = fmt(self.trail_price)
        if self.trail_percent is not None:
            out["trail_percent"] = fmt(self.trail_percent)
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, object]) -> OrderRequest:
        return parse_order_request(d)


def _canon(d: Decimal | None) -> str | None:
    return None if d is None else format(d.normalize(), "f")


def _price(value: object, field: str) -> Decimal:
    p = bounded_decimal(value, PRICE_BOUNDS, field=field, scale_code="invalid_price_increment")
    # penny increments: >= $1 in cents, below $1 up to 4 decimals
    places = 2 if p >= 1 else 4
    if p != p.quantize(Decimal(1).scaleb(-places)):
        raise OrderError(f"{field} {p} is not a valid increment (max {places} decimals at this price)",
                         code="invalid_price_increment")
    return p


def parse_order_request(d: Mapping[str, object]) -> OrderRequest:
    """Validate an Alpaca-shaped order request. Raises :class:`OrderError` / ``InvalidAmount``.

    Every field is read or refused: unknown fields and the Alpaca features not implemented here
    (other order classes, take-profit/stop-loss legs, trailing stops, notional) are refused with
    a code naming them. Numbers are bounded (:data:`QTY_BOUNDS`, :data:`PRICE_BOUNDS`) before
    any arithmetic."""
    _refuse_unimplemented(d)
    symbol = str(d.get("symbol") or "").strip().upper()
    if not symbol or not valid_symbol(symbol):
        raise OrderError("symbol is required and must be a ticker like AAPL", code="invalid_symbol")
    side = str(d.get("side") or "")
    if side not in SIDES:
        raise OrderError(f"side must be one of {', '.join(SIDES)}", code="invalid_side")
    otype = str(d.get("type") or d.get("order_type") or "")
    if otype not in TYPES:
        raise OrderError(f"type must be one of {', '.join(TYPES)}", code="invalid_type")
    tif = str(d.get("time_in_force") or "")
    if tif not in TIFS:
        raise OrderError(f"time_in_force must be one of {', '.join(TIFS)}", code="invalid_time_in_force")
    if tif in AUCTION_TIFS and otype not in ("market", "limit"):
        raise OrderError(f"time_in_force {tif} (an auction order) is for market and limit orders",
                         code="invalid_time_in_force")
    qty, notional = _quantity(d)
    intent = d.get("position_intent")
    if intent is not None and intent != POSITION_INTENTS[side]:
        raise OrderError(f"position_intent {intent!r} is not supported: a {side} order here is "
                         f"{POSITION_INTENTS[side]} (long positions only)",
                         code="position_intent_not_supported")
    limit = stop = None
    if otype in ("limit", "stop_limit"):
        if d.get("limit_price") is None:
            raise OrderError(f"limit_price is required for {otype} orders", code="missing_limit_price")
        limit = _price(d.get("limit_price"), "limit_price")
    elif d.get("limit_price") is not None:
        raise OrderError(f"limit_price is not allowed for {otype} orders", code="unexpected_limit_price")
    if otype in ("stop", "stop_limit"):
        if d.get("stop_price") is None:
            raise OrderError(f"stop_price is required for {otype} orders", code="missing_stop_price")
        stop = _price(d.get("stop_price"), "stop_price")
    elif d.get("stop_price") is not None:
        raise OrderError(f"stop_price is not allowed for {otype} orders", code="unexpected_stop_price")
    trail_price, trail_percent = _trail(d, otype, tif)
    coid = d.get("client_order_id")
    if coid is not None:
        coid = str(coid)
        if not coid or len(coid) > MAX_CLIENT_ORDER_ID:
            raise OrderError(f"client_order_id must be 1..{MAX_CLIENT_ORDER_ID} characters",
                             code="invalid_client_order_id")
    ext = d.get("extended_hours") or False
    if not isinstance(ext, bool):
        raise OrderError("extended_hours must be true or false", code="invalid_extended_hours")
    if ext and not (otype == "limit" and tif == "day"):
        raise OrderError("extended_hours orders must be limit orders with time_in_force day",
                         code="invalid_extended_hours")
    req = OrderRequest(symbol, side, otype, tif, qty, limit, stop, coid, ext, trail_price,
                       trail_percent, notional)
    _check_fractional(req)
    return req


def _quantity(d: Mapping[str, object]) -> tuple[Decimal, Decimal | None]:
    """``qty`` (up to 9 decimals) or ``notional`` (USD, 2 decimals, at least $1): exactly one."""
    if d.get("qty") is not None and d.get("notional") is not None:
        raise OrderError("give qty or notional, not both", code="qty_and_notional")
    if d.get("notional") is not None:
        notional = bounded_decimal(d.get("notional"), NOTIONAL_BOUNDS, field="notional",
                                   scale_code="notional_too_many_decimals")
        if notional < MIN_NOTIONAL:
            raise OrderError(f"notional must be at least ${MIN_NOTIONAL}", code="notional_below_minimum")
        return Decimal(0), notional
    if d.get("qty") is None:
        raise OrderError("qty or notional is required", code="invalid_qty")
    qty = bounded_decimal(d.get("qty"), QTY_BOUNDS, field="qty", scale_code="qty_too_many_decimals")
    # whole quantities keep the form they always had ("3.0" is 3); fractions keep their digits
    return (qty.quantize(Decimal(1)) if qty == qty.to_integral_value() else qty.normalize()), None


def _check_fractional(req: OrderRequest) -> None:
    """Alpaca's rules for fractional and notional orders."""
    if not req.fractional:
        return
    what = "notional" if req.notional is not None else "fractional"
    if req.notional is not None and req.type != "market":
        raise OrderError("notional orders must be market orders", code="notional_requires_market")
    if req.type not in FRACTIONAL_TYPES:
        raise OrderError(f"{what} orders must be market or limit orders (not {req.type})",
                         code="fractional_order_type")
    if req.time_in_force != "day":
        raise OrderError(f"{what} orders must have time_in_force day", code="fractional_requires_day")
    if req.extended_hours:
        raise OrderError(f"{what} orders cannot trade in extended hours",
                         code="fractional_extended_hours")
def _trail(d: Mapping[str, object], otype: str, tif: str) -> tuple[Decimal | None, Decimal | None]:
    """A trailing stop's trail: exactly one of ``trail_price`` (a valid price increment) and
    ``trail_percent`` (0 < p < 100, two decimals at most); neither on any other type."""
    price, pct = d.get("trail_price"), d.get("trail_percent")
    if otype != "trailing_stop":
        if price is not None or pct is not None:
            raise OrderError(f"trail_price / trail_percent are only for trailing_stop orders, not {otype}",
                             code="unexpected_trail")
        return None, None
    if tif not in TRAILING_TIFS:
        raise OrderError(f"trailing_stop orders take time_in_force {' or '.join(TRAILING_TIFS)}",
                         code="invalid_time_in_force")
    if (price is None) == (pct is None):
        raise OrderError("a trailing_stop order needs exactly one of trail_price and trail_percent",
                         code="missing_trail" if price is None else "ambiguous_trail")
    if price is not None:
        return _price(price, "trail_price"), None
    p = bounded_decimal(pct, TRAIL_PERCENT_BOUNDS, field="trail_percent")
    if p >= 100:
        raise OrderError("trail_percent must be below 100", code="trail_percent_out_of_range")
    return None, p




def _refuse_unimplemented(d: Mapping[str, object]) -> None:
    unknown = sorted(k for k in d if k not in KNOWN_FIELDS and k not in UNSUPPORTED_FIELDS)
    if unknown:
        raise OrderError(f"unknown field(s): {', '.join(map(str, unknown))}", code="unknown_field")
    order_class = d.get("order_class")
    if order_class is not None and order_class not in SIMPLE_ORDER_CLASSES:
        if order_class in GROUP_ORDER_CLASSES:  # a caller's bug: groups are parsed elsewhere
            raise OrderError(f"a {order_class} order is a group: domain.order_groups parses it",
                             code="invalid_order_class")
        raise OrderError(f"order_class {str(order_class)[:20]!r} is not one of simple, "
                         f"{', '.join(GROUP_ORDER_CLASSES)}", code="invalid_order_class")
    for name in LEG_FIELDS:
        if d.get(name) is not None:
            raise OrderError(f"{name} is only for bracket, oco and oto orders (order_class)",
                             code=f"{name}_not_allowed")
    for name in UNSUPPORTED_FIELDS:
        if d.get(name) is not None:
            what = "notional (dollar-amount) orders" if name == "notional" else name
            raise OrderError(f"{what} not supported yet; nothing was placed", code=f"{name}_not_supported")


# --- holds and fills ---------------------------------------------------------------------

def _cents_up(d: Decimal) -> Decimal:
    return d.quantize(Decimal("0.01"), rounding=ROUND_CEILING)


def buy_hold(req: OrderRequest, ask: Decimal | None, collar: Decimal) -> Decimal:
    """Cash to hold for a buy: qty x limit for limit types, qty x ask x (1 + collar) otherwise
    (a stop's: at least the stop; a trailing stop's: the ask plus its trail), rounded up to the
    cent; a notional buy holds its notional, exactly. Raises when a market-type buy has no price
    to estimate from."""
    if req.notional is not None:
        return req.notional
    if req.type == "limit" or req.type == "stop_limit":
        assert req.limit_price is not None
        value = req.qty * req.limit_price
        # a fraction of a share times a price has sub-cent digits: held to the cent above
        return _cents_up(value) if req.fractional else check_scale(value, USD)
    ref = ask
    if req.type == "stop" and req.stop_price is not None:
        ref = max(ask or Decimal(0), req.stop_price)
    if req.type == "trailing_stop" and ask is not None and ask > 0:
        # the stop it would have now (the most it fires at while the ask does not fall)
        if req.trail_price is not None:
            ref = ask + req.trail_price
        elif req.trail_percent is not None:
            ref = ask * (1 + req.trail_percent / 100)
    if ref is None or ref <= 0:
        raise OrderError(f"no current quote for {req.symbol}: market orders need one; "
                         "send a limit order instead", code="no_quote")
    return _cents_up(req.qty * ref * (1 + collar))


@dataclass(frozen=True)
class FillMath:
    value: Decimal  # cash value of this fill
    filled_value: Decimal  # cash value of every fill so far, this one included
    topup: Decimal  # extra cash to hold because the fill cost more than what is still held
    filled_qty: Decimal
    avg_price: Decimal
    hold_remaining: Decimal  # cash (buy) or shares (sell) still held after this fill


def apply_fill(
    side: str, *, qty: Decimal, filled_qty: Decimal, filled_value: Decimal,
    hold_remaining: Decimal, last_qty: Decimal, last_px: Decimal, value: Decimal | None = None,
) -> FillMath:
    """Arithmetic of one (partial) fill. Refuses an overfill: a venue can never fill more than
    the order's quantity. ``value``: the fill's cash value when it is not qty x price exactly (a
    fraction filled by the firm, ``domain.fractional``)."""
    if last_qty <= 0 or last_px <= 0:
        raise OrderError("a fill needs a positive quantity and price", code="invalid_fill")
    new_filled = filled_qty + last_qty
    if new_filled > qty:
        raise OrderError(f"overfill: {new_filled} > order qty {qty}", code="overfill")
    if value is None:
        value = check_scale(last_qty * last_px, USD, field="fill value")
    total = filled_value + value
    avg = (total / new_filled).quantize(Decimal("0.000001"))
    # a fill beyond what is still held (a buy above its hold, any fill after the hold was
    # released) is topped up first: cash for a buy, shares for a sell
    if side == "buy":
        topup = max(Decimal(0), value - hold_remaining)
        remaining = hold_remaining + topup - value
    else:
        topup = max(Decimal(0), last_qty - hold_remaining)
        remaining = hold_remaining + topup - last_qty
    return FillMath(value, total, topup, new_filled, avg, remaining)
