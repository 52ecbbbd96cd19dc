"""ACH transfers on the account's shard. Each public method is ONE transaction: the transfer row,
its audit event (``transfer_events``), the ledger transaction of the step -- or nothing.

Ledger transaction ids derive from the transfer id and the step (``transfer:<id>:provisional``,
``:settle``, ``:return``, ``:hold``, ``:complete``, ``:release``), and every step is a no-op when
the transfer already passed it, so activity retries are safe.

Statuses (Alpaca names): QUEUED -> PENDING (deposit credited provisionally / withdrawal held) ->
COMPLETE, or RETURNED (deposit bounced), REJECTED (withdrawal refused: not enough withdrawable
cash), FAILED (the bank failed the withdrawal, hold released; or the first step failed for good,
nothing moved: :meth:`FundingStore.fail_unstarted`). A later step that fails for good is recorded
as a ``transfer_events`` row for an operator (:meth:`FundingStore.flag`), the status unchanged.

The payloads (:class:`~domain.funding.TransferInput`, :class:`~domain.funding.TransferSnapshot`)
and the request hash are the domain's (:mod:`domain.funding`); this module stores them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engines import run_in_transaction
from db.errors import IdempotencyConflict
from db.ledger import post
from db.shortfalls import cover_if_settled
from domain import ledger as rules
from domain.funding import TransferInput, TransferSnapshot, check_amount, request_hash
from domain.ledger import LedgerTxn
from domain.money import plain


def _snap(row: RowMapping) -> TransferSnapshot:
    return TransferSnapshot(
        str(row["id"]), str(row["account_id"]), row["direction"],
        format(plain(Decimal(row["amount"])), "f"), row["status"], row["reason"],
        row["expected_settle_date"].isoformat() if row["expected_settle_date"] else None)


async def _lock(conn: AsyncConnection, transfer_id: str) -> RowMapping:
    return (await conn.execute(text("SELECT * FROM transfers WHERE id = :id FOR UPDATE"),
                               {"id": uuid.UUID(transfer_id)})).mappings().one()


async def _move(conn: AsyncConnection, row: RowMapping, to: str, *, reason: str | None = None,
                txn: LedgerTxn | None = None, **values: Any) -> RowMapping:
    txn_id = None
    if txn is not None:
        result = await post(conn, txn)
        if not result.ok:
            raise RuntimeError(f"{txn.id}: {result.error_detail}")
        txn_id = txn.id
    sets = "".join(f", {k} = :{k}" for k in values)
    await conn.execute(
        text(f"UPDATE transfers SET status = :s, reason = coalesce(:r, reason), "
             f"updated_at = clock_timestamp(){sets} WHERE id = :id"),
        {"s": to, "r": reason, "id": row["id"], **values})
    await conn.execute(
        text("INSERT INTO transfer_events (transfer_id, account_id, from_status, to_status, reason, "
             "ledger_txn_id) VALUES (:t, :a, :f, :to, :r, :l)"),
        {"t": row["id"], "a": row["account_id"], "f": row["status"], "to": to, "r": reason, "l": txn_id})
    return (await conn.execute(text("SELECT * FROM transfers WHERE id = :id"),
                               {"id": row["id"]})).mappings().one()


async def _cash(conn: AsyncConnection, account: uuid.UUID) -> Decimal:
    v = (await conn.execute(text(
        "SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN balances b "
        "ON b.ledger_account_id = la.id WHERE la.owner_id = :a AND la.name = 'cash'"),
        {"a": account})).scalar_one()
    return Decimal(v)


async def provisional_outstanding(conn: AsyncConnection, account: uuid.UUID) -> Decimal:
    """Deposits credited provisionally whose ACH has not settled yet."""
    v = (await conn.execute(text(
        "SELECT coalesce(sum(amount), 0) FROM transfers WHERE account_id = :a AND direction = 'INCOMING' "
        "AND status = 'PENDING'"), {"a": account})).scalar_one()
    return Decimal(v)


class FundingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _create(self, conn: AsyncConnection, inp: TransferInput) -> tuple[RowMapping, bool]:
        row = await self._existing(conn, inp)
        if row is not None:
            return row, False
        await self._insert(conn, inp, "QUEUED", "transfer requested")
        row = await _lock(conn, inp.transfer_id)
        return row, True

    async def _existing(self, conn: AsyncConnection, inp: TransferInput) -> RowMapping | None:
        """The transfer's row (locked) if it exists, checked against the request; the amount is
        checked first (:func:`domain.funding.check_amount`: one the books cannot hold is refused
        before any statement, never left to overflow)."""
        tid, acct = uuid.UUID(inp.transfer_id), uuid.UUID(inp.account_id)
        h = request_hash(inp.direction, check_amount(inp.amount))
        row = (await conn.execute(text("SELECT * FROM transfers WHERE id = :id FOR UPDATE"),
                                  {"id": tid})).mappings().one_or_none()
        if row is not None and (row["request_hash"] != h or row["account_id"] != acct):
            raise IdempotencyConflict(f"transfer {tid} exists with a different request")
        return row

    async def _insert(self, conn: AsyncConnection, inp: TransferInput, status: str, reason: str) -> None:
        tid, acct = uuid.UUID(inp.transfer_id), uuid.UUID(inp.account_id)
        amount = check_amount(inp.amount)
        await conn.execute(
            text("INSERT INTO transfers (id, account_id, direction, amount, request_hash, status, "
                 "reason, expected_settle_date) VALUES (:id, :a, :d, :amt, :h, :s, :r, :esd)"),
            {"id": tid, "a": acct, "d": inp.direction, "amt": amount,
             "h": request_hash(inp.direction, amount), "s": status,
             "r": None if status == "QUEUED" else reason,
             "esd": date.fromisoformat(inp.expected_settle_date) if inp.expected_settle_date else None})
        await conn.execute(
            text("INSERT INTO transfer_events (transfer_id, account_id, from_status, to_status, reason) "
                 "VALUES (:t, :a, NULL, :s, :r)"), {"t": tid, "a": acct, "s": status, "r": reason})

    async def get(self, transfer_id: str) -> TransferSnapshot | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM transfers WHERE id = :id"),
                                      {"id": uuid.UUID(transfer_id)})).mappings().one_or_none()
        return _snap(row) if row else None

    # --- deposits -----------------------------------------------------------------------------

    async def start_deposit(self, inp: TransferInput) -> TransferSnapshot:
        """Create the transfer and credit it provisionally (ach_provisional -> cash)."""

        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row, _ = await self._create(conn, inp)
            if row["status"] != "QUEUED":
                return _snap(row)
            txn = rules.deposit_provisional(f"transfer:{row['id']}:provisional", row["account_id"],
                                            row["amount"])
            row = await _move(conn, row, "PENDING", reason="provisional credit", txn=txn,
                              provisional_at=datetime.now(UTC))
            return _snap(row)

        return await run_in_transaction(self.engine, _do)

    async def settle_deposit(self, transfer_id: str) -> TransferSnapshot:
        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await _lock(conn, transfer_id)
            if row["status"] != "PENDING":
                return _snap(row)
            txn = rules.deposit_settled(f"transfer:{row['id']}:settle", row["account_id"], row["amount"])
            done = await _move(conn, row, "COMPLETE", reason="ACH settled", txn=txn,
                               settled_at=datetime.now(UTC))
            await cover_if_settled(conn, row["account_id"])  # settled cash may cover a shortfall
            return _snap(done)

        return await run_in_transaction(self.engine, _do)

    async def bounce_deposit(self, transfer_id: str, reason: str) -> TransferSnapshot:
        """Reverse the provisional credit even if cash goes negative; then record the shortfall,
        which restricts the account to closing orders until settled cash covers it
        (:mod:`db.shortfalls`)."""

        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await _lock(conn, transfer_id)
            if row["status"] != "PENDING":
                return _snap(row)
            acct = row["account_id"]
            txn = rules.deposit_bounced(f"transfer:{row['id']}:return", acct, row["amount"])
            new = await _move(conn, row, "RETURNED", reason=reason, txn=txn)
            cash = await _cash(conn, acct)
            if cash < 0:
                await conn.execute(
                    text("INSERT INTO shortfalls (account_id, cause, transfer_id, amount) "
                         "VALUES (:a, 'ach_return', :t, :s) ON CONFLICT (transfer_id) DO NOTHING"),
                    {"t": row["id"], "a": acct, "s": -cash})
            return _snap(new)

        return await run_in_transaction(self.engine, _do)

    # --- withdrawals --------------------------------------------------------------------------

    async def start_withdrawal(self, inp: TransferInput) -> TransferSnapshot:
        """Create the transfer and hold it from withdrawable cash (settled, not provisional)."""

        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row, _ = await self._create(conn, inp)
            if row["status"] != "QUEUED":
                return _snap(row)
            acct = row["account_id"]
            # serialize with other withdrawals/deposits of the account
            await conn.execute(text("SELECT 1 FROM accounts WHERE id = :a FOR UPDATE"), {"a": acct})
            withdrawable = await _cash(conn, acct) - await provisional_outstanding(conn, acct)
            amount = Decimal(row["amount"])
            if amount > withdrawable:
                return _snap(await _move(
                    conn, row, "REJECTED",
                    reason=f"insufficient withdrawable cash: {plain(max(withdrawable, Decimal(0)))} "
                           f"available, {plain(amount)} requested"))
            txn = rules.withdrawal_hold(f"transfer:{row['id']}:hold", acct, amount)
            result = await post(conn, txn)
            if not result.ok:
                return _snap(await _move(conn, row, "REJECTED",
                                         reason=f"insufficient withdrawable cash: {result.error_detail}"))
            return _snap(await _move(conn, row, "PENDING", reason="held for withdrawal"))

        return await run_in_transaction(self.engine, _do)

    async def complete_withdrawal(self, transfer_id: str) -> TransferSnapshot:
        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await _lock(conn, transfer_id)
            if row["status"] != "PENDING":
                return _snap(row)
            txn = rules.withdrawal_complete(f"transfer:{row['id']}:complete", row["account_id"],
                                            row["amount"])
            return _snap(await _move(conn, row, "COMPLETE", reason="ACH sent", txn=txn,
                                     settled_at=datetime.now(UTC)))

        return await run_in_transaction(self.engine, _do)

    async def fail_withdrawal(self, transfer_id: str, reason: str) -> TransferSnapshot:
        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await _lock(conn, transfer_id)
            if row["status"] != "PENDING":
                return _snap(row)
            txn = rules.withdrawal_release(f"transfer:{row['id']}:release", row["account_id"],
                                           row["amount"])
            return _snap(await _move(conn, row, "FAILED", reason=reason, txn=txn))

        return await run_in_transaction(self.engine, _do)

    # --- failures -----------------------------------------------------------------------------

    async def fail_unstarted(self, inp: TransferInput, reason: str) -> TransferSnapshot:
        """End a transfer whose first step failed for good: written FAILED with ``reason``, no
        ledger transaction, in one transaction -- unless the first step did commit (its answer
        was lost), in which case the transfer is returned as it stands and goes on."""

        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await self._existing(conn, inp)
            if row is not None:
                return _snap(row)
            await self._insert(conn, inp, "FAILED", reason)
            return _snap(await _lock(conn, inp.transfer_id))

        return await run_in_transaction(self.engine, _do)

    async def flag(self, transfer_id: str, reason: str) -> TransferSnapshot:
        """Record on the transfer that a step after money moved failed for good and needs an
        operator: a ``transfer_events`` row (status unchanged, no ledger transaction). The money
        stays where the last committed step left it (a provisional credit, a hold)."""

        async def _do(conn: AsyncConnection) -> TransferSnapshot:
            row = await _lock(conn, transfer_id)
            await conn.execute(
                text("INSERT INTO transfer_events (transfer_id, account_id, from_status, to_status, "
                     "reason) VALUES (:t, :a, :s, :s, :r)"),
                {"t": row["id"], "a": row["account_id"], "s": row["status"], "r": reason[:1000]})
            return _snap(row)

        return await run_in_transaction(self.engine, _do)

    # --- reads --------------------------------------------------------------------------------

    async def list_for(self, account_id: uuid.UUID, *, limit: int = 100) -> list[RowMapping]:
        """The account's transfer rows, newest first."""
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(
                "SELECT * FROM transfers WHERE account_id = :a ORDER BY created_at DESC LIMIT :n"),
                {"a": account_id, "n": limit})).mappings().all())

    async def get_for(self, account_id: uuid.UUID, transfer_id: uuid.UUID) -> RowMapping | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(
                "SELECT * FROM transfers WHERE id = :id AND account_id = :a"),
                {"id": transfer_id, "a": account_id})).mappings().one_or_none()

    async def shortfalls(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT * FROM shortfalls ORDER BY id"))).mappings().all()
        return [json.loads(json.dumps(dict(r), default=str)) for r in rows]
