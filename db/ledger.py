"""Posting to and reading from one shard's ledger.

:func:`post` is the single entry point that writes ledger entries. It runs inside the caller's
transaction (so an order activity can commit the order row, its audit event, the ledger
transaction and an outbox row together) and calls the database function ``ledger_post``, which
holds every guarantee: idempotency by transaction id, limits checked under row locks taken in a
fixed order, striped house balances, and the deferred sum-to-zero check at commit.

:class:`Ledger` wraps an engine with the named operations later slices need, each in its own
retried transaction. It deliberately holds no cached state about balances.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import sql
from db.engines import DB_ERRORS, RETRYABLE_SQLSTATES, sqlstate
from db.errors import (
    AppendOnlyViolation,
    DbError,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerRejected,
    UnbalancedAtCommit,
    UnknownAccount,
    UnknownCurrency,
)
from domain import ledger as rules
from domain.ledger import AccountRef, Entry, LedgerTxn
from domain.money import plain
from sherwood import metrics

_SQLSTATE_ERRORS: dict[str, type[DbError]] = {
    "SW400": UnbalancedAtCommit,
    "SW403": AppendOnlyViolation,
    "SW404": UnknownAccount,
    "SW409": IdempotencyConflict,
    "SW422": UnknownCurrency,
}


def translate(exc: Exception) -> DbError | None:
    """Map the ledger's own SQLSTATEs to typed errors (None for anything else)."""
    state = sqlstate(exc)
    cls = _SQLSTATE_ERRORS.get(state or "")
    if cls is None:
        return None
    msg = str(getattr(exc, "orig", exc)).splitlines()[0]
    return cls(msg)


@dataclass(frozen=True)
class PostResult:
    txn_id: str
    status: str  # posted | rejected
    replayed: bool = False
    error_code: str | None = None
    error_detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "posted"

    def raise_for_status(self) -> PostResult:
        if self.status == "rejected":
            if self.error_code == InsufficientFunds.code:
                raise InsufficientFunds(f"{self.txn_id}: {self.error_detail}")
            raise LedgerRejected(f"{self.txn_id}: {self.error_detail}", code=self.error_code)
        return self


_POST = (
    "SELECT status, error_code, error_detail, replayed FROM "
    "ledger_post(:id, :kind, :account, :hash, CAST(:entries AS jsonb), :allow_negative, "
    "CAST(:memo AS jsonb), :stripes)"
)


def _owned_by(owner: uuid.UUID | None) -> str:
    # not IS NOT DISTINCT FROM, which no index serves: every lookup would read every account
    return "la.owner_id IS NULL" if owner is None else "la.owner_id = :owner"


def balance_sql(owner: uuid.UUID | None) -> str:
    """The statement for the cached balance of ``owner``'s (None: the house's) account ``:name``."""
    return ("SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la "
            "JOIN balances b ON b.ledger_account_id = la.id "
            f"WHERE {_owned_by(owner)} AND la.name = :name")


def balance_at_sql(owner: uuid.UUID | None) -> str:
    """The statement for the balance of ``owner``'s account ``:name`` at ``:at``, from entries."""
    return ("SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e "
            "JOIN ledger_accounts la ON la.id = e.ledger_account_id "
            f"WHERE {_owned_by(owner)} AND la.name = :name AND e.created_at <= :at")


async def post(conn: sql.Conn, txn: LedgerTxn, *, house_stripes: int = 32) -> PostResult:
    """Post ``txn`` inside the caller's open transaction.

    Returns the outcome (a balance-limit rejection is an outcome, recorded so a replay returns it
    too); raises :class:`IdempotencyConflict`, :class:`UnknownAccount` or
    :class:`UnknownCurrency`, after which the caller's transaction is aborted.
    """
    entries = [
        {"o": str(e.account.owner) if e.account.owner else "", "n": e.account.name,
         "c": e.currency, "a": str(e.amount)}
        for e in txn.entries
    ]
    started = time.perf_counter()
    try:
        row = await sql.one(conn, _POST, {
            "id": txn.id, "kind": txn.kind, "account": txn.account_id, "hash": txn.payload_hash(),
            "entries": json.dumps(entries), "allow_negative": txn.allow_negative,
            "memo": json.dumps(dict(txn.memo)), "stripes": house_stripes})
    except DB_ERRORS as exc:
        mapped = translate(exc)
        if mapped is not None:
            raise mapped from exc
        raise
    metrics.LEDGER_POST.observe(time.perf_counter() - started)
    return PostResult(txn.id, row["status"], row["replayed"], row["error_code"], row["error_detail"])


@dataclass(frozen=True)
class Mismatch:
    ledger_account_id: int
    owner: uuid.UUID | None
    name: str
    from_entries: Decimal
    cached: Decimal


@dataclass(frozen=True)
class Unbalanced:
    txn_id: str
    currency: str
    total: Decimal


@dataclass(frozen=True)
class ReconcileReport:
    accounts_checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    unbalanced: list[Unbalanced] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unbalanced


class Ledger:
    """One shard's ledger: named operations, balances, reconciliation.

    Every write goes through :func:`post` in a transaction retried on deadlock/serialization
    failure. Transaction ids come from the caller and must be derived from the business event
    (order id + step, order id + ExecID, transfer id + step) so a retry is a replay.
    """

    def __init__(self, engine: AsyncEngine, *, house_stripes: int = 32, retries: int = 8) -> None:
        self.engine = engine
        self.house_stripes = house_stripes
        self.retries = retries

    async def post(self, txn: LedgerTxn) -> PostResult:
        """Post in its own transaction; raise :class:`InsufficientFunds` on a limit violation."""

        # ledger_post is atomic on its own, so a standalone posting is one autocommit statement:
        # one round trip instead of BEGIN / SELECT / COMMIT (the deferred sum check then runs at
        # the end of that statement's implicit transaction).
        attempt = 0
        while True:
            try:
                async with self.engine.connect() as raw:
                    conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
                    result = await post(conn, txn, house_stripes=self.house_stripes)
                return result.raise_for_status()
            except DB_ERRORS as exc:
                mapped = translate(exc)
                if mapped is not None:
                    raise mapped from exc
                if sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt >= self.retries:
                    raise
                attempt += 1
                await asyncio.sleep(min(0.2, 0.002 * 2**attempt) * random.random())

    # --- named operations (templates from domain.ledger) ----------------------------------

    async def deposit(self, txn_id: str, account_id: uuid.UUID, amount: object) -> PostResult:
        return await self.post(rules.deposit_provisional(txn_id, account_id, amount))

    async def settle_deposit(self, txn_id: str, account_id: uuid.UUID, amount: object) -> PostResult:
        return await self.post(rules.deposit_settled(txn_id, account_id, amount))

    async def bounce_deposit(self, txn_id: str, account_id: uuid.UUID, amount: object) -> PostResult:
        return await self.post(rules.deposit_bounced(txn_id, account_id, amount))

    async def hold_cash(self, txn_id: str, account_id: uuid.UUID, amount: object) -> PostResult:
        return await self.post(rules.hold_cash(txn_id, account_id, amount))

    async def release_cash(self, txn_id: str, account_id: uuid.UUID, amount: object) -> PostResult:
        return await self.post(rules.release_cash(txn_id, account_id, amount))

    async def hold_shares(
        self, txn_id: str, account_id: uuid.UUID, symbol: str, qty: object
    ) -> PostResult:
        return await self.post(rules.hold_shares(txn_id, account_id, symbol, qty))

    async def release_shares(
        self, txn_id: str, account_id: uuid.UUID, symbol: str, qty: object
    ) -> PostResult:
        return await self.post(rules.release_shares(txn_id, account_id, symbol, qty))

    async def book_fill(
        self, txn_id: str, account_id: uuid.UUID, side: str, symbol: str, qty: object, price: object
    ) -> PostResult:
        build = rules.buy_fill if side == "buy" else rules.sell_fill
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {side!r}")
        return await self.post(build(txn_id, account_id, symbol, qty, price))

    async def settle(
        self, txn_id: str, account_id: uuid.UUID, *, cash: object = 0,
        shares: Mapping[str, object] | None = None,
    ) -> PostResult:
        return await self.post(rules.settle_customer(txn_id, account_id, cash=cash, shares=shares))

    async def close_clearing(
        self, txn_id: str, *, cash: object = 0, shares: Mapping[str, object] | None = None
    ) -> PostResult:
        return await self.post(rules.close_clearing(txn_id, cash=cash, shares=shares))

    async def reverse(self, original_txn_id: str, txn_id: str) -> PostResult:
        """Post the exact negation of a posted transaction (the only way to correct one)."""
        original = await self.load(original_txn_id)
        if original is None:
            raise UnknownAccount(f"no posted ledger transaction {original_txn_id}",
                                 code="unknown_transaction")
        return await self.post(original.reversed(txn_id))

    # --- reads --------------------------------------------------------------------------------

    async def load(self, txn_id: str) -> LedgerTxn | None:
        async with self.engine.connect() as conn:
            head = (await conn.execute(
                text("SELECT kind, account_id, status FROM ledger_transactions WHERE id = :id"),
                {"id": txn_id},
            )).one_or_none()
            if head is None or head.status != "posted":
                return None
            rows = (await conn.execute(
                text(
                    "SELECT la.owner_id, la.name, e.currency, e.amount FROM ledger_entries e "
                    "JOIN ledger_accounts la ON la.id = e.ledger_account_id "
                    "WHERE e.txn_id = :id ORDER BY e.id"
                ),
                {"id": txn_id},
            )).all()
        entries = [Entry(AccountRef(r.owner_id, r.name), Decimal(r.amount), r.currency) for r in rows]
        return LedgerTxn.build(txn_id, head.kind, entries, account_id=head.account_id)

    async def balances(self, account_id: uuid.UUID) -> dict[str, Decimal]:
        """Cached balances of every ledger account of one customer, by name."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                text(
                    "SELECT la.name, coalesce(sum(b.balance), 0) AS balance FROM ledger_accounts la "
                    "JOIN balances b ON b.ledger_account_id = la.id "
                    "WHERE la.owner_id = :owner GROUP BY la.name"
                ),
                {"owner": account_id},
            )).all()
        return {r.name: plain(Decimal(r.balance)) for r in rows}

    async def balance(self, owner: uuid.UUID | None, name: str) -> Decimal:
        async with self.engine.connect() as conn:
            value = (await conn.execute(
                text(balance_sql(owner)),
                {"owner": owner, "name": name},
            )).scalar_one()
        return plain(Decimal(value))

    async def balance_at(self, owner: uuid.UUID | None, name: str, at: datetime) -> Decimal:
        """Balance of one ledger account at a past moment, recomputed from entries alone."""
        async with self.engine.connect() as conn:
            value = (await conn.execute(
                text(balance_at_sql(owner)),
                {"owner": owner, "name": name, "at": at},
            )).scalar_one()
        return plain(Decimal(value))

    async def totals_by_currency(self) -> dict[str, Decimal]:
        """Sum of every entry per currency: zero for each, always."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                text("SELECT currency, sum(amount) AS total FROM ledger_entries GROUP BY currency")
            )).all()
        return {r.currency: Decimal(r.total) for r in rows}

    async def negative_customer_balances(self) -> list[tuple[uuid.UUID, str, Decimal]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                text(
                    "SELECT la.owner_id, la.name, b.balance FROM balances b "
                    "JOIN ledger_accounts la ON la.id = b.ledger_account_id "
                    "WHERE la.non_negative AND b.balance < 0"
                )
            )).all()
        return [(r.owner_id, r.name, Decimal(r.balance)) for r in rows]

    async def reconcile(self) -> ReconcileReport:
        """Recompute every balance from entries and check every transaction sums to zero.

        Reports differences; changes nothing (what to do about a mismatch is an operator's
        decision, made in a later slice).
        """
        async with self.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM ledger_accounts"))).scalar_one()
            rows = (await conn.execute(
                text(
                    """
                    SELECT la.id, la.owner_id, la.name,
                           coalesce(e.total, 0) AS from_entries, coalesce(b.total, 0) AS cached
                      FROM ledger_accounts la
                      LEFT JOIN (SELECT ledger_account_id, sum(amount) AS total
                                   FROM ledger_entries GROUP BY 1) e ON e.ledger_account_id = la.id
                      LEFT JOIN (SELECT ledger_account_id, sum(balance) AS total
                                   FROM balances GROUP BY 1) b ON b.ledger_account_id = la.id
                     WHERE coalesce(e.total, 0) <> coalesce(b.total, 0)
                     ORDER BY la.id
                    """
                )
            )).all()
            bad = (await conn.execute(
                text(
                    "SELECT txn_id, currency, sum(amount) AS total FROM ledger_entries "
                    "GROUP BY txn_id, currency HAVING sum(amount) <> 0"
                )
            )).all()
        return ReconcileReport(
            accounts_checked=count,
            mismatches=[
                Mismatch(r.id, r.owner_id, r.name, Decimal(r.from_entries), Decimal(r.cached))
                for r in rows
            ],
            unbalanced=[Unbalanced(r.txn_id, r.currency, Decimal(r.total)) for r in bad],
        )
