"""Settlement on one shard, and the cross-shard netting report in the directory.

:func:`settle_shard` is ONE transaction on the shard: every execution whose settle date has come
and that is not settled yet moves the customers' unsettled cash and shares to settled (one
``settle_customer`` ledger transaction per account, id ``settle:<date>:<account>``), closes the
house clearing accounts against bank and custody for the netted amounts (id
``clearing:<date>:shard<n>``), records each execution in ``settlements`` and the per-symbol
netting of the day, and marks the run done. A second run for the same date finds the run done
and returns what it recorded: nothing moves twice. What it returns,
:class:`~domain.settlement.ShardSettlement`, is the Settlement workflow's payload and lives in
:mod:`domain.settlement`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engines import run_in_transaction
from db.errors import DbError
from db.ledger import post
from db.shortfalls import cover_if_settled
from domain import calendar
from domain import ledger as rules
from domain.fractional import HOUSE_VENUE
from domain.settlement import Break, Netting, ShardSettlement, StreetFill, check_settleable


class SettlementFailed(DbError):
    """A shard's settlement of a date cannot be posted (deterministic: retrying cannot help). It
    names the account; the shard halts until an operator has looked."""

    code = "settlement_failed"

    def __init__(self, message: str, *, account: str) -> None:
        super().__init__(message)
        self.account = account


# to_pool: a sale booked before proceeds lots existed credited the undated pool (its cash
# settles from there, by the execution, as it always did)
# accounts with proceeds lots that settle by :d and still hold money (a lot's date is its suffix)
_LOTS_DUE = """
    SELECT DISTINCT la.owner_id FROM ledger_accounts la JOIN balances b ON b.ledger_account_id = la.id
     WHERE la.owner_id IS NOT NULL AND la.name LIKE 'cash_unsettled@%'
       AND substr(la.name, 16) <= :ds AND b.balance > 0
"""
_ACCOUNT_LOTS = """
    SELECT la.name, sum(b.balance) AS balance FROM ledger_accounts la
      JOIN balances b ON b.ledger_account_id = la.id
     WHERE la.owner_id = :a AND la.name LIKE 'cash_unsettled@%' AND substr(la.name, 16) <= :ds
     GROUP BY la.name HAVING sum(b.balance) > 0
"""

_PENDING = """
    SELECT e.venue, e.exec_id, e.account_id, e.symbol, e.side, e.qty, e.price,
           EXISTS (SELECT 1 FROM ledger_entries le JOIN ledger_accounts la ON la.id = le.ledger_account_id
                    WHERE le.txn_id = e.ledger_txn_id AND la.owner_id = e.account_id
                      AND la.name = 'cash_unsettled') AS to_pool
      FROM executions e
     WHERE e.settle_date <= :d AND e.qty > 0 AND e.ledger_txn_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.venue = e.venue AND s.exec_id = e.exec_id)
"""


async def _stored(conn: AsyncConnection, shard: int, d: date) -> ShardSettlement | None:
    run = (await conn.execute(text("SELECT * FROM settlement_runs WHERE business_date = :d"),
                              {"d": d})).mappings().one_or_none()
    if run is None:
        return None
    rows = (await conn.execute(
        text("SELECT * FROM settlement_netting WHERE business_date = :d ORDER BY symbol"),
        {"d": d})).mappings().all()
    return ShardSettlement(
        shard, d.isoformat(), run["status"], run["executions"], run["accounts"], replayed=True,
        netting=[Netting(r["symbol"], Decimal(r["bought"]), Decimal(r["sold"]), Decimal(r["buy_value"]),
                         Decimal(r["sell_value"]), r["fills"]).to_wire() for r in rows])


async def settle_shard(
    engine: AsyncEngine, shard: int, d: date, *, house_stripes: int = 32
) -> ShardSettlement:
    """Settle business date ``d`` on this shard (see module docstring). Idempotent. A date that
    has not come yet is refused (:class:`domain.settlement.SettlementDateError`)."""
    check_settleable(d, datetime.now(UTC))

    async def _do(conn: AsyncConnection) -> ShardSettlement:
        # one settlement run per shard at a time, whatever the date
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('settlement', 0))"))
        done = await _stored(conn, shard, d)
        if done is not None:
            return done
        if not calendar.is_session(d):
            await conn.execute(text("INSERT INTO settlement_runs (business_date, status) "
                                    "VALUES (:d, 'no_session')"), {"d": d})
            return ShardSettlement(shard, d.isoformat(), "no_session")
        rows = (await conn.execute(text(_PENDING + " ORDER BY e.account_id"), {"d": d})).all()
        cash: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
        shares: dict[uuid.UUID, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        netting: dict[str, Netting] = {}
        clearing_cash = Decimal(0)
        clearing_shares: dict[str, Decimal] = defaultdict(Decimal)
        for r in rows:
            qty, price = Decimal(r.qty), Decimal(r.price)
            if r.venue == HOUSE_VENUE:
                # the firm filled it from its inventory (domain.fractional): the customer's side
                # settles (shares; proceeds by their lot), nothing goes through the street
                if r.side == "buy":
                    shares[r.account_id][r.symbol] += qty
                continue
            value = rules.fill_value(qty, price)
            n = netting.setdefault(r.symbol, Netting(r.symbol))
            n.fills += 1
            if r.side == "buy":
                shares[r.account_id][r.symbol] += qty
                n.bought += qty
                n.buy_value += value
                clearing_cash += value  # buy_fill credited clearing_cash +v
                clearing_shares[r.symbol] -= qty
            else:
                if r.to_pool:
                    cash[r.account_id] += value
                n.sold += qty
                n.sell_value += value
                clearing_cash -= value
                clearing_shares[r.symbol] += qty
        await conn.execute(text("INSERT INTO settlement_runs (business_date, status) VALUES (:d, 'done')"),
                           {"d": d})
        accounts = sorted({r.account_id for r in rows})
        with_lots = set((await conn.execute(text(_LOTS_DUE), {"ds": d.isoformat()})).scalars().all())
        posted: set[uuid.UUID] = set()  # accounts whose settlement moved something
        for acct in sorted(set(accounts) | with_lots):
            txn_id = f"settle:{d.isoformat()}:{acct}"
            # the lock every order's hold takes: balances cannot move while we read and post
            await conn.execute(text("SELECT 1 FROM accounts WHERE id = :a FOR NO KEY UPDATE"), {"a": acct})
            sh = {s: q for s, q in shares.get(acct, {}).items() if q}
            if sh:  # shares bought may already be sold (held from unsettled): settle what is left
                left = {r.name.partition(":")[2]: Decimal(r.balance) for r in (await conn.execute(text(
                    "SELECT la.name, sum(b.balance) AS balance FROM ledger_accounts la JOIN balances b "
                    "ON b.ledger_account_id = la.id WHERE la.owner_id = :a "
                    "AND la.name LIKE 'shares_unsettled:%' GROUP BY la.name"), {"a": acct})).all()}
                sh = {s: min(q, left.get(s, Decimal(0))) for s, q in sh.items()}
                sh = {s: q for s, q in sh.items() if q > 0}
            # (the undated pool) a buy may already have spent unsettled proceeds: settle what is
            # still unsettled, under the account lock
            due = cash.get(acct, Decimal(0))
            if due:
                still = Decimal((await conn.execute(text(
                    "SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN balances b "
                    "ON b.ledger_account_id = la.id WHERE la.owner_id = :a AND la.name = 'cash_unsettled'"),
                    {"a": acct})).scalar_one())
                due = max(Decimal(0), min(due, still))
            # every proceeds lot settling by today, with what is left in it (spent proceeds left
            # with the buy they paid for; released ones came back to their lot)
            lots = {r.name: Decimal(r.balance) for r in (await conn.execute(
                text(_ACCOUNT_LOTS), {"a": acct, "ds": d.isoformat()})).all()}
            if not sh and not due and not lots:
                continue  # already consumed (sold or spent before it settled): nothing moves
            result = await post(conn, rules.settle_customer(txn_id, acct, cash=due, shares=sh, lots=lots),
                                house_stripes=house_stripes)
            if not result.ok:  # never expected: the fills credited exactly these unsettled amounts
                raise SettlementFailed(f"settlement of account {acct} on {d} rejected by the ledger: "
                                       f"{result.error_detail}", account=str(acct))
            posted.add(acct)
            if lots or due:  # proceeds became settled cash: they may cover a shortfall
                await cover_if_settled(conn, acct)
        # exactly the rows read above (a statement re-reading executions could see a newer fill)
        # (no ledger transaction for an account whose settlement moved nothing)
        await conn.execute(
            text("INSERT INTO settlements (venue, exec_id, account_id, settled_on, ledger_txn_id) "
                 "SELECT v, x, a, :d, CASE WHEN a = ANY(:posted) THEN 'settle:' || :ds || ':' || a END "
                 "FROM unnest(CAST(:v AS text[]), CAST(:x AS text[]), CAST(:a AS uuid[])) AS u(v, x, a)"),
            {"d": d, "ds": d.isoformat(), "v": [r.venue for r in rows], "x": [r.exec_id for r in rows],
             "a": [r.account_id for r in rows], "posted": sorted(posted)})
        clearing_id = None
        close = {s: q for s, q in clearing_shares.items() if q}
        if clearing_cash or close:
            clearing_id = f"clearing:{d.isoformat()}:shard{shard}"
            await post(conn, rules.close_clearing(clearing_id, cash=clearing_cash, shares=close),
                       house_stripes=house_stripes)
        for n in netting.values():
            await conn.execute(
                text("INSERT INTO settlement_netting (business_date, symbol, bought, sold, buy_value, "
                     "sell_value, fills) VALUES (:d, :s, :b, :so, :bv, :sv, :f)"),
                {"d": d, "s": n.symbol, "b": n.bought, "so": n.sold, "bv": n.buy_value,
                 "sv": n.sell_value, "f": n.fills})
        await conn.execute(
            text("UPDATE settlement_runs SET executions = :n, accounts = :a, clearing_txn_id = :c, "
                 "finished_at = clock_timestamp() WHERE business_date = :d"),
            {"n": len(rows), "a": len(accounts), "c": clearing_id, "d": d})
        return ShardSettlement(shard, d.isoformat(), "done", len(rows), len(accounts),
                               netting=[netting[s].to_wire() for s in sorted(netting)])

    return await run_in_transaction(engine, _do)


async def last_settled(engine: AsyncEngine) -> date | None:
    async with engine.connect() as conn:
        value: date | None = (await conn.execute(
            text("SELECT max(business_date) FROM settlement_runs"))).scalar_one()
    return value


async def settled_fills(engine: AsyncEngine, d: date) -> list[StreetFill]:
    """Executions settled in the run of ``d`` (Sherwood's side of the street comparison)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT e.venue, e.exec_id, e.qty, e.price, e.symbol, e.side FROM settlements s "
            "JOIN executions e ON e.venue = s.venue AND e.exec_id = s.exec_id WHERE s.settled_on = :d "
            "AND e.venue <> :house"),  # the firm's own fills never went through the street
            {"d": d, "house": HOUSE_VENUE})).all()
    return [StreetFill(r.venue, r.exec_id, Decimal(r.qty), Decimal(r.price), r.symbol, r.side) for r in rows]


# --- directory: the cross-shard report -----------------------------------------------------------

async def store_report(directory: AsyncEngine, d: date, netting: dict[str, Netting], *, shards: int,
                       executions: int, breaks: list[Break], street_fills: int | None) -> None:
    """Replace the report of ``d`` (a rerun recomputes the same figures)."""

    async def _do(conn: AsyncConnection) -> None:
        await conn.execute(text("DELETE FROM settlement_reports WHERE business_date = :d"), {"d": d})
        await conn.execute(text("DELETE FROM settlement_breaks WHERE business_date = :d"), {"d": d})
        for n in netting.values():
            await conn.execute(
                text("INSERT INTO settlement_reports (business_date, symbol, bought, sold, net_shares, "
                     "buy_value, sell_value, net_cash, fills) "
                     "VALUES (:d, :s, :b, :so, :ns, :bv, :sv, :nc, :f)"),
                {"d": d, "s": n.symbol, "b": n.bought, "so": n.sold, "ns": n.net_shares,
                 "bv": n.buy_value, "sv": n.sell_value, "nc": n.net_cash, "f": n.fills})
        for b in breaks:
            await conn.execute(
                text("INSERT INTO settlement_breaks (business_date, kind, venue, exec_id, ours, theirs) "
                     "VALUES (:d, :k, :v, :e, :o, :t)"),
                {"d": d, "k": b.kind, "v": b.venue, "e": b.exec_id, "o": b.ours, "t": b.theirs})
        await conn.execute(
            text("INSERT INTO settlement_report_runs (business_date, status, shards, executions, breaks, "
                 "street_fills) VALUES (:d, 'done', :sh, :n, :b, :sf) ON CONFLICT (business_date) DO UPDATE "
                 "SET shards = EXCLUDED.shards, executions = EXCLUDED.executions, breaks = EXCLUDED.breaks, "
                 "street_fills = EXCLUDED.street_fills, updated_at = now()"),
            {"d": d, "sh": shards, "n": executions, "b": len(breaks), "sf": street_fills})

    await run_in_transaction(directory, _do)


def _str(v: Any) -> str:
    n = Decimal(v).normalize()
    return format(n if n != 0 else Decimal(0), "f")


async def load_report(directory: AsyncEngine, d: date) -> dict[str, Any] | None:
    async with directory.connect() as conn:
        run = (await conn.execute(text("SELECT * FROM settlement_report_runs WHERE business_date = :d"),
                                  {"d": d})).mappings().one_or_none()
        if run is None:
            return None
        rows = (await conn.execute(text(
            "SELECT * FROM settlement_reports WHERE business_date = :d ORDER BY symbol"),
            {"d": d})).mappings().all()
        brk = (await conn.execute(text(
            "SELECT * FROM settlement_breaks WHERE business_date = :d ORDER BY id"),
            {"d": d})).mappings().all()
    keys = ("bought", "sold", "net_shares", "buy_value", "sell_value", "net_cash")
    return {
        "business_date": d.isoformat(), "status": run["status"], "shards": run["shards"],
        "executions": run["executions"], "street_fills": run["street_fills"],
        "netting": [{"symbol": r["symbol"], **{k: _str(r[k]) for k in keys}, "fills": r["fills"]}
                    for r in rows],
        "breaks": [{"kind": b["kind"], "venue": b["venue"], "exec_id": b["exec_id"], "ours": b["ours"],
                    "theirs": b["theirs"]} for b in brk],
    }
