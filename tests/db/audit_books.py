"""Books written through the real stores, for the invariants audit's tests (tests/db/test_audit.py).

A scratch set of databases (directory + shards, dropped afterwards) so that the damage the audit
tests do, and the raw ledger seeds other test modules post on the session's shards, never meet.
Every write goes through the stores the services use: accounts (``db.accounts``), transfers
(``db.funding.FundingStore``), orders and the venue's answers (``db.orders.OrderStore``),
settlement (``db.settlement.settle_shard``). The one shortcut: fills that must settle on a past
date get their trade and settle dates moved back (as tests/workflows/test_settlement.py does),
because the order store dates a fill by the clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.accounts import OpenedAccount, open_account
from db.engines import make_engine
from db.funding import FundingStore
from db.migrate import drop_database_as, migrate_all
from db.orders import OrderStore, Quotes, RiskContext
from db.router import ShardRouter
from domain import calendar
from domain.execution import VenueEvent, VenueEventKind, VenueStatus
from domain.funding import TransferInput
from domain.orders import AcceptOrderInput, OrderSnapshot, OrderState, parse_order_request
from domain.risk import RiskLimits
from sherwood.settings import Settings
from sherwood.wiring import build_router
from tests.owner import owner_url

# the tests run at any hour: market orders are accepted whatever the clock says
ANY_HOUR = RiskContext(limits=RiskLimits(enforce_market_hours=False))


@contextmanager
def scratch_databases(base: Settings, suffix: str, shards: int) -> Iterator[Settings]:
    """A directory and ``shards`` shard databases of their own, migrated; dropped afterwards."""
    s = base.model_copy(update={"db_prefix": f"{base.db_prefix}{suffix}", "shards": shards,
                                "shard_urls": None, "directory_url": None})
    urls = [s.shard_url(n) for n in range(shards)]
    owner = s.db_owner()
    migrate_all(s.directory_db_url(), urls, progress=lambda m: None, owner=owner)
    try:
        yield s
    finally:
        for url in [s.directory_db_url(), *urls]:
            drop_database_as(url, owner)


def past_sessions() -> tuple[date, date]:
    """(trade date, settle date): the two last NYSE sessions before today, T+1 apart."""

    def before(d: date) -> date:
        d -= timedelta(days=1)
        while not calendar.is_session(d):
            d -= timedelta(days=1)
        return d

    settle = before(date.today())
    trade = before(settle)
    assert calendar.settle_date(trade) == settle
    return trade, settle


@dataclass
class Books:
    """The scratch shards, and the stores that write to them."""

    settings: Settings
    router: ShardRouter
    _admin: dict[int, AsyncEngine] = field(default_factory=dict)

    def engine(self, acct: OpenedAccount) -> AsyncEngine:
        """The account's shard as the services see it (the service role)."""
        return self.router.engine(acct.shard)

    def admin(self, acct: OpenedAccount) -> AsyncEngine:
        """The account's shard as its owner: for writes behind the books' back (tampering, moving
        trade dates), which the service role may not do."""
        if acct.shard not in self._admin:
            url = owner_url(self.settings, self.settings.shard_url(acct.shard))
            self._admin[acct.shard] = make_engine(url, pool_size=1, max_overflow=1)
        return self._admin[acct.shard]

    def orders(self, acct: OpenedAccount) -> OrderStore:
        return OrderStore(self.engine(acct), house_stripes=self.router.house_stripes)

    def funding(self, acct: OpenedAccount) -> FundingStore:
        return FundingStore(self.engine(acct))

    async def account(self, *, shard: int | None = None, kind: str = "cash",
                      deposit: str | None = None) -> OpenedAccount:
        """A new account (on ``shard`` when given), with a settled ACH deposit when asked."""
        for _ in range(50):
            acct = await open_account(self.router, account_type=kind)
            if shard is None or acct.shard == shard:
                break
        else:
            raise AssertionError(f"no account opened on shard {shard}")
        if deposit is not None:
            tid = await self.deposit(acct, deposit)
            await self.funding(acct).settle_deposit(tid)
        return acct

    async def deposit(self, acct: OpenedAccount, amount: str) -> str:
        """An ACH deposit credited provisionally (PENDING until settled or returned)."""
        tid = str(uuid.uuid4())
        snap = await self.funding(acct).start_deposit(
            TransferInput(tid, str(acct.account_id), "INCOMING", amount))
        assert snap.status == "PENDING", snap
        return tid

    async def withdraw(self, acct: OpenedAccount, amount: str, *, complete: bool) -> str:
        tid = str(uuid.uuid4())
        snap = await self.funding(acct).start_withdrawal(
            TransferInput(tid, str(acct.account_id), "OUTGOING", amount))
        assert snap.status == "PENDING", snap
        if complete:
            await self.funding(acct).complete_withdrawal(tid)
        return tid

    async def order(self, acct: OpenedAccount, side: str, symbol: str, qty: str, *,
                    limit: str | None = None, ask: str | None = None) -> OrderSnapshot:
        """Accept an order (a limit order, or a market order held at ``ask`` plus the collar;
        the quote is the limit price unless given) and route it; the venue acknowledges it."""
        oid = str(uuid.uuid4())
        ask = ask or limit or "100"
        req = {"symbol": symbol, "side": side, "qty": qty, "time_in_force": "gtc" if limit else "day",
               "type": "limit" if limit else "market", **({"limit_price": limit} if limit else {})}
        inp = AcceptOrderInput(oid, str(acct.account_id), req, parse_order_request(req).hash(),
                               "customer", "0.05")
        store = self.orders(acct)
        _, halt = await store.account_context(str(acct.account_id))  # as the accept activity does
        snap = await store.accept(inp, Quotes(ask=Decimal(ask), bid=Decimal(ask)),
                                  replace(ANY_HOUR, shard_halt=halt))
        if snap.state != OrderState.FUNDS_HELD:
            return snap
        await store.transition(oid, OrderState.ROUTED, reason="test", venue="MM1")
        return await self.venue(acct, oid, VenueEventKind.ACK, VenueStatus.NEW)

    async def venue(self, acct: OpenedAccount, oid: str, kind: VenueEventKind, status: VenueStatus,
                    *, qty: str = "0", px: str | None = None, cum: str = "0") -> OrderSnapshot:
        """One answer of the venue MM1, booked by the order store."""
        e = VenueEvent("MM1", f"{oid[:8]}-{uuid.uuid4().hex[:8]}", oid, kind, status, cl_ord_id=oid,
                       last_qty=qty, last_px=px, cum_qty=cum)
        return await self.orders(acct).apply_report(e)

    async def fill(self, acct: OpenedAccount, oid: str, qty: str, px: str, *, cum: str,
                   full: bool) -> OrderSnapshot:
        status = VenueStatus.FILLED if full else VenueStatus.PARTIALLY_FILLED
        return await self.venue(acct, oid, VenueEventKind.FILL, status, qty=qty, px=px, cum=cum)

    async def filled(self, acct: OpenedAccount, side: str, symbol: str, qty: int, px: str, *,
                     limit: str | None = None) -> OrderSnapshot:
        """An order filled in two fills at ``px``."""
        snap = await self.order(acct, side, symbol, str(qty), limit=limit or px, ask=px)
        assert snap.state == OrderState.ACKED, snap
        first = qty // 2 or qty
        snap = await self.fill(acct, snap.order_id, str(first), px, cum=str(first), full=first == qty)
        if first < qty:
            snap = await self.fill(acct, snap.order_id, str(qty - first), px, cum=str(qty), full=True)
        assert snap.state == OrderState.FILLED, snap
        return snap

    async def dated(self, acct: OpenedAccount, order_id: str, trade: date) -> None:
        """Move the order's fills to ``trade`` (and its settle date): the store dates by the clock
        (the owner's write: booking columns only are the service's)."""
        async with self.admin(acct).begin() as conn:
            await conn.execute(text("UPDATE executions SET trade_date = :t, settle_date = :s "
                                    "WHERE order_id = :o"),
                               {"t": trade, "s": calendar.settle_date(trade), "o": uuid.UUID(order_id)})

    async def balances(self, acct: OpenedAccount) -> dict[str, Decimal]:
        bal = await self.router.ledger(acct.shard).balances(acct.account_id)
        return {k: v for k, v in bal.items() if v}


@asynccontextmanager
async def books_on(settings: Settings, redis: Redis) -> AsyncIterator[Books]:
    router = build_router(settings, redis)
    books = Books(settings, router)
    try:
        yield books
    finally:
        await router.dispose()
        for engine in books._admin.values():
            await engine.dispose()


@asynccontextmanager
async def tampering(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes behind the books' back: with triggers disabled for it
    (``session_replication_role = replica``, the superuser owner only: pass
    :meth:`Books.admin`; the service role may not), the append-only
    tables accept UPDATE and DELETE and the commit-time balance check does not run. The tests
    use it to create the damage the database itself refuses, and to remove it again."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


async def audit_rows_about(router: ShardRouter, acct: OpenedAccount, *ids: str) -> list[tuple[str, dict]]:
    """What the invariants audit reports about this account (or these order/transfer ids): the
    session's shared shards carry other tests' raw seeds, which it rightly reports, and which
    are not the calling test's."""
    from db.audit import audit_shard

    report = await audit_shard(router.engine(acct.shard), acct.shard, keep=100000)
    mine = {str(acct.account_id), *map(str, ids)}
    return [(v.invariant, r) for v in report.violations for r in v.rows
            if mine & {str(x) for x in r.values()}]
