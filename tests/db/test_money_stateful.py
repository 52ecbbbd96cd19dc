"""Money across business days, as a hypothesis state machine against the real shard stores.

Two accounts (a cash account and an instant account) on one scratch shard live through random
days of business: ACH deposits credited provisionally then settled or returned, withdrawals
held then sent or failed, limit and market buys and limit sells, fractions of a share bought and
sold (filled by the firm: ``domain.fractional``), full and partial fills at
sub-penny prices (price improvement, market buys above their hold), cancels, reports the books
refuse (the order goes STUCK) and an operator's resolution, fills after the order ended, days
passing and the settlement runs of past days in order. Every write goes through the stores the
services use (``db.funding.FundingStore``, ``db.orders.OrderStore``, ``db.settlement.settle_shard``);
the order store's clock is the simulated day.

After every step: every invariant of ``sherwood audit invariants`` (``db.audit.audit_shard``)
holds on the shard, and each account matches the reference model (tests/db/money_model.py):
its ledger balances (cash, held, proceeds lots by settlement date, settled / held / unsettled
shares), its orders' states, holds and filled quantities, its buying power and close-only
restriction as the accept path computes them, its good-faith violations, and total cash ==
available + held + unsettled. Each rule also checks what the step answered (an order held or
rejected with which code, a withdrawal accepted or refused) against the model.

The days are fixed past NYSE sessions from 2026-10-05 (Columbus Day and Veterans Day are
sessions in it): settlement refuses a date that has not come. Each example starts on empty
shard tables (wiped with triggers off, as tests/db/audit_books.py ``tampering`` does).

A longer hunt: ``MONEY_EXAMPLES=150`` (examples; 20 by default) and ``MONEY_NO_SHRINK=1`` (report
the first failure as found: shrinking a long run can take many minutes); ``-s`` prints what the
run exercised (orders held and rejected by code, fills, late reports, settlements).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.accounts import open_account
from db.audit import audit_shard
from db.engines import make_engine
from db.funding import FundingStore
from db.orders import OrderStore, Quotes, RiskContext
from db.risk import load_account_risk
from db.router import ShardRouter
from db.settlement import settle_shard
from domain import calendar
from domain.account import account_figures
from domain.execution import VenueEvent, VenueEventKind, VenueStatus
from domain.fractional import fraction_value
from domain.funding import TransferInput
from domain.orders import AcceptOrderInput, OrderState, ResolveInput, parse_order_request
from domain.risk import RiskLimits, buying_power
from sherwood.settings import Settings
from sherwood.wiring import build_router
from tests.db.audit_books import scratch_databases
from tests.db.money_model import AccountModel, previous_session
from tests.owner import owner_url

NY = ZoneInfo("America/New_York")
FIRST_DAY = date(2026, 10, 5)  # a Monday, a week before Columbus Day
LAST_DAY = date(2026, 11, 25)  # the day before Thanksgiving: well in the past
SYMBOLS = ("AAPL", "F")
VENUE = "MM1"
# MONEY_NO_SHRINK=1: report the first failure found, unshrunk (shrinking a long run is slow)
PHASES = [Phase.reuse, Phase.generate] if os.environ.get("MONEY_NO_SHRINK") else list(Phase)
LIMITS = RiskLimits(enforce_market_hours=False)
OPEN_STATES = {"ACKED", "PARTIALLY_FILLED"}
T = TypeVar("T")
SEEN: Counter[str] = Counter()  # what the runs exercised (printed with -s)


def event(what: str) -> None:
    SEEN[what] += 1
    _event(what)

cents = st.integers(min_value=1, max_value=200_000).map(lambda c: Decimal(c) / 100)
# an account's first, settled deposit (hypothesis favours small integers: the sizes are chosen)
savings = st.builds(lambda base, c: base + Decimal(c) / 100,
                    st.sampled_from((Decimal(0), Decimal(800), Decimal(5000), Decimal(30000))),
                    st.integers(0, 99))
prices = st.integers(min_value=500, max_value=2000).map(lambda c: Decimal(c) / 100)
who = st.sampled_from(("cash", "instant"))
symbols = st.sampled_from(SYMBOLS)
# after an order is held: 0 it rests at the venue, else the venue fills that percent of it at once
fill_at_once = st.sampled_from((0, 0, 100, 100, 50))
ticks = st.integers(0, 10_000)  # how far a fill price is from the limit (see _fill_price)
# less than a share, to 9 decimals: filled by the firm (domain.fractional)
fractions = st.integers(1, 999_999_999).map(lambda n: Decimal(n).scaleb(-9).normalize())


class World:
    """The scratch shard and what talks to it, on the test's own event loop."""

    def __init__(self, s: Settings) -> None:
        self.router: ShardRouter = build_router(s)
        self.engine: AsyncEngine = self.router.engine(0)
        # the owner's connection: wiping the append-only tables between examples is no service's
        self.admin: AsyncEngine = make_engine(owner_url(s, s.shard_url(0)), pool_size=1, max_overflow=0)
        self.wiped: list[str] = []

    async def open(self) -> None:
        async with self.engine.connect() as conn:
            tables = (await conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
            counts = {t: (await conn.execute(text(f'SELECT count(*) FROM "{t}"'))).scalar_one()
                      for t in tables}
        # everything the migrations left empty is the business of one example
        self.wiped = sorted(t for t, n in counts.items() if n == 0)

    async def wipe(self) -> None:
        async with self.admin.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for t in self.wiped:
                await conn.execute(text(f'DELETE FROM "{t}"'))


class MoneyFlows(RuleBasedStateMachine):
    def __init__(self, runner: asyncio.Runner, world: World) -> None:
        super().__init__()
        self.runner, self.world = runner, world
        self.day = FIRST_DAY
        self.minute = 0
        self.settled_through = previous_session(FIRST_DAY)
        self.models: dict[str, AccountModel] = {}
        self.ids: dict[str, uuid.UUID] = {}
        self.run(world.wipe())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    # --- plumbing ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return (datetime.combine(self.day, time(10, 0), NY) + timedelta(minutes=self.minute)).astimezone(UTC)

    def orders(self) -> OrderStore:
        return OrderStore(self.world.engine, house_stripes=self.world.router.house_stripes,
                          clock=self.now)

    def funding(self) -> FundingStore:
        return FundingStore(self.world.engine)

    def tick(self) -> None:
        self.minute += 1

    def pick(self, data: st.DataObject, options: list[tuple[str, str]]) -> tuple[str, str]:
        return data.draw(st.sampled_from(options))  # in creation order: reproducible

    def orders_in(self, *states: str) -> list[tuple[str, str]]:
        return [(k, o.id) for k, m in self.models.items() for o in m.orders.values() if o.state in states]

    def venue(self, acct: str, oid: str, kind: VenueEventKind, status: VenueStatus, *, qty: str = "0",
              px: str | None = None) -> str:
        cum = self.models[acct].orders[oid].filled
        if kind == VenueEventKind.FILL:
            cum += Decimal(qty)
        e = VenueEvent(VENUE, f"x{uuid.uuid4().hex[:12]}", oid, kind, status, cl_ord_id=oid,
                       last_qty=qty, last_px=px, cum_qty=str(cum))
        return self.run(self.orders().apply_report(e)).state

    # --- setup ------------------------------------------------------------------------------

    @initialize(cash=savings, instant=savings)
    def open_accounts(self, cash: Decimal, instant: Decimal) -> None:
        for kind, amount in (("cash", cash), ("instant", instant)):
            acct = self.run(open_account(self.world.router, account_type=kind))
            self.ids[kind] = acct.account_id
            self.models[kind] = AccountModel(kind)
            if not amount:
                continue
            tid = self._deposit(kind, amount)
            self.run(self.funding().settle_deposit(tid))
            self.models[kind].settle_deposit(tid)

    def _deposit(self, acct: str, amount: Decimal) -> str:
        tid = str(uuid.uuid4())
        expected = calendar.next_bank_day(self.day, 2)
        snap = self.run(self.funding().start_deposit(TransferInput(
            tid, str(self.ids[acct]), "INCOMING", format(amount, "f"), expected.isoformat())))
        assert snap.status == "PENDING", snap
        self.models[acct].deposit(tid, amount, expected)
        return tid

    # --- funding ----------------------------------------------------------------------------

    @rule(acct=who, amount=cents)
    def deposit(self, acct: str, amount: Decimal) -> None:
        event("deposit")
        self._deposit(acct, amount)

    def _pending_deposits(self) -> list[tuple[str, str]]:
        return [(k, t) for k, m in self.models.items() for t in m.deposits]

    @precondition(lambda self: self._pending_deposits())
    @rule(data=st.data(), bounced=st.booleans())
    def deposit_answered(self, data: st.DataObject, bounced: bool) -> None:
        acct, tid = self.pick(data, self._pending_deposits())
        if bounced:
            snap = self.run(self.funding().bounce_deposit(tid, "R01 insufficient funds"))
            self.models[acct].bounce_deposit(tid)
            assert snap.status == "RETURNED", snap
        else:
            snap = self.run(self.funding().settle_deposit(tid))
            self.models[acct].settle_deposit(tid)
            assert snap.status == "COMPLETE", snap

    @rule(acct=who, amount=cents)
    def withdraw(self, acct: str, amount: Decimal) -> None:
        event("withdraw")
        tid = str(uuid.uuid4())
        snap = self.run(self.funding().start_withdrawal(TransferInput(
            tid, str(self.ids[acct]), "OUTGOING", format(amount, "f"))))
        expected = self.models[acct].withdraw(tid, amount)
        assert snap.status == ("PENDING" if expected else "REJECTED"), (snap, self.models[acct])

    def _pending_withdrawals(self) -> list[tuple[str, str]]:
        return [(k, t) for k, m in self.models.items() for t in m.withdrawals]

    @precondition(lambda self: self._pending_withdrawals())
    @rule(data=st.data(), failed=st.booleans())
    def withdrawal_answered(self, data: st.DataObject, failed: bool) -> None:
        acct, tid = self.pick(data, self._pending_withdrawals())
        if failed:
            snap = self.run(self.funding().fail_withdrawal(tid, "R03 no account"))
            self.models[acct].fail_withdrawal(tid)
            assert snap.status == "FAILED", snap
        else:
            snap = self.run(self.funding().complete_withdrawal(tid))
            self.models[acct].complete_withdrawal(tid)
            assert snap.status == "COMPLETE", snap

    # --- orders -----------------------------------------------------------------------------

    def _accept(self, acct: str, req: dict[str, str], ask: Decimal) -> tuple[str, Any]:
        oid = str(uuid.uuid4())
        store = self.orders()
        _, halt = self.run(store.account_context(str(self.ids[acct])))
        inp = AcceptOrderInput(oid, str(self.ids[acct]), req, parse_order_request(req).hash(),
                               "customer", "0.05")
        snap = self.run(store.accept(inp, Quotes(ask=ask, bid=ask), replace(RiskContext(LIMITS),
                                                                           shard_halt=halt)))
        return oid, snap

    def _route(self, acct: str, oid: str) -> None:
        """The gateway sends the held order to the venue, which acknowledges it."""
        self.run(self.orders().transition(oid, OrderState.ROUTED, reason="test", venue=VENUE))
        assert self.venue(acct, oid, VenueEventKind.ACK, VenueStatus.NEW) == "ACKED"

    @rule(acct=who, symbol=symbols, qty=st.integers(1, 40), price=prices, then=fill_at_once, ticks=ticks)
    def buy_limit(self, acct: str, symbol: str, qty: int, price: Decimal, then: int, ticks: int) -> None:
        self.buy(acct, symbol, qty, price, False, then, ticks)

    @rule(acct=who, symbol=symbols, qty=st.integers(1, 40), price=prices, then=fill_at_once, ticks=ticks)
    def buy_market(self, acct: str, symbol: str, qty: int, price: Decimal, then: int, ticks: int) -> None:
        """A market buy held at the quote plus the collar; its fills may cost more than that."""
        self.buy(acct, symbol, qty, price, True, then, ticks)

    def buy(self, acct: str, symbol: str, qty: int, price: Decimal, market: bool, then: int,
            ticks: int) -> None:
        req = {"symbol": symbol, "side": "buy", "qty": str(qty), "time_in_force": "day",
               "type": "market" if market else "limit", **({} if market else {"limit_price": str(price)})}
        oid, snap = self._accept(acct, req, price)
        expected = self.models[acct].place_buy(oid, symbol, Decimal(qty), limit=None if market else price,
                                               ask=price, today=self.day)
        got = None if snap.state == OrderState.FUNDS_HELD else snap.reject_code
        assert got == expected, (snap, self.models[acct])
        event(f"{req['side']} {got or 'held'}")
        if got is None:
            self._route(acct, oid)
            if then:  # the venue fills it at once, all of it or part
                self._fill(acct, oid, then, ticks)

    @rule(acct=who, data=st.data(), price=prices, then=fill_at_once, ticks=ticks)
    def sell(self, acct: str, data: st.DataObject, price: Decimal, then: int, ticks: int) -> None:
        """A symbol the account holds when it holds one; mostly what it has, now and then more."""
        m = self.models[acct]
        held = [s for s in SYMBOLS if m.position(s) > 0]
        symbol = data.draw(st.sampled_from(held or list(SYMBOLS)), label="symbol")
        qty = data.draw(st.integers(1, int(m.position(symbol)) + 2), label="qty")
        self._sell(acct, symbol, qty, price, then, ticks)

    @precondition(lambda self: any(m.position(s) > 0 for m in self.models.values() for s in SYMBOLS))
    @rule(data=st.data(), price=prices, then=fill_at_once, ticks=ticks)
    def sell_position(self, data: st.DataObject, price: Decimal, then: int, ticks: int) -> None:
        """Sell a whole position (settled, held or not settled yet: what is not held is sold)."""
        acct, symbol = data.draw(st.sampled_from([
            (k, s) for k, m in self.models.items() for s in SYMBOLS if m.position(s) > 0]))
        m = self.models[acct]
        qty = int(m.shares[symbol] + m.shares_unsettled[symbol])
        if qty:
            self._sell(acct, symbol, qty, price, then, ticks)

    def _sell(self, acct: str, symbol: str, qty: int, price: Decimal, then: int, ticks: int) -> None:
        req = {"symbol": symbol, "side": "sell", "qty": str(qty), "time_in_force": "gtc",
               "type": "limit", "limit_price": str(price)}
        oid, snap = self._accept(acct, req, price)
        expected = self.models[acct].place_sell(oid, symbol, Decimal(qty), limit=price, today=self.day)
        got = None if snap.state == OrderState.FUNDS_HELD else snap.reject_code
        assert got == expected, (snap, self.models[acct])
        event(f"{req['side']} {got or 'held'}")
        if got is None:
            self._route(acct, oid)
            if then:  # the venue fills it at once, all of it or part
                self._fill(acct, oid, then, ticks)

    def _fill_price(self, acct: str, oid: str, ticks: int) -> Decimal:
        """A price the order accepts: at or better than its limit (sub-penny), or for a market
        buy anywhere from 10% under to 20% over the price its hold was estimated at."""
        o = self.models[acct].orders[oid]
        if o.limit is None:
            ask = o.hold / o.qty / Decimal("1.05") if o.hold else Decimal(10)
            return (ask * (Decimal("0.9") + Decimal(ticks % 3000) / 10000)).quantize(Decimal("0.0001"))
        step = Decimal(ticks % 4000) / 10000
        return o.limit - step if o.side == "buy" else o.limit + step

    @rule(acct=who, symbol=symbols, qty=fractions, price=prices)
    def buy_fraction(self, acct: str, symbol: str, qty: Decimal, price: Decimal) -> None:
        """A market buy of less than a share: the firm fills it at the ask (domain.fractional),
        its value qty x ask to the cent, in one transaction, or rejects it (worth no cent)."""
        req = {"symbol": symbol, "side": "buy", "qty": str(qty), "time_in_force": "day", "type": "market"}
        oid, snap = self._accept(acct, req, price)
        expected = self.models[acct].place_buy(oid, symbol, qty, limit=None, ask=price, today=self.day)
        got = None if snap.state == OrderState.FUNDS_HELD else snap.reject_code
        assert got == expected, (snap, self.models[acct])
        event(f"fractional buy {got or 'held'}")
        if got is None:
            self._house_fill(acct, oid, qty, price)

    @precondition(lambda self: any(m.position(s) > 0 for m in self.models.values() for s in SYMBOLS))
    @rule(data=st.data(), price=prices)
    def sell_fraction(self, data: st.DataObject, price: Decimal) -> None:
        """Sell less than a share of a position (a limit DAY sell at the bid: marketable)."""
        acct, symbol = data.draw(st.sampled_from([
            (k, s) for k, m in self.models.items() for s in SYMBOLS if m.position(s) > 0]))
        m = self.models[acct]
        most = min(999_999_999, int(m.position(symbol).scaleb(9)))
        qty = data.draw(st.integers(1, most).map(lambda n: Decimal(n).scaleb(-9).normalize()), label="qty")
        req = {"symbol": symbol, "side": "sell", "qty": str(qty), "time_in_force": "day",
               "type": "limit", "limit_price": str(price)}
        oid, snap = self._accept(acct, req, price)
        expected = m.place_sell(oid, symbol, qty, limit=price, today=self.day)
        got = None if snap.state == OrderState.FUNDS_HELD else snap.reject_code
        assert got == expected, (snap, m)
        event(f"fractional sell {got or 'held'}")
        if got is None:
            self._house_fill(acct, oid, qty, price)

    def _house_fill(self, acct: str, oid: str, qty: Decimal, price: Decimal) -> None:
        snap = self.run(self.orders().house_fill(oid, bid=price, ask=price, max_inventory=Decimal(10**6)))
        value = fraction_value(qty, price)
        if not value:
            assert snap.reject_code == "fractional_value_too_small", snap
            self.models[acct].end(oid, "REJECTED")  # the hold released
            del self.models[acct].orders[oid]  # rejected orders are not compared (as at accept)
            return
        assert snap.state == OrderState.FILLED, snap
        assert self.models[acct].fill(oid, qty, price, self.day, value=value)

    @precondition(lambda self: self.orders_in("OPEN"))
    @rule(data=st.data(), part=st.integers(1, 100), ticks=ticks)
    def fill(self, data: st.DataObject, part: int, ticks: int) -> None:
        acct, oid = self.pick(data, self.orders_in("OPEN"))
        self._fill(acct, oid, part, ticks)

    def _fill(self, acct: str, oid: str, part: int, ticks: int) -> None:
        """The venue fills ``part`` percent of what is left (at least one share)."""
        o = self.models[acct].orders[oid]
        left = o.qty - o.filled
        qty = max(Decimal(1), (left * part / 100).to_integral_value())
        px = self._fill_price(acct, oid, ticks)
        full = qty == left
        state = self.venue(acct, oid, VenueEventKind.FILL,
                           VenueStatus.FILLED if full else VenueStatus.PARTIALLY_FILLED,
                           qty=str(qty), px=str(px))
        assert self.models[acct].fill(oid, qty, px, self.day)
        event(f"fill {o.side} {'full' if full else 'partial'}{' above the hold' if o.limit is None else ''}")
        assert state == ("FILLED" if full else "PARTIALLY_FILLED"), state

    @precondition(lambda self: self.orders_in("OPEN"))
    @rule(data=st.data(), expired=st.booleans())
    def cancel(self, data: st.DataObject, expired: bool) -> None:
        acct, oid = self.pick(data, self.orders_in("OPEN"))
        kind, status = ((VenueEventKind.EXPIRED, VenueStatus.EXPIRED) if expired
                        else (VenueEventKind.CANCELED, VenueStatus.CANCELED))
        state = self.venue(acct, oid, kind, status)
        self.models[acct].end(oid, "EXPIRED" if expired else "CANCELED")
        event("canceled or expired")
        assert state == ("EXPIRED" if expired else "CANCELED"), state

    @precondition(lambda self: self.orders_in("OPEN"))
    @rule(data=st.data())
    def unbookable_fill(self, data: st.DataObject) -> None:
        """A fill at a price finer than $0.0001: refused, the order STUCK with its hold."""
        acct, oid = self.pick(data, self.orders_in("OPEN"))
        state = self.venue(acct, oid, VenueEventKind.FILL, VenueStatus.PARTIALLY_FILLED, qty="1",
                           px=f"{self._fill_price(acct, oid, 0).quantize(Decimal('0.0001'))}1")
        self.models[acct].refuse(oid)
        event("report refused")
        assert state == "STUCK", state

    @precondition(lambda self: self.orders_in("STUCK"))
    @rule(data=st.data())
    def operator_resolves(self, data: st.DataObject) -> None:
        """The venue says nothing more was filled: the operator ends the order canceled."""
        acct, oid = self.pick(data, self.orders_in("STUCK"))
        o = self.models[acct].orders[oid]
        snap = self.run(self.orders().resolve(ResolveInput(oid, "canceled", str(o.filled),
                                                           note="nothing more filled")))
        self.models[acct].end(oid, "CANCELED")
        event("operator resolution")
        assert snap.state == "CANCELED", snap

    def _late_candidates(self) -> list[tuple[str, str]]:
        return [(k, i) for k, i in self.orders_in("CANCELED", "EXPIRED")
                if self.models[k].orders[i].filled < self.models[k].orders[i].qty]

    @precondition(lambda self: self._late_candidates())
    @rule(data=st.data(), ticks=ticks)
    def late_fill(self, data: st.DataObject, ticks: int) -> None:
        """A fill the venue reports after the order ended: booked, the order reopened STUCK."""
        acct, oid = self.pick(data, self._late_candidates())
        o = self.models[acct].orders[oid]
        qty = data.draw(st.integers(1, int(o.qty - o.filled)))
        px = self._fill_price(acct, oid, ticks)
        state = self.venue(acct, oid, VenueEventKind.FILL, VenueStatus.PARTIALLY_FILLED, qty=str(qty),
                           px=str(px))
        o.state = "CANCELED"  # the model books a late fill on a canceled order the same way
        booked = self.models[acct].fill(oid, Decimal(qty), px, self.day)
        event(f"late {o.side} fill {'booked' if booked else 'refused'}")
        assert state == "STUCK", state

    # --- days -------------------------------------------------------------------------------

    @precondition(lambda self: calendar.next_session(self.day) <= LAST_DAY)
    @rule()
    def next_day(self) -> None:
        event("next day")
        self.day = calendar.next_session(self.day)
        self.minute = 0

    def _next_to_settle(self) -> date | None:
        d = calendar.next_session(self.settled_through)
        return d if d <= self.day else None

    @precondition(lambda self: self._next_to_settle() is not None)
    @rule()
    def settle(self) -> None:
        d = self._next_to_settle()
        assert d is not None
        done = self.run(settle_shard(self.world.engine, 0, d))
        assert done.status == "done", done
        for m in self.models.values():
            m.settle(d)
        self.settled_through = d
        event(f"settled {'fills' if done.executions else 'nothing'}")

    # --- after every step -------------------------------------------------------------------

    @invariant()
    def books_hold(self) -> None:
        self.tick()
        SEEN["steps"] += 1
        if not self.models:
            return
        report = self.run(audit_shard(self.world.engine, 0))
        assert report.ok, report.violations
        for kind, model in self.models.items():
            self.run(self.check_account(kind, model))
            if model.shortfall_open:
                event(f"{kind}: shortfall open")
            if model.violations:
                event(f"{kind}: good-faith violation")
            if model.restricted_until:
                event(f"{kind}: restricted to settled cash")

    async def check_account(self, kind: str, model: AccountModel) -> None:
        acct = self.ids[kind]
        bal = await self.world.router.ledger(0).balances(acct)
        assert {k: v for k, v in bal.items() if v} == model.balances(), (kind, model)
        async with self.world.engine.connect() as conn:
            risk = await load_account_risk(conn, acct, today=self.day)
            rows = (await conn.execute(text(
                "SELECT id, state, hold_amount, filled_qty FROM orders WHERE account_id = :a"),
                {"a": acct})).all()
            gfv = (await conn.execute(text(
                "SELECT buy_order_id, sale_trade_date FROM gfv_violations WHERE account_id = :a"),
                {"a": acct})).all()
        assert risk is not None
        # the customer's figures, as GET /v2/account computes them
        bp = buying_power(risk.account_type, risk.balances, risk.provisional, LIMITS,
                          settled_only=risk.settled_cash_only)
        assert bp.total == model.buying_power(self.day), (kind, bp, model)
        assert risk.provisional == model.provisional
        assert risk.close_only == model.close_only(), (kind, risk.shortfall, model)
        fig = account_figures(risk.balances)
        assert fig.cash == fig.cash_available + fig.cash_held + fig.cash_unsettled
        assert fig.cash == model.cash + model.cash_held + model.unsettled
        assert fig.cash_unsettled == model.unsettled
        # no negative settled cash where the rules forbid it (a shortfall is the one excuse)
        if not model.shortfall_open:
            floor = -min(model.provisional, Decimal(1000)) if kind == "instant" else Decimal(0)
            assert risk.settled_cash >= floor, (kind, risk.settled_cash, model)
        # orders: state, what they hold, what they filled
        got = {str(r.id): (r.state, Decimal(r.hold_amount), Decimal(r.filled_qty)) for r in rows
               if r.state != "REJECTED"}
        want = {}
        for o in model.orders.values():
            state = ("ACKED" if not o.filled else "PARTIALLY_FILLED") if o.state == "OPEN" else o.state
            want[o.id] = (state, o.hold, o.filled)
        assert got == want, (kind, model)
        assert {(str(r.buy_order_id), r.sale_trade_date) for r in gfv} == model.violations, (kind, model)


@pytest.fixture(scope="module")
def money_settings(migrated: Settings) -> Any:
    with scratch_databases(migrated, "money", 1) as s:
        yield s


@pytest.mark.slow
def test_money_across_days(money_settings: Settings) -> None:
    with asyncio.Runner() as runner:
        world = World(money_settings)
        runner.run(world.open())
        try:
            run_state_machine_as_test(
                lambda: MoneyFlows(runner, world),
                settings=settings(max_examples=int(os.environ.get("MONEY_EXAMPLES", "20")),
                                  stateful_step_count=30, deadline=None,
                                  suppress_health_check=list(HealthCheck),
                                  report_multiple_bugs=False, phases=PHASES))
        finally:
            runner.run(world.router.dispose())
            runner.run(world.admin.dispose())
            print(sorted(SEEN.items()))
