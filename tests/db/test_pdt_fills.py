"""The fills the accept path reads for the day-trade rules (``db.risk._PDT_FILLS``: of each
symbol and day, the first buy and the last sell) give the same day-trade count and the same
"bought today" as every fill of the window would."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta

from db import sql
from db.risk import _PDT_FILLS
from db.router import ShardRouter
from domain.risk import Fill, day_trades
from tests.db.plans import rolled_back

TODAY = date(2026, 3, 13)
SINCE = date(2026, 3, 9)
ZERO, ONE, SIX = timedelta(0), timedelta(days=1), timedelta(days=6)  # today, in the window, before it


async def test_first_buy_and_last_sell_decide_as_every_fill_does(router: ShardRouter) -> None:
    rng = random.Random(20)
    async with rolled_back(router, 0) as conn:
        # shadows the shard's table for this transaction (pg_temp is searched first)
        await sql.execute(conn, """CREATE TEMP TABLE executions (
            account_id uuid, symbol text, side text, trade_date date, qty numeric,
            received_at timestamptz, exec_id text) ON COMMIT DROP""")
        for trial in range(80):
            account = uuid.uuid4()
            fills: list[tuple[str, str, date, datetime, str]] = []
            t0 = datetime(2026, 3, 1, tzinfo=UTC)
            for i in range(rng.randint(0, 16)):
                # same received_at now and then: the exec_id breaks the tie
                at = t0 + timedelta(seconds=rng.randint(0, 6))
                t0 = at
                fills.append((rng.choice("AB"), rng.choice(["buy", "sell"]),
                              TODAY - rng.choice([ZERO, ZERO, ONE, ONE, SIX]), at, f"x{i:02d}"))
            for symbol, side, day, at, exec_id in fills:
                await sql.execute(conn, """INSERT INTO executions VALUES
                    (:a, :s, :side, :d, :q, :at, :e)""",
                                  {"a": account, "s": symbol, "side": side, "d": day,
                                   "q": rng.choice([0, 1, 1, 1]), "at": at, "e": exec_id})
            every = [Fill(r["symbol"], r["side"], r["trade_date"], i) for i, r in enumerate(
                await sql.rows(conn, """SELECT * FROM executions WHERE account_id = :a
                                        AND qty > 0 AND trade_date >= :since
                                        ORDER BY received_at, exec_id""",
                               {"a": account, "since": SINCE}))]
            kept = [Fill(r["symbol"], r["side"], r["trade_date"], i) for i, r in enumerate(
                await sql.rows(conn, f"SELECT * FROM ({_PDT_FILLS}) f ORDER BY received_at, exec_id",
                               {"a": account, "since": SINCE}))]
            assert len(kept) <= len(every)
            assert day_trades(kept, SINCE) == day_trades(every, SINCE), (trial, fills)
            for symbol in "AB":
                assert any(f.symbol == symbol and f.side == "buy" and f.trade_date == TODAY
                           for f in kept) == any(
                    f.symbol == symbol and f.side == "buy" and f.trade_date == TODAY
                    for f in every), (trial, fills)
