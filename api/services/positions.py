"""Positions of one account, read from its shard, valued at the latest quote.

- ``qty`` is exact, from the ledger: ``shares + shares_held + shares_unsettled``;
  ``qty_available`` is ``shares + shares_unsettled``: qty less what open sell orders hold
  (a sell may hold bought-but-unsettled shares, :func:`domain.ledger.hold_shares`).
- ``avg_entry_price`` / ``cost_basis``: average-cost method over the account's fills
  (:mod:`domain.positions`), in booking order.
- ``current_price``: the latest **bid** from :class:`~marketdata.quotes.LatestQuotes` (a long
  position is worth what selling it fetches now: the conservative mark, never the ask or the mid);
  with no usable quote, the last fill price of the symbol in this account (``price_source`` says
  which). Market value, unrealized P/L and P/L% follow from it.
- ``lastday_price``: the symbol's closing price of the latest session before today that the back
  office snapshotted (``closing_prices``); ``change_today`` and ``unrealized_intraday_pl(pc)``:
  the current price against it, for the shares held now (None without a close).

Balances and fills are read in one REPEATABLE READ snapshot, so a fill booked meanwhile can
never show in one and not the other. Quotes are advisory: Redis down only means last-fill marks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from api.errors import ApiError
from api.schemas import PositionOut
from db.equity import closing_prices_before
from db.router import ShardRouter
from domain.alpaca import position_object
from domain.assets import ASSETS, Asset, get_asset
from domain.calendar import trade_date
from domain.money import plain
from domain.positions import (
    CostBasis,
    Fill,
    PositionFigures,
    Split,
    average_cost,
    cost_bases,
    day_change,
    position_figures,
    valuation_price,
)
from marketdata.quotes import LatestQuotes

ZERO = Decimal(0)
_SHARE_ACCOUNTS = ("shares", "shares_held", "shares_unsettled")


@dataclass(frozen=True)
class Holding:
    """The raw facts of one position: ledger quantities and the fills' cost basis."""

    symbol: str
    shares: Decimal
    held: Decimal
    unsettled: Decimal
    basis: CostBasis
    exchange: str | None
    asset_id: str | None
    lastday_price: Decimal | None = None  # the previous session's closing price

    @property
    def qty(self) -> Decimal:
        return self.shares + self.held + self.unsettled


async def holdings(
    router: ShardRouter, account_id: uuid.UUID, symbol: str | None = None
) -> dict[str, Holding]:
    """Every nonzero share position of the account (or just ``symbol``), by symbol."""
    shard = await router.shard_for(account_id)
    engine = router.engine(shard)
    sym_filter = "" if symbol is None else " AND split_part(la.name, ':', 2) = :sym"
    # its own begin() below ends it with COMMIT (see db.engines.reading)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            balances = (await conn.execute(
                text(
                    "SELECT split_part(la.name, ':', 1) AS kind, split_part(la.name, ':', 2) AS symbol, "
                    "coalesce(sum(b.balance), 0) AS balance FROM ledger_accounts la "
                    "JOIN balances b ON b.ledger_account_id = la.id "
                    "WHERE la.owner_id = :a AND split_part(la.name, ':', 1) = ANY(:kinds)"
                    f"{sym_filter} GROUP BY la.name"
                ),
                {"a": account_id, "kinds": list(_SHARE_ACCOUNTS), "sym": symbol},
            )).all()
            # symbol changes applied to the account: the old symbol's fills count for the new one
            renamed = {r.symbol: (r.new_symbol, r.at) for r in (await conn.execute(text(
                "SELECT a.symbol, c.new_symbol, a.applied_at AS at FROM corporate_action_applications a "
                "JOIN corporate_actions c ON c.id = a.announcement_id WHERE a.account_id = :a "
                "AND c.ca_type = 'symbol_change'"), {"a": account_id})).all()}
            fills = (await conn.execute(
                text(
                    # via orders: (account_id, created_at) is indexed there, executions by order_id
                    # a fill by the firm moved its booked value (a fraction to the cent, a
                    # notional order its notional): that is what the shares cost
                    "SELECT e.symbol, e.side, e.qty, e.price, e.raw->>'value' AS value, "
                    "coalesce(lt.created_at, e.received_at) AS at FROM orders o "
                    "JOIN executions e ON e.order_id = o.id "
                    "LEFT JOIN ledger_transactions lt ON lt.id = e.ledger_txn_id "
                    "WHERE o.account_id = :a AND e.qty > 0 AND e.price IS NOT NULL"
                    + ("" if symbol is None else " AND e.symbol = ANY(:syms)")
                    + " ORDER BY coalesce(lt.created_at, e.received_at), e.received_at, e.venue, e.exec_id"
                ),
                {"a": account_id, "syms": [symbol, *(o for o, (n, _) in renamed.items() if n == symbol)]},
            )).all()
            # splits (and their cash in lieu) applied to the account, in the fills' timeline
            splits = (await conn.execute(text(
                "SELECT a.symbol, a.applied_at AS at, a.qty, a.new_qty, a.cash, c.new_rate, "
                "c.old_rate FROM corporate_action_applications a JOIN corporate_actions c "
                "ON c.id = a.announcement_id WHERE a.account_id = :a AND c.ca_type = 'split'"
                + ("" if symbol is None else " AND a.symbol = :sym")),
                {"a": account_id, "sym": symbol})).all()
            lastday = await closing_prices_before(
                conn, sorted({r.symbol for r in balances}), trade_date(datetime.now(UTC)))
            assets = (await conn.execute(
                text("SELECT symbol, id, exchange FROM assets WHERE symbol = ANY(:s)"),
                {"s": sorted({r.symbol for r in balances})},
            )).all()
    qty: dict[str, dict[str, Decimal]] = {}
    for r in balances:
        qty.setdefault(r.symbol, {})[r.kind] = plain(Decimal(r.balance))
    bases = cost_bases(
        ((f.at, f.symbol, Fill(f.side, Decimal(f.qty), Decimal(f.price),
                               None if f.value is None else Decimal(f.value))) for f in fills),
        ((sp.at, sp.symbol, Split(Decimal(sp.new_rate), Decimal(sp.old_rate), Decimal(sp.qty),
                                  Decimal(sp.new_qty), Decimal(sp.cash))) for sp in splits),
        renamed)
    meta: dict[str, tuple[str | None, str | None]] = {a.symbol: (str(a.id), a.exchange) for a in assets}
    out: dict[str, Holding] = {}
    for sym, parts in sorted(qty.items()):
        asset_id, exchange = meta.get(sym, (None, None))
        h = Holding(sym, parts.get("shares", ZERO), parts.get("shares_held", ZERO),
                    parts.get("shares_unsettled", ZERO), bases.get(sym) or average_cost([]),
                    exchange, asset_id, lastday.get(sym))
        if h.qty != 0:
            out[sym] = h
    return out


def _asset_fields(h: Holding) -> tuple[str, str]:
    """(asset_id, exchange): the shard's asset row, else the seeded universe."""
    known: Asset | None = get_asset(h.symbol)
    asset_id = h.asset_id or (str(known.id) if known else str(uuid.uuid5(uuid.NAMESPACE_URL, h.symbol)))
    exchange = h.exchange or (known.exchange if known else "OTC")
    return asset_id, exchange


def position_out(h: Holding, fig: PositionFigures, source: str) -> PositionOut:
    asset_id, exchange = _asset_fields(h)
    return PositionOut(**position_object(
        symbol=h.symbol, asset_id=asset_id, exchange=exchange, shares=h.shares, held=h.held,
        unsettled=h.unsettled, figures=fig, price_source=source,
        day=day_change(h.qty, fig.current_price, h.lastday_price)))


async def _valued(
    router: ShardRouter, account_id: uuid.UUID, quotes: LatestQuotes, symbol: str | None = None
) -> list[tuple[Holding, PositionFigures, str]]:
    hs = await holdings(router, account_id, symbol)
    latest = await quotes.get_many(list(hs))
    out = []
    for sym, h in hs.items():
        q = latest.get(sym)
        bid = q.bid if q is not None else None
        price = valuation_price(bid, h.basis.last_price)
        source = "none" if price is None else ("bid" if price == bid else "last_fill")
        out.append((h, position_figures(h.qty, h.basis, price), source))
    return out


async def list_positions(
    router: ShardRouter, account_id: uuid.UUID, quotes: LatestQuotes
) -> list[PositionOut]:
    """Every open position of the account, by symbol."""
    return [position_out(h, fig, src) for h, fig, src in await _valued(router, account_id, quotes)]


async def get_position(
    router: ShardRouter, account_id: uuid.UUID, symbol: str, quotes: LatestQuotes
) -> PositionOut:
    """One open position (by symbol or asset id); 404 if the account holds none."""
    sym = resolve_symbol(symbol)
    found = await _valued(router, account_id, quotes, sym)
    if not found:
        raise no_position(sym)
    return position_out(*found[0])


def resolve_symbol(symbol_or_asset_id: str) -> str:
    """The symbol a path parameter names: an asset id of the universe, else the symbol itself
    (upper case)."""
    sym = symbol_or_asset_id.strip().upper()
    try:
        asset_id = uuid.UUID(symbol_or_asset_id.strip())
    except ValueError:
        return sym
    return next((a.symbol for a in ASSETS if a.id == asset_id), sym)


def no_position(symbol: str) -> ApiError:
    return ApiError(404, "position_not_found", f"position does not exist: {symbol}", code=40410000)


async def long_market_values(
    router: ShardRouter, account_id: uuid.UUID, quotes: LatestQuotes
) -> dict[str, Decimal]:
    """Market value per symbol of the account's long positions (same marks as GET /v2/positions),
    for :func:`domain.account.account_figures` (``equity = cash + long_market_value``). A position
    with no price at all (no quote, never filled) is left out (valued at 0)."""
    return {h.symbol: fig.market_value for h, fig, _ in await _valued(router, account_id, quotes)
            if fig.market_value is not None}
