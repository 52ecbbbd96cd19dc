"""The invariants audit (db/audit.py), its command (``sherwood audit invariants``) and the
end-of-day reconciliation that runs it, on a scratch set of databases (tests/db/audit_books.py).

Days of business written through the real stores (deposits settled, pending and returned,
withdrawals, orders filled, partly filled, rejected, resting, a fill above its hold, a day
settled) pass every invariant. Then each test breaks exactly one invariant on a fresh account,
sees the audit report that invariant and no other, and repairs the damage (the next test audits
the same shards). Damage the database itself refuses (an unbalanced transaction, a change to an
append-only table) is written with triggers disabled for that transaction (``tampering``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from activities.settlement import ReconcileInput, ShardSettlementActivities
from db.audit import AuditReport, Invariant, Violation, audit_shard
from db.settlement import settle_shard
from db.shard_status import HALT_REASON, clear_halts
from domain.execution import VenueEventKind, VenueStatus
from domain.ledger import Entry, LedgerTxn, customer
from domain.orders import OrderState
from sherwood.settings import Settings
from tests.cli import sherwood_in_process
from tests.db.audit_books import Books, books_on, past_sessions, scratch_databases, tampering

SHARDS = 2


@pytest.fixture(scope="module")
def audit_settings(migrated: Settings) -> Iterator[Settings]:
    with scratch_databases(migrated, "audit", SHARDS) as s:
        yield s


@pytest.fixture(scope="module")
async def books(audit_settings: Settings, redis: Redis) -> AsyncIterator[Books]:
    async with books_on(audit_settings, redis) as b:
        for shard in range(SHARDS):
            await business(b, shard)
        yield b


async def business(b: Books, shard: int) -> None:
    """Two days of one shard's business, through the stores."""
    trade, settle = past_sessions()
    a = await b.account(shard=shard, deposit="100000")
    # the day before yesterday: a buy filled, a buy partly filled (price improved) then canceled,
    # an order rejected for buying power; settled yesterday
    bought = await b.filled(a, "buy", "AAPL", 10, "100")
    part = await b.order(a, "buy", "KO", "5", limit="60")
    await b.fill(a, part.order_id, "2", "59.5", cum="2", full=False)
    await b.venue(a, part.order_id, VenueEventKind.CANCELED, VenueStatus.CANCELED, cum="2")
    for order in (bought, part):
        await b.dated(a, order.order_id, trade)
    rejected = await b.order(a, "buy", "MSFT", "1000", limit="200")
    assert rejected.state == OrderState.REJECTED, rejected
    done = await settle_shard(b.router.engine(shard), shard, settle)
    assert done.status == "done" and done.executions == 3, done
    # today: settled shares sold, a sell and a buy resting, a buy filled below its limit, a
    # market buy filled above its hold (topped up from cash), withdrawals pending and sent
    await b.filled(a, "sell", "AAPL", 4, "101")
    assert (await b.order(a, "sell", "AAPL", "2", limit="150")).state == OrderState.ACKED
    assert (await b.order(a, "buy", "MSFT", "3", limit="300")).state == OrderState.ACKED
    await b.filled(a, "buy", "AAPL", 1, "99", limit="100")
    market = await b.order(a, "buy", "F", "10", ask="10")  # holds 10 x 10 x 1.05 = 105
    await b.fill(a, market.order_id, "10", "11", cum="10", full=True)
    await b.withdraw(a, "500", complete=False)
    await b.withdraw(a, "250", complete=True)
    # a deposit still provisional; an instant account spends a deposit that is then returned
    await b.deposit(await b.account(shard=shard), "2000")
    spender = await b.account(shard=shard, kind="instant")
    tid = await b.deposit(spender, "500")
    await b.filled(spender, "buy", "F", 40, "10")
    await b.funding(spender).bounce_deposit(tid, "R01 insufficient funds")
    assert (await b.balances(spender))["cash"] == Decimal(-400)


async def audit(b: Books, shard: int) -> AuditReport:
    return await audit_shard(b.router.engine(shard), shard)


async def only(b: Books, shard: int, name: str) -> Violation:
    """The shard violates ``name`` and nothing else."""
    report = await audit(b, shard)
    assert report.violated() == [name], report.violations
    return report.violations[0]


async def clean(b: Books, shard: int) -> None:
    report = await audit(b, shard)
    assert report.ok, report.violations


def gap(row: dict[str, str | None], a: str, b: str) -> Decimal:
    return Decimal(row[a] or 0) - Decimal(row[b] or 0)


async def test_books_written_by_the_stores_pass_every_invariant(books: Books) -> None:
    for shard in range(SHARDS):
        report = await audit(books, shard)
        assert report.ok, report.violations
        assert len(report.checked) == 10
        async with books.router.engine(shard).connect() as conn:
            covered = (await conn.execute(text(
                "SELECT (SELECT count(*) FROM settlements), "
                "(SELECT count(*) FROM shortfalls WHERE covered_at IS NULL), "
                "(SELECT count(*) FROM transfers WHERE status = 'PENDING'), "
                "(SELECT count(*) FROM orders WHERE hold_amount > 0)"))).one()
        assert tuple(covered) == (3, 1, 2, 2)  # settled fills, the shortfall, pending, holds


async def test_the_audit_reads_one_repeatable_read_snapshot(books: Books) -> None:
    probe = Invariant("snapshot", "one REPEATABLE READ, read-only transaction", """
        SELECT current_setting('transaction_isolation') AS isolation,
               current_setting('transaction_read_only') AS read_only
         WHERE current_setting('transaction_isolation') <> 'repeatable read'
            OR current_setting('transaction_read_only') <> 'on'""")
    assert (await audit_shard(books.router.engine(0), 0, invariants=(probe,))).ok


async def test_unbalanced_transaction(books: Books) -> None:
    a = await books.account(deposit="1000")
    engine = books.admin(a)  # the owner: the tests below tamper on purpose
    async with engine.connect() as conn:
        txn, la = (await conn.execute(text(
            "SELECT t.id, la.id FROM ledger_transactions t, ledger_accounts la WHERE "
            "t.account_id = :a AND t.kind = 'deposit' AND la.owner_id = :a AND la.name = 'cash'"),
            {"a": a.account_id})).one()
    insert = text("INSERT INTO ledger_entries (txn_id, ledger_account_id, currency, amount) "
                  "VALUES (:t, :la, 'USD', 1) RETURNING id")
    with pytest.raises(DBAPIError, match="does not balance"):  # refused at commit ...
        async with engine.begin() as conn:
            await conn.execute(insert, {"t": txn, "la": la})
    async with tampering(engine) as conn:  # ... unless the trigger is off; the cache follows
        entry = (await conn.execute(insert, {"t": txn, "la": la})).scalar_one()
        await conn.execute(text("UPDATE balances SET balance = balance + 1 WHERE ledger_account_id = :la"),
                           {"la": la})
    try:
        v = await only(books, a.shard, "unbalanced_transactions")
        assert v.count == 1 and v.rows == [{"txn_id": txn, "kind": "deposit", "status": "posted",
                                            "account_id": str(a.account_id), "currency": "USD",
                                            "total": "1"}]
    finally:
        async with tampering(engine) as conn:
            await conn.execute(text("DELETE FROM ledger_entries WHERE id = :e"), {"e": entry})
            await conn.execute(text("UPDATE balances SET balance = balance - 1 "
                                    "WHERE ledger_account_id = :la"), {"la": la})
    await clean(books, a.shard)


async def test_cached_balance_differs_from_entries(books: Books) -> None:
    a = await books.account(deposit="1000")
    bump = ("UPDATE balances SET balance = balance + :d WHERE ledger_account_id = "
            "(SELECT id FROM ledger_accounts WHERE owner_id = :a AND name = 'cash')")
    async with books.admin(a).begin() as conn:
        await conn.execute(text(bump), {"d": 1, "a": a.account_id})
    try:
        v = await only(books, a.shard, "cached_balances")
        assert v.count == 1
        row = v.rows[0]
        assert (row["account_id"], row["name"], row["from_entries"], row["cached"]) == (
            str(a.account_id), "cash", "1000", "1001")
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(text(bump), {"d": -1, "a": a.account_id})
    await clean(books, a.shard)


async def test_negative_balance_without_a_cause(books: Books) -> None:
    a = await books.account(kind="instant")
    tid = await books.deposit(a, "300")
    await books.filled(a, "buy", "F", 20, "10")
    await books.funding(a).bounce_deposit(tid, "R01")
    assert (await books.balances(a))["cash"] == Decimal(-200)
    await clean(books, a.shard)  # the open shortfall is the cause
    cover = text("UPDATE shortfalls SET covered_at = CASE WHEN :covered THEN clock_timestamp() END "
                 "WHERE account_id = :a")
    async with books.admin(a).begin() as conn:  # covered without any money coming in
        await conn.execute(cover, {"covered": True, "a": a.account_id})
    try:
        v = await only(books, a.shard, "negative_without_cause")
        assert v.rows == [{"account_id": str(a.account_id), "name": "cash", "balance": "-200",
                           "open_shortfalls": None}]
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(cover, {"covered": False, "a": a.account_id})
    await clean(books, a.shard)
    # a shortfall explains negative cash only: unsettled cash below zero is wrong regardless
    ledger = books.router.ledger(a.shard)
    odd = LedgerTxn.build(f"audit-test:{uuid.uuid4()}", "test", [
        Entry.of(customer(a.account_id, "cash_unsettled"), -1),
        Entry.of(customer(a.account_id, "cash"), 1)], account_id=a.account_id, allow_negative=True)
    await ledger.post(odd)
    try:
        v = await only(books, a.shard, "negative_without_cause")
        assert [(r["name"], r["balance"], r["open_shortfalls"]) for r in v.rows] == [
            ("cash_unsettled", "-1", "200")]
    finally:
        await ledger.reverse(odd.id, f"{odd.id}:reversal")
    await clean(books, a.shard)


async def test_fill_booked_by_the_wrong_transaction(books: Books) -> None:
    a = await books.account(deposit="10000")
    snap = await books.filled(a, "buy", "KO", 4, "60")
    oid = snap.order_id
    repoint = text("UPDATE executions SET ledger_txn_id = :t WHERE ledger_txn_id = :was")
    async with books.engine(a).connect() as conn:
        venue, exec_id, booking = (await conn.execute(text(
            "SELECT venue, exec_id, ledger_txn_id FROM executions WHERE order_id = :o AND qty > 0 "
            "ORDER BY received_at LIMIT 1"), {"o": uuid.UUID(oid)})).one()
    async with books.admin(a).begin() as conn:  # the fill now points at the order's hold
        await conn.execute(repoint, {"t": f"order:{oid}:hold", "was": booking})
    try:
        v = await only(books, a.shard, "fill_bookings")
        assert [(r["exec_id"], r["ledger_txn_id"], r["kind"], r["problem"]) for r in v.rows] == [
            (exec_id, f"order:{oid}:hold", "hold_cash", "booked with the wrong kind"),
            (None, booking, "buy_fill", "no fill points at this booking")]
        assert v.rows[0]["venue"] == venue and v.rows[0]["order_id"] == oid
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(text("UPDATE executions SET ledger_txn_id = :t "
                                    "WHERE venue = :v AND exec_id = :e"),
                               {"t": booking, "v": venue, "e": exec_id})
    await clean(books, a.shard)


async def test_order_filled_quantity_differs_from_its_executions(books: Books) -> None:
    a = await books.account(deposit="10000")
    snap = await books.filled(a, "buy", "KO", 4, "60")
    change = text("UPDATE orders SET filled_qty = filled_qty + :d WHERE id = :o")
    async with books.admin(a).begin() as conn:
        await conn.execute(change, {"d": 1, "o": uuid.UUID(snap.order_id)})
    try:
        v = await only(books, a.shard, "order_fills")
        assert [(r["order_id"], r["filled_qty"], r["executions_qty"]) for r in v.rows] == [
            (snap.order_id, "5", "4")]
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(change, {"d": -1, "o": uuid.UUID(snap.order_id)})
    await clean(books, a.shard)


async def test_hold_on_an_ended_order(books: Books) -> None:
    a = await books.account(deposit="10000")
    snap = await books.filled(a, "buy", "KO", 4, "60")
    hold = text("UPDATE orders SET hold_amount = :h WHERE id = :o")
    async with books.admin(a).begin() as conn:
        await conn.execute(hold, {"h": 5, "o": uuid.UUID(snap.order_id)})
    try:
        v = await only(books, a.shard, "terminal_holds")
        assert [(r["order_id"], r["state"], r["hold_amount"]) for r in v.rows] == [
            (snap.order_id, "FILLED", "5")]
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(hold, {"h": 0, "o": uuid.UUID(snap.order_id)})
    await clean(books, a.shard)


@pytest.mark.parametrize(("side", "currency", "held"), [("buy", "USD", "900"), ("sell", "AAPL", "3")])
async def test_held_balance_differs_from_open_orders(books: Books, side: str, currency: str,
                                                     held: str) -> None:
    a = await books.account(deposit="10000")
    await books.withdraw(a, "100", complete=False)  # a pending withdrawal is held too
    if side == "sell":
        await books.filled(a, "buy", "AAPL", 3, "100")
        resting = await books.order(a, "sell", "AAPL", "3", limit="150")
    else:
        resting = await books.order(a, "buy", "MSFT", "3", limit="300")
    assert resting.state == OrderState.ACKED, resting
    await clean(books, a.shard)
    change = text("UPDATE orders SET hold_amount = hold_amount + :d WHERE id = :o")
    async with books.admin(a).begin() as conn:
        await conn.execute(change, {"d": -1, "o": uuid.UUID(resting.order_id)})
    try:
        v = await only(books, a.shard, "held_balances")
        withdrawals = "100" if side == "buy" else "0"
        held_total = str(Decimal(held) + Decimal(withdrawals))
        assert v.rows == [{"account_id": str(a.account_id), "currency": currency, "held": held_total,
                           "open_orders": str(Decimal(held) - 1), "pending_withdrawals": withdrawals}]
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(change, {"d": 1, "o": uuid.UUID(resting.order_id)})
    await clean(books, a.shard)


async def test_clearing_closed_without_a_settlement(books: Books) -> None:
    shard = 1
    await books.filled(await books.account(shard=shard, deposit="10000"), "buy", "KO", 2, "60")
    ledger = books.router.ledger(shard)
    rogue = f"audit-test:close:{uuid.uuid4()}"  # clearing closed against the bank, no fill settled
    await ledger.close_clearing(rogue, cash="1.5")
    try:
        v = await only(books, shard, "clearing_accounts")
        assert [r["ledger_account"] for r in v.rows] == ["clearing_cash"]
        assert gap(v.rows[0], "balance", "from_fills") == Decimal("-1.5")
    finally:
        await ledger.reverse(rogue, f"{rogue}:reversal")
    await clean(books, shard)


async def test_provisional_credit_without_a_pending_deposit(books: Books) -> None:
    a = await books.account()
    ledger = books.router.ledger(a.shard)
    stray = f"audit-test:deposit:{uuid.uuid4()}"  # credited provisionally, no transfer behind it
    await ledger.deposit(stray, a.account_id, "25")
    try:
        v = await only(books, a.shard, "provisional_ach")
        assert gap(v.rows[0], "balance", "from_transfers") == -25
    finally:
        await ledger.reverse(stray, f"{stray}:reversal")
    await clean(books, a.shard)


async def test_fill_due_but_not_settled(books: Books) -> None:
    _, settled = past_sessions()
    a = await books.account(deposit="10000")
    snap = await books.filled(a, "buy", "KO", 2, "60")
    oid = uuid.UUID(snap.order_id)
    async with books.engine(a).connect() as conn:
        due = (await conn.execute(text("SELECT DISTINCT settle_date FROM executions "
                                       "WHERE order_id = :o AND qty > 0"), {"o": oid})).scalar_one()
    assert due > settled
    move = text("UPDATE executions SET settle_date = :d WHERE order_id = :o AND qty > 0")
    async with books.admin(a).begin() as conn:  # due by the last settled date, never settled
        await conn.execute(move, {"d": settled, "o": oid})
    try:
        v = await only(books, a.shard, "unsettled_executions")
        assert v.count == 2 and {r["order_id"] for r in v.rows} == {snap.order_id}
        assert {r["last_settled"] for r in v.rows} == {settled.isoformat()}
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(move, {"d": due, "o": oid})
    await clean(books, a.shard)


def audit_env(settings: Settings, home: Path) -> dict[str, str]:
    """The environment of a ``sherwood`` command on the scratch databases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    assert settings.postgres_url
    env.update(SHERWOOD_POSTGRES_URL=settings.postgres_url, SHERWOOD_DB_PREFIX=settings.db_prefix,
               SHERWOOD_SHARDS=str(settings.shard_count), SHERWOOD_DATA_DIR=str(home))
    return env


async def sherwood(settings: Settings, home: Path, *args: str) -> tuple[int, str]:
    """``sherwood ARGS`` on the scratch databases, in this process (tests/cli.py): (exit code,
    stdout + stderr)."""
    code, out, err = await sherwood_in_process(audit_env(settings, home), *args)
    return code, out + err


async def sherwood_process(settings: Settings, home: Path, *args: str) -> tuple[int, str, str]:
    """``python -m sherwood ARGS`` on the scratch databases, a real process (the entry point):
    (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sherwood", *args, env=audit_env(settings, home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, errs = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), errs.decode()


async def test_the_command_exits_1_with_the_violations(books: Books, tmp_path: Path) -> None:
    s = books.settings
    code, out, _ = await sherwood_in_process(audit_env(s, tmp_path), "audit", "invariants", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] and sorted(doc["shards"]) == ["0", "1"]
    assert all(i == {"ok": True, "description": i["description"], "count": 0, "rows": []}
               for shard in doc["shards"].values() for i in shard["invariants"].values())
    a = await books.account(shard=1, deposit="10000")
    snap = await books.filled(a, "buy", "KO", 4, "60")
    change = text("UPDATE orders SET filled_qty = filled_qty + :d WHERE id = :o")
    async with books.admin(a).begin() as conn:
        await conn.execute(change, {"d": 3, "o": uuid.UUID(snap.order_id)})
    try:
        # a real `python -m sherwood` process: the entry point exits 1 (the rest in-process)
        code, out, errs = await sherwood_process(s, tmp_path, "audit", "invariants", "--json")
        assert code == 1, out + errs
        doc = json.loads(out)
        assert not doc["ok"] and doc["shards"]["0"]["ok"] and not doc["shards"]["1"]["ok"]
        bad = {n: i for n, i in doc["shards"]["1"]["invariants"].items() if not i["ok"]}
        assert list(bad) == ["order_fills"] and bad["order_fills"]["count"] == 1
        assert bad["order_fills"]["rows"][0]["order_id"] == snap.order_id
        code, out = await sherwood(s, tmp_path, "audit", "invariants")
        assert code == 1 and "shard 0: ok" in out and "order_fills (1)" in out, out
        assert f"order_id={snap.order_id}" in out and "filled_qty=7" in out
        code, out = await sherwood(s, tmp_path, "audit", "invariants", "--shard", "0")
        assert code == 0 and "shard 0: ok" in out and "shard 1" not in out, out
        code, out = await sherwood(s, tmp_path, "audit", "invariants", "--shard", "2")
        assert code == 2 and "no shard 2" in out, out
        code, out = await sherwood(s, tmp_path, "reconcile")  # the ledger alone is fine
        assert code == 0 and "shard 1:" in out, out
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(change, {"d": -3, "o": uuid.UUID(snap.order_id)})
    await clean(books, 1)


async def test_reconciliation_halts_only_the_shard_that_fails_its_audit(books: Books) -> None:
    a = await books.account(shard=0, deposit="10000")
    snap = await books.filled(a, "buy", "KO", 4, "60")
    hold = text("UPDATE orders SET hold_amount = :h WHERE id = :o")
    async with books.admin(a).begin() as conn:
        await conn.execute(hold, {"h": 7, "o": uuid.UUID(snap.order_id)})
    activities = [ShardSettlementActivities(books.router.engine(n), n) for n in range(SHARDS)]
    try:
        today = ReconcileInput(date.today().isoformat())
        bad, good = [await act.reconcile_shard_ledger(today) for act in activities]
        assert (bad.ok, bad.mismatches, bad.unbalanced, bad.violated) == (False, 0, 0, ["terminal_holds"])
        assert bad.halt_id is not None and bad.accounts_checked > 0
        assert (good.ok, good.halt_id, good.violated) == (True, None, [])
        async with books.router.engine(0).connect() as conn:
            run = (await conn.execute(text(
                "SELECT r.ok, r.violations, h.reason, h.details FROM shard_halts h "
                "JOIN reconciliation_runs r ON r.id = h.reconciliation_run_id WHERE h.id = :h"),
                {"h": bad.halt_id})).one()
            halted = (await conn.execute(text(HALT_REASON))).scalar_one()
        assert not run.ok and [v["invariant"] for v in run.violations] == ["terminal_holds"]
        assert run.violations[0]["rows"][0]["order_id"] == snap.order_id
        assert "1 invariant(s) violated: terminal_holds (1)" in run.reason
        assert run.details["violations"] == run.violations and halted.startswith(run.reason)
        async with books.router.engine(1).connect() as conn:
            assert (await conn.execute(text(HALT_REASON))).scalar_one_or_none() is None
            latest = (await conn.execute(text(
                "SELECT ok, violations FROM reconciliation_runs ORDER BY id DESC LIMIT 1"))).one()
        assert latest.ok and latest.violations == []
        # recording only (SHERWOOD_RECONCILE_AUDIT=record): the same findings, no new halt
        recorded = await ShardSettlementActivities(books.router.engine(0), 0, audit_halts=False
                                                   ).reconcile_shard_ledger(today)
        assert (recorded.ok, recorded.halt_id, recorded.violated) == (True, None, ["terminal_holds"])
        async with books.router.engine(0).connect() as conn:
            row = (await conn.execute(text(
                "SELECT ok, violations, (SELECT count(*) FROM shard_halts WHERE cleared_at IS NULL) "
                "AS halts FROM reconciliation_runs ORDER BY id DESC LIMIT 1"))).one()
        assert not row.ok and row.violations == run.violations and row.halts == 1
        # new orders on the halted shard are refused; the other shard trades on
        refused = await books.order(a, "buy", "KO", "1", limit="60")
        assert refused.reject_code == "shard_halted", refused
        other = await books.account(shard=1, deposit="1000")
        assert (await books.order(other, "buy", "KO", "1", limit="60")).state == OrderState.ACKED
    finally:
        async with books.admin(a).begin() as conn:
            await conn.execute(hold, {"h": 0, "o": uuid.UUID(snap.order_id)})
        await clear_halts(books.router.engine(0), operator="test", note="hold repaired")
    again = await activities[0].reconcile_shard_ledger(ReconcileInput(None))
    assert again.ok and again.halt_id is None


def test_the_back_office_halts_on_a_violation_unless_told_to_record(migrated: Settings) -> None:
    from workers.backoffice import backoffice_shard_activities

    def halts(mode: str) -> bool:
        s = migrated.model_copy(update={"reconcile_audit": mode})
        acts = backoffice_shard_activities(s, None, 0, None)  # type: ignore[arg-type]
        reconcile = next(a for a in acts if getattr(a, "__name__", "") == "reconcile_shard_ledger")
        return bool(reconcile.__self__.audit_halts)  # type: ignore[attr-defined]

    assert Settings.model_fields["reconcile_audit"].default == "halt"
    assert halts("halt") and not halts("record")
