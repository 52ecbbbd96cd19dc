"""1-minute bars: equal to a recomputation from the raw trades (property + through Postgres),
and served by the REST API with the latest quote and trade."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from api.app import create_app
from db.accounts import OpenedAccount
from db.engines import make_engine
from domain.universe import known_symbols
from marketdata.bars import MINUTE_NS, TIMEFRAMES, BarAcc, recompute, rollup
from marketdata.ingest import Ingest
from sherwood.settings import Settings
from tests.marketdata.helpers import q, tr
from tests.owner import owner_engine

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999.99"), places=2)
trades = st.lists(st.tuples(st.sampled_from(["AAPL", "MSFT"]), st.integers(0, 3 * MINUTE_NS - 1), prices,
                            st.integers(1, 10_000)), min_size=1, max_size=60)


@given(trades, st.lists(st.integers(0, 59), max_size=5))
@settings(max_examples=200, deadline=None)
def test_merged_deltas_equal_recomputation(ts: list[tuple[str, int, Decimal, int]], cuts: list[int]) -> None:
    """However the trades are split into flushes (deltas merged like the Postgres upsert does),
    the bar is the recomputation from the raw trades."""
    ts = sorted(ts, key=lambda x: x[1])
    bounds = sorted({0, len(ts), *[c for c in cuts if c < len(ts)]})
    stored: dict[tuple[str, int], BarAcc] = {}
    for a, b in itertools.pairwise(bounds):
        delta: dict[tuple[str, int], BarAcc] = {}
        for sym, t, p, s in ts[a:b]:
            key = (sym, t - t % MINUTE_NS)
            if key in delta:
                delta[key].add(p, s)
            else:
                delta[key] = BarAcc.first(p, s)
        for key, d in delta.items():
            if key in stored:
                stored[key].merge(d)
            else:
                stored[key] = d
    assert stored == recompute(ts)


@pytest.fixture
async def md_app(migrated: Settings, md_db: str, prefix: str) -> AsyncIterator[FastAPI]:
    app = create_app(migrated.model_copy(update={"redis_prefix": prefix}))
    async with app.router.lifespan_context(app):
        yield app
    engine = getattr(app.state, "marketdata_engine", None)
    if engine is not None:
        await engine.dispose()


async def test_bars_in_postgres_equal_recomputation_and_rest(
        migrated: Settings, md_db: str, prefix: str, md_app: FastAPI, account: OpenedAccount) -> None:
    assert migrated.redis_url
    engine = make_engine(md_db, pool_size=1, max_overflow=1)
    syms = ["ZAAA", "ZAAB"]  # synthetic symbols: nobody else writes their bars
    async with owner_engine(migrated, md_db) as owner, owner.begin() as conn:  # bars: the owner's
        for table in ("bars_1min", *TIMEFRAMES):
            await conn.execute(text(f"DELETE FROM {table} WHERE symbol = ANY(:s)"), {"s": syms})
    ing = Ingest(migrated.redis_url, prefix, known=known_symbols(), engine=engine, bar_flush_s=3600,
                 max_tick_age_s=400, bar_grace_s=0, max_jump=10)
    ing.trades_log = []
    try:
        await ing.start()
        base = time.time_ns() - 3 * MINUTE_NS
        import random

        rng = random.Random(7)
        for batch in range(6):
            lines = []
            for k in range(50):
                t = base + (batch * 50 + k) * (3 * MINUTE_NS // 300)
                sym = syms[k % 2]
                lines.append(tr(sym, f"{rng.randint(1000, 1100) / 100:.2f}", rng.randint(1, 500), t=t,
                                i=batch * 100 + k))
            await ing.process(lines)
            await ing.flush_bars()  # deltas merged by the upsert, several per minute
        await ing.process([q("ZAAA", "10.50", "10.52"), tr("ZAAA", "10.51", 7)])
        await ing.flush_bars(final_all=True)
        await ing.sync()
        assert ing.accepted["bars"] >= 6
        expected = recompute(ing.trades_log)
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT symbol, t, o, h, l, c, v, n, pv, vw FROM bars_1min WHERE symbol = ANY(:s)"),
                {"s": syms})).mappings().all()
        got = {(r["symbol"], int(r["t"].timestamp()) * 10**9): r for r in rows}
        assert set(got) == set(expected)
        for key, b in expected.items():
            r = got[key]
            assert tuple(r[k] for k in ("o", "h", "l", "c", "v", "n", "pv")) == (
                b.o, b.h, b.l, b.c, b.v, b.n, b.pv)
            assert abs(r["vw"] - b.vw) < Decimal("1e-12")
        # every longer timeframe, aggregated as ingest wrote, is the recomputation rolled up
        for table, bucket in TIMEFRAMES.items():
            async with engine.connect() as conn:
                rows = (await conn.execute(text(
                    f"SELECT symbol, t, o, h, l, c, v, n, pv FROM {table} WHERE symbol = ANY(:s)"),
                    {"s": syms})).mappings().all()
            got = {(r["symbol"], int(r["t"].timestamp()) * 10**9): r for r in rows}
            want = rollup(expected, bucket)
            assert set(got) == set(want), table
            for key, b in want.items():
                assert tuple(got[key][k] for k in ("o", "h", "l", "c", "v", "n", "pv")) == (
                    b.o, b.h, b.l, b.c, b.v, b.n, b.pv), (table, key)
        # REST: bars, latest quote, latest trade
        headers = {"APCA-API-KEY-ID": account.credentials.key_id,
                   "APCA-API-SECRET-KEY": account.credentials.secret_key}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app),
                                     base_url="http://t", headers=headers) as client:
            r = await client.get("/v2/stocks/ZAAA/bars", params={"timeframe": "1Min", "limit": 2,
                                                                  "start": "2000-01-01T00:00:00Z"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["symbol"] == "ZAAA" and len(body["bars"]) == 2 and body["next_page_token"]
            first = expected[min(k for k in expected if k[0] == "ZAAA")]
            assert body["bars"][0]["o"] == float(first.o) and body["bars"][0]["n"] == first.n
            assert set(body["bars"][0]) == {"t", "o", "h", "l", "c", "v", "n", "vw"}
            r2 = await client.get("/v2/stocks/ZAAA/bars", params={"page_token": body["next_page_token"],
                                                                   "start": "2000-01-01T00:00:00Z"})
            assert r2.status_code == 200 and r2.json()["bars"][0]["t"] > body["bars"][-1]["t"]
            r = await client.get("/v2/stocks/ZAAA/quotes/latest")
            assert r.status_code == 200, r.text
            assert r.json()["quote"]["bp"] == 10.50 and r.json()["quote"]["ap"] == 10.52
            r = await client.get("/v2/stocks/ZAAA/trades/latest")
            assert r.status_code == 200 and r.json()["trade"]["p"] == 10.51
            assert (await client.get("/v2/stocks/ZZZZ/quotes/latest")).status_code == 404
            assert (await client.get("/v2/stocks/ZAAA/bars", params={"timeframe": "2Day"})).status_code == 422
            r = await client.get("/ops/marketdata/ingest")  # a customer key: not for ops
            assert r.status_code == 403 and r.json()["reason"] == "forbidden", r.text
            from tests.stack import ops_headers

            r = await client.get("/ops/marketdata/ingest",
                                 headers=await ops_headers(md_app.state.sherwood.router, "read"))
            assert r.status_code == 200 and r.json()["accepted"]["trades"] == len(ing.trades_log)
            assert (await client.get("/v2/stocks/ZAAA/quotes/latest", headers={
                "APCA-API-SECRET-KEY": "nope"})).status_code == 401
    finally:
        await ing.close()
        await engine.dispose()
