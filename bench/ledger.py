"""Ledger throughput for the buy cycle (hold -> fill -> release) on one shard.

Every writer has its own customer account and all of them book fills against the same house
clearing accounts. Baseline, in the same run and database server: a bare double-entry insert
(one transaction row, two entry rows) plus two balance updates per transaction, with no checks,
where one of the two balances is a single shared house row.

Then the same buy cycle in a shard that holds more and more other ledger accounts (``--population``,
20,000 and 200,000 by default: house-like accounts bulk-inserted, statistics refreshed), against
the same cycle in the shard as it was (``at_scale``): a posting looks up every account it names,
and that must cost the same however many customers the shard holds.

Prints one JSON line per (kind, writers). Run: ``python -m bench.ledger [--seconds 5]``.
Uses SHERWOOD_POSTGRES_URL (or a running ``sherwood dev``) and a scratch database it drops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engines import make_engine
from db.ledger import Ledger
from db.migrate import drop_database, upgrade
from domain import ledger as rules
from sherwood.settings import Settings

BASELINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_txn (id text PRIMARY KEY, created_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_entry (id bigserial PRIMARY KEY, txn_id text, account text,
                                        amount numeric(38,10));
CREATE TABLE IF NOT EXISTS bench_balance (account text PRIMARY KEY, balance numeric(38,10));
"""


async def open_accounts(engine: AsyncEngine, n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    async with engine.begin() as conn:
        for a in ids:
            await conn.execute(
                text("INSERT INTO accounts (id, account_number, account_type) VALUES (:i, :n, 'cash')"),
                {"i": a, "n": f"B{a.hex[:12]}"})
    return ids


async def ours(engine: AsyncEngine, writers: int, seconds: float) -> dict[str, float]:
    ledger = Ledger(engine)
    accounts = await open_accounts(engine, writers)
    for a in accounts:
        await ledger.deposit(f"bench:{a}:dep", a, "1000000000")
    stop = time.monotonic() + seconds
    count = 0

    async def writer(a: uuid.UUID) -> None:
        nonlocal count
        i = 0
        while time.monotonic() < stop:
            await ledger.hold_cash(f"{a}:{i}:h", a, "100")
            await ledger.post(rules.buy_fill(f"{a}:{i}:f", a, "AAPL", 1, "99.5"))
            await ledger.release_cash(f"{a}:{i}:r", a, "0.5")
            count += 3
            i += 1

    start = time.monotonic()
    await asyncio.gather(*(writer(a) for a in accounts))
    elapsed = time.monotonic() - start
    report = await ledger.reconcile()
    assert report.ok, report
    return {"txn_per_s": count / elapsed, "txns": count}


async def baseline(engine: AsyncEngine, writers: int, seconds: float) -> dict[str, float]:
    async with engine.begin() as conn:
        for stmt in BASELINE_SCHEMA.strip().split(";\n"):
            if stmt.strip():
                await conn.execute(text(stmt))
        await conn.execute(text("INSERT INTO bench_balance VALUES ('house', 0) ON CONFLICT DO NOTHING"))
        for w in range(writers):
            await conn.execute(text("INSERT INTO bench_balance VALUES (:a, 0) ON CONFLICT DO NOTHING"),
                               {"a": f"c{w}"})
    stop = time.monotonic() + seconds
    count = 0
    run = uuid.uuid4().hex[:8]

    async def writer(w: int) -> None:
        nonlocal count
        i = 0
        while time.monotonic() < stop:
            tid = f"{run}:{w}:{i}"
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO bench_txn (id) VALUES (:t)"), {"t": tid})
                await conn.execute(
                    text("INSERT INTO bench_entry (txn_id, account, amount) VALUES "
                         "(:t, :a, -100), (:t, 'house', 100)"), {"t": tid, "a": f"c{w}"})
                await conn.execute(text("UPDATE bench_balance SET balance = balance - 100 "
                                        "WHERE account = :a"), {"a": f"c{w}"})
                await conn.execute(text("UPDATE bench_balance SET balance = balance + 100 "
                                        "WHERE account = 'house'"))
            count += 1
            i += 1

    start = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return {"txn_per_s": count / (time.monotonic() - start), "txns": count}


async def populate(engine: AsyncEngine, total: int) -> int:
    """Bring ``ledger_accounts`` up to ``total`` rows or more (other accounts, no balance rows:
    only their number matters to a lookup); ANALYZE; returns the count."""
    async with engine.begin() as conn:
        have = (await conn.execute(text("SELECT count(*) FROM ledger_accounts"))).scalar_one()
        await conn.execute(text(
            "INSERT INTO ledger_accounts (owner_id, name, currency, non_negative) "
            "SELECT NULL, 'bench:population:' || n, 'USD', false "
            "FROM generate_series(CAST(:a AS int), CAST(:b AS int)) n"),
            {"a": have + 1, "b": total})
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE ledger_accounts"))
        await conn.commit()
        return int((await conn.execute(text("SELECT count(*) FROM ledger_accounts"))).scalar_one())


async def at_scale(url: str, populations: list[int], seconds: float, writers: int = 8) -> None:
    engine = make_engine(url, pool_size=writers, max_overflow=0)
    try:
        rates: list[float] = []  # the first: the shard as it was, the baseline of the others
        for total in [0, *populations]:
            count = await populate(engine, total)
            r = await ours(engine, writers, seconds)
            rates.append(r["txn_per_s"])
            print(json.dumps({"bench": "ledger_buy_cycle", "kind": "at_scale", "writers": writers,
                              "ledger_accounts": count, "txn_per_s": round(r["txn_per_s"], 1),
                              "txns": r["txns"],
                              "over_first": round(rates[-1] / rates[0], 3) if rates[0] else None}))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", default="1,8,32")
    parser.add_argument("--population", default="20000,200000",
                        help="ledger accounts in the shard for the at-scale runs ('' for none)")
    args = parser.parse_args()
    settings = Settings().resolved()
    url = settings.shard_url(0).rsplit("/", 1)[0] + f"/{settings.db_prefix}_bench_ledger"
    if "?" in settings.shard_url(0):
        raise SystemExit("bench: query parameters in the Postgres URL are not supported")
    drop_database(url)
    upgrade("shard", url)
    try:
        for writers in [int(w) for w in args.writers.split(",")]:
            engine = make_engine(url, pool_size=writers, max_overflow=0)
            try:
                base = await baseline(engine, writers, args.seconds)
                mine = await ours(engine, writers, args.seconds)
            finally:
                await engine.dispose()
            for kind, r in (("baseline", base), ("sherwood", mine)):
                print(json.dumps({"bench": "ledger_buy_cycle", "kind": kind, "writers": writers,
                                  "txn_per_s": round(r["txn_per_s"], 1), "txns": r["txns"]}))
            print(json.dumps({"bench": "ledger_buy_cycle", "kind": "ratio", "writers": writers,
                              "ours_over_baseline": round(float(
                                  Decimal(mine["txn_per_s"]) / Decimal(base["txn_per_s"])), 3)}))
        if args.population:
            await at_scale(url, [int(p) for p in args.population.split(",")], args.seconds)
    finally:
        drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
