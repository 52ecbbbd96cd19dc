"""Settlement throughput: time to settle one business day of N fills spread over 4 shards, for
N = 25,000 / 50,000 / 100,000, and whether it grows linearly (the 25k run is the baseline).

Synthetic data, bulk-inserted into scratch databases (prefix ``swbench<pid>``, dropped at the
end): per shard, ``--accounts`` customer accounts, each with one order whose fills (1 share at
10.00, buys and sells alternating by account, 8 symbols) are executions dated for the day, and
one ledger transaction crediting the unsettled shares/proceeds those fills booked. Then the four
shards' ``settle_shard`` runs concurrently, as the Settlement workflow's fan-out does (Temporal
itself adds a few activity round trips, independent of N).

Prints one JSON line per size. Run: ``python -m bench.settlement [--accounts 500]``.
Uses SHERWOOD_POSTGRES_URL (or a running ``sherwood dev``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engines import make_engine
from db.ledger import post
from db.migrate import drop_database, upgrade
from db.settlement import settle_shard
from domain.ledger import Entry, LedgerTxn, customer, house
from sherwood.settings import Settings

SHARDS = 4
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "F"]
DAYS = {25_000: date(2026, 10, 1), 50_000: date(2026, 10, 2), 100_000: date(2026, 10, 5)}


async def seed(engine: AsyncEngine, accounts: list[uuid.UUID], fills: int, day: date, tag: str) -> None:
    per = fills // len(accounts)
    extra = fills - per * len(accounts)
    async with engine.begin() as conn:
        for i, acct in enumerate(accounts):
            k = per + (1 if i < extra else 0)
            if k == 0:
                continue
            sym, side = SYMBOLS[i % len(SYMBOLS)], "buy" if i % 2 == 0 else "sell"
            q, v = Decimal(k), Decimal(k) * 10
            txn_id = f"bench:{tag}:{acct}"
            if side == "buy":
                entries = [Entry.of(house(f"clearing_shares:{sym}"), -q),
                           Entry.of(customer(acct, f"shares_unsettled:{sym}"), q),
                           Entry.of(house("clearing_cash"), v), Entry.of(house("bank"), -v)]
            else:
                entries = [Entry.of(house(f"custody:{sym}"), -q),
                           Entry.of(house(f"clearing_shares:{sym}"), q),
                           Entry.of(house("clearing_cash"), -v),
                           Entry.of(customer(acct, "cash_unsettled"), v)]
            await post(conn, LedgerTxn.build(txn_id, f"{side}_fill", entries, account_id=acct))
            oid = uuid.uuid4()
            await conn.execute(text(
                "INSERT INTO orders (id, account_id, client_order_id, request_hash, symbol, side, "
                "order_type, time_in_force, qty, state, cl_ord_id, filled_qty) "
                "VALUES (:o, :a, :c, 'x', :s, :side, "
                "'market', 'day', :q, 'FILLED', :c, :q)"),
                {"o": oid, "a": acct, "c": str(oid), "s": sym, "side": side, "q": q})
            await conn.execute(text(
                "INSERT INTO executions (venue, exec_id, order_id, account_id, symbol, side, exec_type, qty, "
                "price, ledger_txn_id, trade_date, settle_date) "
                "SELECT 'BENCH', :o || ':' || g, :oid, :a, :s, :side, 'F', 1, 10, :t, :td, :sd "
                "FROM generate_series(1, :k) g"),
                {"o": str(oid), "oid": oid, "a": acct, "s": sym, "side": side, "t": txn_id, "td": day,
                 "sd": day, "k": k})


async def main(n_accounts: int) -> None:
    base = Settings().resolved()
    prefix = f"swbench{os.getpid()}"
    urls = [base.model_copy(update={"db_prefix": prefix}).shard_url(n) for n in range(SHARDS)]
    for u in urls:
        upgrade("shard", u)
    engines = [make_engine(u, pool_size=2, max_overflow=0) for u in urls]
    try:
        accounts: list[list[uuid.UUID]] = []
        for e in engines:
            ids = [uuid.uuid4() for _ in range(n_accounts)]
            async with e.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO accounts (id, account_number, account_type) "
                    "SELECT u, 'B' || md5(u::text), 'cash' FROM unnest(CAST(:ids AS uuid[])) u"),
                    {"ids": ids})
            accounts.append(ids)
        baseline = None
        for fills, day in DAYS.items():
            t0 = time.perf_counter()
            await asyncio.gather(*(seed(e, accounts[n], fills // SHARDS, day, day.isoformat())
                                   for n, e in enumerate(engines)))
            seeded = time.perf_counter() - t0
            t0 = time.perf_counter()
            results = await asyncio.gather(*(settle_shard(e, n, day) for n, e in enumerate(engines)))
            elapsed = time.perf_counter() - t0
            settled = sum(r.executions for r in results)
            assert settled == fills, (settled, fills)
            per_fill = elapsed / fills
            baseline = baseline or per_fill
            print(json.dumps({
                "bench": "settlement", "fills": fills, "shards": SHARDS, "accounts": n_accounts * SHARDS,
                "settle_s": round(elapsed, 3), "fills_per_s": round(fills / elapsed),
                "us_per_fill": round(per_fill * 1e6, 2),
                "vs_25k_per_fill": round(per_fill / baseline, 2),  # ~1.0 = linear
                "seed_s": round(seeded, 2)}), flush=True)
    finally:
        for e in engines:
            await e.dispose()
        for u in urls:
            drop_database(u)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=500, help="customer accounts per shard")
    asyncio.run(main(ap.parse_args().accounts))
