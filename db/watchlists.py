"""Watchlists on the account's shard (table ``watchlists``, shard migration 0012).

What it does: :class:`WatchlistStore` reads an account's lists, and writes each change in one
transaction under a per-account advisory lock (so two concurrent creates cannot both pass the
count limit): load the account's lists and which of the requested symbols the ``assets`` table
knows, ask :mod:`domain.watchlists`, write its answer. A list is found by id or by name, always
within the account: another account's list is simply not found (``None``).

What it deliberately does not do: decide anything (the rules are :mod:`domain.watchlists`),
shape responses (the API service), or keep an audit trail (a watchlist is a preference, not a
record of money).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engines import reading
from domain import watchlists as rules
from domain.watchlists import WatchlistLimits

_COLS = "id, account_id, name, symbols, created_at, updated_at"


@dataclass(frozen=True)
class WatchlistRow:
    id: uuid.UUID
    account_id: uuid.UUID
    name: str
    symbols: list[str]
    created_at: datetime
    updated_at: datetime


def _row(r: Any) -> WatchlistRow:
    return WatchlistRow(r.id, r.account_id, r.name, list(r.symbols), r.created_at, r.updated_at)


@dataclass(frozen=True)
class Ref:
    """A list of the account, by id or by name."""

    id: uuid.UUID | None = None
    name: str | None = None


class WatchlistStore:
    def __init__(self, engine: AsyncEngine, account_id: uuid.UUID, limits: WatchlistLimits) -> None:
        self.engine = engine
        self.account_id = account_id
        self.limits = limits

    async def all(self) -> list[WatchlistRow]:
        async with reading(self.engine) as conn:
            rows = (await conn.execute(text(
                f"SELECT {_COLS} FROM watchlists WHERE account_id = :a ORDER BY created_at, id"),
                {"a": self.account_id})).all()
        return [_row(r) for r in rows]

    async def get(self, ref: Ref) -> WatchlistRow | None:
        async with reading(self.engine) as conn:
            return await self._find(conn, ref)

    async def _find(self, conn: AsyncConnection, ref: Ref, *, lock: bool = False) -> WatchlistRow | None:
        col, val = ("id", ref.id) if ref.id is not None else ("name", ref.name)
        r = (await conn.execute(text(
            f"SELECT {_COLS} FROM watchlists WHERE account_id = :a AND {col} = :v"
            + (" FOR UPDATE" if lock else "")), {"a": self.account_id, "v": val})).one_or_none()
        return _row(r) if r is not None else None

    async def _lock(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                           {"k": f"watchlists:{self.account_id}"})

    @staticmethod
    async def _known(conn: AsyncConnection, symbols: Sequence[object]) -> set[str]:
        wanted = rules.symbols_needed(symbols)
        if not wanted:
            return set()
        rows = (await conn.execute(text("SELECT symbol FROM assets WHERE symbol = ANY(:s)"),
                                   {"s": wanted})).scalars().all()
        return set(rows)

    async def create(self, name: object, symbols: Sequence[object]) -> WatchlistRow:
        async with self.engine.begin() as conn:
            await self._lock(conn)
            names = set((await conn.execute(text("SELECT name FROM watchlists WHERE account_id = :a"),
                                            {"a": self.account_id})).scalars().all())
            n, syms = rules.decide_create(names, name, symbols, await self._known(conn, symbols),
                                          self.limits)
            r = (await conn.execute(text(
                f"INSERT INTO watchlists (id, account_id, name, symbols) VALUES (:id, :a, :n, :s) "
                f"RETURNING {_COLS}"), {"id": uuid.uuid4(), "a": self.account_id, "n": n, "s": syms})).one()
        return _row(r)

    async def _change(self, ref: Ref,
                      decide: Callable[[AsyncConnection, WatchlistRow], Any]) -> WatchlistRow | None:
        async with self.engine.begin() as conn:
            await self._lock(conn)
            cur = await self._find(conn, ref, lock=True)
            if cur is None:
                return None
            n, syms = await decide(conn, cur)
            r = (await conn.execute(text(
                f"UPDATE watchlists SET name = :n, symbols = :s, updated_at = clock_timestamp() "
                f"WHERE id = :id RETURNING {_COLS}"), {"id": cur.id, "n": n, "s": syms})).one()
        return _row(r)

    async def update(self, ref: Ref, name: object | None,
                     symbols: Sequence[object] | None) -> WatchlistRow | None:
        async def decide(conn: AsyncConnection, cur: WatchlistRow) -> tuple[str, list[str]]:
            others = set((await conn.execute(text(
                "SELECT name FROM watchlists WHERE account_id = :a AND id <> :id"),
                {"a": self.account_id, "id": cur.id})).scalars().all())
            known = await self._known(conn, symbols) if symbols is not None else set()
            return rules.decide_update(others, (cur.name, cur.symbols), name, symbols, known, self.limits)

        return await self._change(ref, decide)

    async def add(self, ref: Ref, symbol: object) -> WatchlistRow | None:
        async def decide(conn: AsyncConnection, cur: WatchlistRow) -> tuple[str, list[str]]:
            return cur.name, rules.decide_add(cur.symbols, symbol, await self._known(conn, [symbol]),
                                              self.limits)

        return await self._change(ref, decide)

    async def remove(self, ref: Ref, symbol: str) -> WatchlistRow | None:
        """The list without ``symbol``; ``None`` if there is no such list. Raises ``LookupError``
        when the symbol is not in it (nothing changed)."""
        async def decide(conn: AsyncConnection, cur: WatchlistRow) -> tuple[str, list[str]]:
            s = symbol.upper()
            if s not in cur.symbols:
                raise LookupError(s)
            return cur.name, [x for x in cur.symbols if x != s]

        return await self._change(ref, decide)

    async def delete(self, ref: Ref) -> bool:
        col, val = ("id", ref.id) if ref.id is not None else ("name", ref.name)
        async with self.engine.begin() as conn:
            n = (await conn.execute(text(
                f"DELETE FROM watchlists WHERE account_id = :a AND {col} = :v"),
                {"a": self.account_id, "v": val})).rowcount
        return bool(n)

    @staticmethod
    async def assets(conn: AsyncConnection, symbols: list[str]) -> dict[str, Any]:
        """The asset rows of ``symbols`` (for responses), by symbol."""
        rows = (await conn.execute(text("SELECT * FROM assets WHERE symbol = ANY(:s)"),
                                   {"s": symbols})).mappings().all()
        return {r["symbol"]: r for r in rows}
