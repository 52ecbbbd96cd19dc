"""Broker-held triggers: a stop that Sherwood watches itself, from quotes, before any venue has
the order. Pure.

A :class:`TriggerSpec` says what is watched (symbol, side), how the stop is set (``kind``:
``trail_price`` -- a dollar trail, ``trail_percent`` -- a percent trail, or ``stop`` -- a fixed
stop price, the degenerate case order classes use for broker-held stop-loss legs) and the
best price seen so far (``hwm``: the high-water mark of the bid for a sell, the low-water mark
of the ask for a buy). :func:`on_quote` folds one quote into it and says whether the trigger
fired.

Rules:

- a sell follows the bid up (``hwm = max(hwm, bid)``); its stop is ``hwm - trail`` or
  ``hwm x (1 - pct/100)``; it fires when ``bid <= stop``.
- a buy mirrors it with the ask (``hwm = min(hwm, ask)``; stop ``hwm + trail`` or
  ``hwm x (1 + pct/100)``; fires when ``ask >= stop``).
- the stop is rounded to a valid price increment (cents from $1, 4 decimals below) AWAY from
  the market: a sell's down, a buy's up. The trail is never tighter than the customer asked,
  so rounding never fires an order on a move smaller than its trail.
- a missing, non-positive or crossed quote changes nothing and fires nothing (staleness is the
  caller's: it passes only fresh quotes).

Deliberately not here: where quotes come from, persistence, what happens after the trigger
(the order workflow routes a market order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

KINDS = ("trail_price", "trail_percent", "stop")
ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class TriggerSpec:
    symbol: str
    side: str  # buy | sell
    kind: str  # trail_price | trail_percent | stop
    value: Decimal  # the trail in dollars, the trail in percent, or the fixed stop price
    hwm: Decimal | None = None  # best price seen (bid high for a sell, ask low for a buy)

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell") or self.kind not in KINDS or self.value <= 0:
            raise ValueError(f"invalid trigger spec: {self.side} {self.kind} {self.value}")

    @property
    def stop(self) -> Decimal | None:
        """The current stop price (None until a trail has seen its first quote)."""
        return stop_price(self)

    def to_wire(self) -> dict[str, str | None]:
        return {"symbol": self.symbol, "side": self.side, "kind": self.kind,
                "value": str(self.value), "hwm": None if self.hwm is None else str(self.hwm)}

    @classmethod
    def from_wire(cls, d: dict[str, str | None]) -> TriggerSpec:
        hwm = d.get("hwm")
        return cls(str(d["symbol"]), str(d["side"]), str(d["kind"]), Decimal(str(d["value"])),
                   None if hwm is None else Decimal(hwm))


def round_stop(raw: Decimal, side: str) -> Decimal:
    """``raw`` on a valid increment, away from the market (a sell's down, a buy's up); never
    below zero (a sell trail wider than the price: a stop of 0 never fires)."""
    if raw <= 0:
        return ZERO
    places = Decimal("0.01") if raw >= 1 else Decimal("0.0001")
    return raw.quantize(places, rounding=ROUND_FLOOR if side == "sell" else ROUND_CEILING)


def stop_price(spec: TriggerSpec) -> Decimal | None:
    if spec.kind == "stop":
        return spec.value
    if spec.hwm is None:
        return None
    sign = -1 if spec.side == "sell" else 1
    if spec.kind == "trail_price":
        raw = spec.hwm + sign * spec.value
    else:
        raw = spec.hwm * (1 + sign * spec.value / HUNDRED)
    return round_stop(raw, spec.side)


def on_quote(spec: TriggerSpec, bid: Decimal | None, ask: Decimal | None) -> tuple[TriggerSpec, bool]:
    """Fold one quote into ``spec``: the new spec (hwm moved in the customer's favour only) and
    whether the trigger fires at this quote."""
    if bid is None or ask is None or bid <= 0 or ask <= 0 or bid > ask:
        return spec, False
    price = bid if spec.side == "sell" else ask
    if spec.hwm is None:
        hwm = price
    else:
        hwm = max(spec.hwm, price) if spec.side == "sell" else min(spec.hwm, price)
    new = spec if hwm == spec.hwm else dataclasses.replace(spec, hwm=hwm)
    stop = stop_price(new)
    assert stop is not None
    fired = price <= stop if spec.side == "sell" else price >= stop
    return new, fired
