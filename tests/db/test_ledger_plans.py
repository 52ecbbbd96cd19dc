"""The ledger finds its accounts by key: posting never reads the whole of ``ledger_accounts``.

That table grows with every customer (a cash, a held-cash and a position account each, and more),
and ``ledger_post`` looks up every account of every posting (three postings per filled order).
A lookup that scans the table costs time in proportion to the shard's customers; this shows the
one the database actually ran, in a shard with tens of thousands of accounts.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from db import sql
from db.accounts import open_account
from db.ledger import balance_at_sql, balance_sql, post
from db.router import ShardRouter
from domain import ledger as rules
from tests.db.plans import plan_nodes, rolled_back


async def _with_many_accounts(conn: psycopg.AsyncConnection[Any]) -> None:
    """20,000 more house and 10,000 more customer-like ledger accounts, statistics up to date
    (inside the caller's transaction, which is rolled back)."""
    await sql.execute(conn, """INSERT INTO ledger_accounts (owner_id, name, currency, non_negative)
                               SELECT NULL, 'house:scale' || n, 'USD', false
                                 FROM generate_series(1, 20000) n""")
    owners = await sql.rows(conn, "SELECT id FROM accounts LIMIT 50")
    await sql.execute(conn, """INSERT INTO ledger_accounts (owner_id, name, currency, non_negative)
                               SELECT o, 'scale:' || n, 'USD', true
                                 FROM unnest(CAST(:owners AS uuid[])) o, generate_series(1, 200) n""",
                      {"owners": [r["id"] for r in owners]})
    await sql.execute(conn, "ANALYZE ledger_accounts")


async def _scans(conn: psycopg.AsyncConnection[Any]) -> int:
    """Sequential scans of ``ledger_accounts`` so far in this transaction."""
    return int(await sql.scalar(
        conn, "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'ledger_accounts'"))


async def test_posting_never_scans_the_ledger_accounts(router: ShardRouter) -> None:
    acct = await open_account(router)
    a = acct.account_id
    async with rolled_back(router, acct.shard) as conn:
        await _with_many_accounts(conn)
        before = await _scans(conn)
        # a customer's account and the house's, each looked up by (owner, name)
        deposit = await post(conn, rules.deposit_provisional(f"scan:{uuid.uuid4()}", a, "100"))
        hold = await post(conn, rules.hold_cash(f"scan:{uuid.uuid4()}", a, "40"))
        assert (deposit.status, hold.status) == ("posted", "posted")
        assert await _scans(conn) == before


async def test_reading_a_balance_probes_the_ledger_accounts_key(router: ShardRouter) -> None:
    acct = await open_account(router)
    async with rolled_back(router, acct.shard) as conn:
        await _with_many_accounts(conn)
        for owner in (None, acct.account_id):
            for statement, params in ((balance_sql, {}), (balance_at_sql, {"at": "2026-01-01"})):
                row = await sql.one(conn, "EXPLAIN (FORMAT JSON) " + statement(owner),
                                    {"owner": owner, "name": "cash", **params})
                nodes = plan_nodes(json.dumps(row["QUERY PLAN"]))
                assert "Seq Scan ledger_accounts" not in nodes, (owner, nodes)
