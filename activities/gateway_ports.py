"""The gateway activities' ports (activities/gateway.py): where ``send_new_order`` gets the
venue's first answers (:class:`ReportSource`, :class:`ReportWatch`; the gateway's delivery loop in
workers/gateway.py implements it) and the market it routes on (:class:`QuoteSource`,
:class:`MarketSource`). Protocols and one small waiting helper only; no I/O of their own."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from activities.gateway_market import MarketAtRouting
from domain.execution import VenueEvent
from marketdata.quotes import Quote

# ============================================================================ early reports


class ReportWatch:
    """The reports of one order booked while its ``send_new_order`` waits (see
    :class:`ReportSource`). Filled by the gateway's inbound handler, in arrival order."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self.reports: list[VenueEvent] = []
        self._changed = asyncio.Event()

    def add(self, report: VenueEvent) -> None:
        self.reports.append(report)
        self._changed.set()

    async def wait(self, first_s: float, linger_s: float) -> None:
        """Until the venue says the order is done, or ``linger_s`` passed since the last
        answer, or ``first_s`` passed in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + first_s
        while not any(r.final for r in self.reports):
            left = deadline - loop.time()
            timeout = min(left, linger_s) if self.reports else left
            if timeout <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return


class ReportSource(Protocol):
    """Where ``send_new_order`` gets the venue's first answers (the gateway's delivery).

    ``watch`` registers the order before the message is sent (so no answer is missed); while it
    is registered the report is not signalled. ``handed_over`` is called with the reports the
    activity returns (mark them delivered) and the send to mark ``sent`` with them (ClOrdID,
    MsgSeqNum: one statement for both); leaving the context unregisters the order, and
    whatever was not handed over is signalled as usual."""

    def watch(self, order_id: str) -> contextlib.AbstractAsyncContextManager[ReportWatch]: ...

    async def handed_over(self, reports: list[VenueEvent],
                          sent: tuple[str, int] | None = None) -> None: ...

    async def recorded(self, order_id: str) -> list[VenueEvent]: ...


class QuoteSource(Protocol):
    """The latest quote of a symbol, or None (``marketdata.quotes.LatestQuotes``)."""

    async def get(self, symbol: str) -> Quote | None: ...


class MarketSource(QuoteSource, Protocol):
    """The halt and the latest quote of a symbol in one read
    (:class:`activities.gateway_market.RoutingMarket`)."""

    async def at_routing(self, symbol: str) -> MarketAtRouting: ...
