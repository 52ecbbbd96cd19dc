"""A simulated clearinghouse: the street side of settlement, an implementation of the
:class:`domain.ports.Clearinghouse` port (checked by mypy below), plugged into the back-office
worker by :func:`sherwood.wiring.outside_world`.

It builds its own settlement report for a business date from the fills the venues reported --
never from Sherwood's shards. Its source of fills is pluggable:

- :class:`GatewayFills` (what :func:`sherwood.wiring.outside_world` plugs in): the execution
  gateway's ``gateway_reports`` table, i.e. every ExecutionReport the venues sent over FIX
  (``exec_type`` F), keyed by (venue, ExecID), with the trade date from the report's TransactTime
  (else when it was received) in New York;
- any callable ``async (date) -> list[StreetFill]`` (tests pass the fills they booked).

Breaks are injectable (:meth:`Clearinghouse.inject`): drop a trade, change its quantity or its
price, or add a trade Sherwood never booked. The report for date D holds the fills whose settle
date (T+1 NYSE) is D.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import calendar, ports
from domain.settlement import StreetFill
from fix.messages import parse_utc_timestamp

FillSource = Callable[[date], Awaitable[list[StreetFill]]]


@dataclass(frozen=True)
class InjectedBreak:
    venue: str
    exec_id: str
    kind: str  # drop | qty | price | add
    qty: Decimal | None = None
    price: Decimal | None = None


class GatewayFills:
    """Street fills from the execution gateway's store (what the venues said over FIX)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self, settle: date) -> list[StreetFill]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT venue, exec_id, payload, received_at FROM gateway_reports "
                "WHERE msg_type = '8' AND payload->>'exec_type' = 'F' "
                "AND received_at >= CAST(:d AS date) - 10"), {"d": settle})).all()
        out = []
        for r in rows:
            p = r.payload
            when = parse_utc_timestamp(p.get("transact_time")) or r.received_at
            if calendar.settle_date(calendar.trade_date(when)) != settle:
                continue
            out.append(StreetFill(r.venue, r.exec_id, Decimal(p["last_qty"]), Decimal(p["last_px"])))
        return out


class Clearinghouse:
    def __init__(self, source: FillSource | None = None) -> None:
        self.source = source
        self.breaks: list[InjectedBreak] = []

    def inject(self, brk: InjectedBreak) -> None:
        self.breaks.append(brk)

    def clear_breaks(self) -> None:
        self.breaks.clear()

    async def report(self, settle: date) -> list[StreetFill] | None:
        """The clearinghouse's fills settling on ``settle`` (None: no source configured)."""
        if self.source is None:
            return None
        fills = {(f.venue, f.exec_id): f for f in await self.source(settle)}
        for b in self.breaks:
            key = (b.venue, b.exec_id)
            if b.kind == "drop":
                fills.pop(key, None)
            elif b.kind == "add":
                fills[key] = StreetFill(b.venue, b.exec_id, b.qty or Decimal(1), b.price or Decimal(1))
            elif key in fills and b.kind == "qty" and b.qty is not None:
                fills[key] = dataclasses.replace(fills[key], qty=b.qty)
            elif key in fills and b.kind == "price" and b.price is not None:
                fills[key] = dataclasses.replace(fills[key], price=b.price)
        return list(fills.values())


if TYPE_CHECKING:
    _is_a_clearinghouse: type[ports.Clearinghouse] = Clearinghouse
