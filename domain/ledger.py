"""The chart of accounts and the posting templates of the ledger (pure: no I/O).

A ledger transaction is a set of signed entries under one id; per currency they sum to zero.
Customer accounts (``cash``, ``cash_held``, ``cash_unsettled``, ``shares:SYM``, ``shares_held:SYM``,
``shares_unsettled:SYM``) never go below zero; house accounts (``bank``, ``custody:SYM``,
``clearing_cash``, ``clearing_shares:SYM``, ``ach_provisional``, ``fees``) are signed freely.

Unsettled sale proceeds are kept in lots, one customer account per settlement date:
``cash_unsettled@YYYY-MM-DD`` (:func:`proceeds_lot`). A sale credits the lot of its settlement
date, a buy may hold from lots (earliest first) and gives back to the same lots, and settlement
moves each lot into ``cash`` on its own date. ``cash_unsettled`` without a date is the pool that
held proceeds before lots existed; it is read and settled as a lot older than any other.

Templates build :class:`LedgerTxn` values; ``db.ledger`` posts them. Nothing here checks balances
(that needs the database, inside the writing transaction) or whether a symbol is listed.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from domain.errors import (
    InvalidAmount,
    UnbalancedTransaction,
    UnknownCurrency,
    UnknownLedgerAccount,
)
from domain.money import USD, check_scale, parse_decimal, positive_amount

CUSTOMER_CASH = frozenset({"cash", "cash_held", "cash_unsettled"})
CUSTOMER_SHARES = frozenset({"shares", "shares_held", "shares_unsettled"})
# dividend_receivable: what paying agents owe the firm for dividends credited to customers;
# reorg / reorg_cash: the street side of splits (shares) and their cash in lieu;
# inventory:SYM / inventory_cash: the firm's own position, from filling fractions of shares
# (domain.fractional); signed freely like every house account
HOUSE_CASH = frozenset({"bank", "clearing_cash", "ach_provisional", "fees", "dividend_receivable",
                        "reorg_cash", "inventory_cash"})
HOUSE_SHARES = frozenset({"custody", "clearing_shares", "reorg", "inventory"})

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


def valid_symbol(symbol: str) -> bool:
    return bool(_SYMBOL.match(symbol))


LOT = "@"
POOL = "cash_unsettled"  # proceeds booked before lots existed (no settlement date)
# where a hold comes from (keys of an order's ``hold_sources``): settled cash and provisional ACH
# credit are both in the ``cash`` account; proceeds lots are their own accounts; a sell holds
# settled shares, then unsettled ones
SETTLED_CASH = "cash"
PROVISIONAL = "provisional"
SETTLED_SHARES = "shares"
UNSETTLED_SHARES = "shares_unsettled"


def proceeds_lot(settles: date) -> str:
    """The customer account of unsettled sale proceeds settling on ``settles``."""
    return f"{POOL}{LOT}{settles.isoformat()}"


def _lot_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def lot_date(name: str) -> date | None:
    """The settlement date of a proceeds lot (None: the undated pool, or not a lot)."""
    base, at, lot = name.partition(LOT)
    return _lot_date(lot) if at and base == POOL else None


def is_proceeds(name: str) -> bool:
    """A customer account holding unsettled sale proceeds (a lot, or the old pool)."""
    return name == POOL or name.startswith(POOL + LOT)


def proceeds_lots(balances: Mapping[str, Decimal]) -> list[tuple[str, Decimal]]:
    """The account's unsettled proceeds with a positive balance, oldest first (the undated pool
    before every dated lot)."""
    lots = [(n, b) for n, b in balances.items() if is_proceeds(n) and b > 0]
    return sorted(lots, key=lambda nb: (lot_date(nb[0]) or date.min, nb[0]))


def unsettled_cash(balances: Mapping[str, Decimal]) -> Decimal:
    """Every unsettled sale proceed of the account (all lots and the pool)."""
    return sum((b for n, b in balances.items() if is_proceeds(n)), Decimal(0))


def source_account(source: str, symbol: str | None = None) -> str:
    """The ledger account a hold source names (``provisional`` money sits in ``cash``)."""
    if source in (SETTLED_CASH, PROVISIONAL):
        return "cash"
    if source in (SETTLED_SHARES, UNSETTLED_SHARES):
        assert symbol is not None
        return f"{source}:{symbol}"
    return source  # a proceeds lot, or the pool

@dataclass(frozen=True, order=True)
class AccountRef:
    """One ledger account: ``owner`` is the customer account id, or None for a house account."""

    owner: uuid.UUID | None
    name: str

    def __post_init__(self) -> None:
        base, _, sym = self.name.partition(":")
        customer = self.owner is not None
        base, at, lot = base.partition(LOT)
        if at and not (customer and base == "cash_unsettled" and not sym and _lot_date(lot)):
            raise UnknownLedgerAccount(f"{self.name!r} is not a ledger account (lots are "
                                       "cash_unsettled@YYYY-MM-DD)")
        cash_names, share_names = (
            (CUSTOMER_CASH, CUSTOMER_SHARES) if customer else (HOUSE_CASH, HOUSE_SHARES)
        )
        if base in cash_names and not sym:
            return
        if base in share_names and sym:
            if not valid_symbol(sym):
                raise UnknownCurrency(f"{sym!r} is not a valid symbol")
            return
        who = "customer" if customer else "house"
        raise UnknownLedgerAccount(f"{self.name!r} is not a {who} ledger account")

    @property
    def currency(self) -> str:
        _, _, sym = self.name.partition(":")
        return sym or USD

    @property
    def is_customer(self) -> bool:
        return self.owner is not None

    def __str__(self) -> str:
        return f"{self.owner or 'house'}:{self.name}"


def customer(account_id: uuid.UUID, name: str) -> AccountRef:
    return AccountRef(account_id, name)


def house(name: str) -> AccountRef:
    return AccountRef(None, name)


@dataclass(frozen=True)
class Entry:
    account: AccountRef
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, account: AccountRef, amount: object, currency: str | None = None) -> Entry:
        cur = currency or account.currency
        if cur != account.currency:
            raise UnknownCurrency(f"{account} holds {account.currency}, not {cur}")
        amt = parse_decimal(amount)
        if amt == 0:
            raise InvalidAmount(f"entry for {account}: amount must not be zero")
        return cls(account, check_scale(amt, cur), cur)


@dataclass(frozen=True)
class LedgerTxn:
    """A validated ledger transaction. Construct through :meth:`build` or a template."""

    id: str
    kind: str
    entries: tuple[Entry, ...]
    account_id: uuid.UUID | None = None
    allow_negative: bool = False
    memo: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        txn_id: str,
        kind: str,
        entries: Iterable[Entry],
        *,
        account_id: uuid.UUID | None = None,
        allow_negative: bool = False,
        memo: Mapping[str, str] | None = None,
    ) -> LedgerTxn:
        if not txn_id or len(txn_id) > 200:
            raise InvalidAmount("ledger transaction id must be 1..200 characters", code="invalid_txn_id")
        ents = tuple(entries)
        if len(ents) < 2:
            raise UnbalancedTransaction(f"{txn_id}: a transaction needs at least two entries")
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for e in ents:
            sums[e.currency] += e.amount
        bad = {c: s for c, s in sums.items() if s != 0}
        if bad:
            raise UnbalancedTransaction(f"{txn_id}: entries do not sum to zero: {bad}")
        return cls(txn_id, kind, ents, account_id, allow_negative, dict(memo or {}))

    def payload_hash(self) -> str:
        """Hash of what the transaction does (entries, kind, flags), independent of entry order."""
        canon = sorted(
            (str(e.account.owner or ""), e.account.name, e.currency, _canon(e.amount))
            for e in self.entries
        )
        body = json.dumps([self.kind, self.allow_negative, canon], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def reversed(self, txn_id: str, kind: str = "reversal") -> LedgerTxn:
        """The correcting transaction: every entry negated (entries are never edited)."""
        return LedgerTxn.build(
            txn_id,
            kind,
            (Entry(e.account, -e.amount, e.currency) for e in self.entries),
            account_id=self.account_id,
            allow_negative=True,
            memo={"reverses": self.id},
        )


def _canon(d: Decimal) -> str:
    n = d.normalize()
    return format(n, "f")


# --- templates -------------------------------------------------------------------------------

def _two(
    txn_id: str, kind: str, debit: AccountRef, credit: AccountRef, amount: Decimal, *,
    account_id: uuid.UUID, allow_negative: bool = False, memo: Mapping[str, str] | None = None,
) -> LedgerTxn:
    return LedgerTxn.build(
        txn_id, kind, [Entry.of(debit, -amount), Entry.of(credit, amount)],
        account_id=account_id, allow_negative=allow_negative, memo=memo,
    )


def deposit_provisional(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """ACH deposit credited at once: ach_provisional -> cash."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "deposit", house("ach_provisional"), customer(account_id, "cash"), amt,
                account_id=account_id)


def deposit_settled(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """The bank confirms the ACH: bank -> ach_provisional (house only; the customer is unchanged)."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "deposit_settle", house("bank"), house("ach_provisional"), amt,
                account_id=account_id)


def deposit_bounced(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """The ACH bounced: the provisional credit is reversed, even if that makes cash negative."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "deposit_bounce", customer(account_id, "cash"), house("ach_provisional"),
                amt, account_id=account_id, allow_negative=True)


def hold_cash(
    txn_id: str, account_id: uuid.UUID, amount: object, *, from_unsettled: object = 0,
    sources: Mapping[str, Decimal] | None = None,
) -> LedgerTxn:
    """Hold cash for a buy. ``sources``: how much comes from each source (see
    :func:`source_account`: settled cash, provisional ACH credit, proceeds lots); they sum to
    ``amount``. Without them, ``from_unsettled`` of it comes out of the undated proceeds pool and
    the rest out of ``cash``."""
    amt = positive_amount(amount, USD)
    if sources is None:
        unsettled = check_scale(parse_decimal(from_unsettled, field="from_unsettled"), USD)
        if unsettled < 0 or unsettled > amt:
            raise InvalidAmount("from_unsettled must be between 0 and the amount held")
        sources = {POOL: unsettled, SETTLED_CASH: amt - unsettled}
    return _from_sources(txn_id, "hold_cash", account_id, amt, sources, held="cash_held", to_held=True)


def release_cash(txn_id: str, account_id: uuid.UUID, amount: object, *,
                 to: Mapping[str, Decimal] | None = None) -> LedgerTxn:
    """Give held cash back: to each source what came from it (``to``), else all to ``cash``."""
    amt = positive_amount(amount, USD)
    return _from_sources(txn_id, "release_cash", account_id, amt, to or {SETTLED_CASH: amt},
                         held="cash_held", to_held=False)


def hold_shares(
    txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, *, from_unsettled: object = 0,
) -> LedgerTxn:
    """Hold shares for a sell. ``from_unsettled`` of them are shares bought but not yet settled
    (they may be sold: the sale settles on the same cycle), the rest come out of ``shares``."""
    q = positive_amount(qty, symbol, field="qty")
    unsettled = check_scale(parse_decimal(from_unsettled, field="from_unsettled"), symbol)
    if unsettled < 0 or unsettled > q:
        raise InvalidAmount("from_unsettled must be between 0 and the quantity held")
    return _from_sources(txn_id, "hold_shares", account_id, q,
                         {UNSETTLED_SHARES: unsettled, SETTLED_SHARES: q - unsettled},
                         held=f"shares_held:{symbol}", to_held=True, symbol=symbol)


def release_shares(txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, *,
                   to: Mapping[str, Decimal] | None = None) -> LedgerTxn:
    """Give held shares back: to each source what came from it (``to``), else all to ``shares``."""
    q = positive_amount(qty, symbol, field="qty")
    return _from_sources(txn_id, "release_shares", account_id, q, to or {SETTLED_SHARES: q},
                         held=f"shares_held:{symbol}", to_held=False, symbol=symbol)


def _from_sources(txn_id: str, kind: str, account_id: uuid.UUID, total: Decimal,
                  sources: Mapping[str, Decimal], *, held: str, to_held: bool,
                  symbol: str | None = None) -> LedgerTxn:
    """Move ``total`` between the ``held`` account and its sources (into ``held`` when
    ``to_held``, back to the sources otherwise); the parts must sum to ``total``."""
    parts = {k: v for k, v in sources.items() if v != 0}
    if any(v < 0 for v in parts.values()) or sum(parts.values(), Decimal(0)) != total:
        raise InvalidAmount(f"{txn_id}: the sources {dict(parts)} do not make up {total}")
    sign = -1 if to_held else 1
    by_account: dict[str, Decimal] = defaultdict(Decimal)
    for source, part in parts.items():
        by_account[source_account(source, symbol)] += part
    entries = [Entry.of(customer(account_id, name), sign * part) for name, part in by_account.items()]
    entries.append(Entry.of(customer(account_id, held), -sign * total))
    return LedgerTxn.build(txn_id, kind, entries, account_id=account_id)


def fill_value(qty: Decimal, price: Decimal) -> Decimal:
    """Cash value of a fill, exact (whole shares x a price of at most 4 decimals)."""
    return check_scale(qty * price, USD, field="fill value")


def buy_fill(
    txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, price: object, *, topup: object = 0
) -> LedgerTxn:
    """One (partial) buy fill: held cash pays clearing; clearing delivers unsettled shares.

    ``topup`` is extra cash moved from ``cash`` to ``cash_held`` first, when the venue filled
    above what was held (a market order beyond its collar). A venue fill is never refused, so
    such a fill may take ``cash`` below zero: the customer then owes the difference.
    """
    q = positive_amount(qty, symbol, field="qty")
    p = positive_amount(price, USD, field="price")
    v = fill_value(q, p)
    extra = parse_decimal(topup, field="topup")
    entries = []
    if extra > 0:
        extra = check_scale(extra, USD)
        entries += [Entry.of(customer(account_id, "cash"), -extra),
                    Entry.of(customer(account_id, "cash_held"), extra)]
    entries += [
        Entry.of(customer(account_id, "cash_held"), -v),
        Entry.of(house("clearing_cash"), v),
        Entry.of(house(f"clearing_shares:{symbol}"), -q),
        Entry.of(customer(account_id, f"shares_unsettled:{symbol}"), q),
    ]
    return LedgerTxn.build(txn_id, "buy_fill", entries, account_id=account_id,
                           allow_negative=extra > 0,
                           memo={"symbol": symbol, "qty": str(q), "price": str(p)})


def sell_fill(txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, price: object, *,
              settles: date | None = None) -> LedgerTxn:
    """One (partial) sell fill: held shares go to clearing; clearing owes unsettled cash, into
    the proceeds lot of the sale's settlement date (``settles``; None: the undated pool)."""
    q = positive_amount(qty, symbol, field="qty")
    p = positive_amount(price, USD, field="price")
    v = fill_value(q, p)
    entries = [
        Entry.of(customer(account_id, f"shares_held:{symbol}"), -q),
        Entry.of(house(f"clearing_shares:{symbol}"), q),
        Entry.of(house("clearing_cash"), -v),
        Entry.of(customer(account_id, proceeds_lot(settles) if settles else POOL), v),
    ]
    return LedgerTxn.build(txn_id, "sell_fill", entries, account_id=account_id,
                           memo={"symbol": symbol, "qty": str(q), "price": str(p)})


def house_fill(txn_id: str, account_id: uuid.UUID, symbol: str, side: str, qty: object,
               value: object, price: object, *, topup: object = 0,
               settles: date | None = None) -> LedgerTxn:
    """The firm fills (a fraction of) an order from its own inventory (``domain.fractional``):
    a buy's held cash pays ``inventory_cash`` and ``inventory:SYM`` delivers unsettled shares; a
    sell's held shares go to ``inventory:SYM`` and ``inventory_cash`` pays the proceeds lot of
    ``settles``. ``value`` is the cash that moves (not qty x price: a fraction is valued to the
    cent, a notional order at its notional); ``topup`` as in :func:`buy_fill`."""
    q = positive_amount(qty, symbol, field="qty")
    v = positive_amount(value, USD, field="value")
    p = positive_amount(price, USD, field="price")
    extra = parse_decimal(topup, field="topup")
    entries: list[Entry] = []
    if side == "buy":
        if extra > 0:
            entries += [Entry.of(customer(account_id, "cash"), -check_scale(extra, USD)),
                        Entry.of(customer(account_id, "cash_held"), check_scale(extra, USD))]
        entries += [Entry.of(customer(account_id, "cash_held"), -v), Entry.of(house("inventory_cash"), v),
                    Entry.of(house(f"inventory:{symbol}"), -q),
                    Entry.of(customer(account_id, f"shares_unsettled:{symbol}"), q)]
    else:
        entries += [Entry.of(customer(account_id, f"shares_held:{symbol}"), -q),
                    Entry.of(house(f"inventory:{symbol}"), q), Entry.of(house("inventory_cash"), -v),
                    Entry.of(customer(account_id, proceeds_lot(settles) if settles else POOL), v)]
    return LedgerTxn.build(txn_id, "house_fill", entries, account_id=account_id,
                           allow_negative=extra > 0,
                           memo={"symbol": symbol, "qty": str(q), "price": str(p), "side": side})


def inventory_transfer(txn_id: str, firm_account: uuid.UUID, symbol: str,
                       moves: Mapping[str, Decimal], *, kind: str = "inventory_transfer") -> LedgerTxn:
    """Move balances between the firm's inventory (``inventory_cash``, ``inventory:SYM``) and
    the firm's own brokerage account that trades its rebalance at a venue
    (``domain.fractional``): ``moves`` names each of that account's ledger accounts and what it
    receives (negative: what goes back to the inventory)."""
    entries: list[Entry] = []
    for name, amount in sorted(moves.items()):
        if not amount:
            continue
        ref = customer(firm_account, name)
        back = house("inventory_cash") if ref.currency == USD else house(f"inventory:{symbol}")
        entries += [Entry.of(ref, amount), Entry.of(back, -amount)]
    return LedgerTxn.build(txn_id, kind, entries, account_id=firm_account)


def settle_customer(
    txn_id: str, account_id: uuid.UUID, *, cash: object = 0, shares: Mapping[str, object] | None = None,
    lots: Mapping[str, Decimal] | None = None,
) -> LedgerTxn:
    """T+1 for one customer: unsettled proceeds -> cash (``lots``: each proceeds lot that
    settles, with what is left in it; ``cash``: from the undated pool), unsettled shares ->
    shares."""
    entries: list[Entry] = []
    c = parse_decimal(cash, field="cash")
    if c < 0:
        raise InvalidAmount("settled cash must not be negative")
    if c:
        c = check_scale(c, USD)
        entries += [Entry.of(customer(account_id, POOL), -c), Entry.of(customer(account_id, "cash"), c)]
    for lot, amount in sorted((lots or {}).items()):
        if amount < 0 or not is_proceeds(lot):
            raise InvalidAmount(f"{lot}: a settling lot must be a proceeds lot with a positive amount")
        if amount:
            entries += [Entry.of(customer(account_id, lot), -amount),
                        Entry.of(customer(account_id, "cash"), check_scale(amount, USD))]
    for sym, qty in sorted((shares or {}).items()):
        q = positive_amount(qty, sym, field=f"shares {sym}")
        entries += [Entry.of(customer(account_id, f"shares_unsettled:{sym}"), -q),
                    Entry.of(customer(account_id, f"shares:{sym}"), q)]
    return LedgerTxn.build(txn_id, "settle", entries, account_id=account_id)


def close_clearing(txn_id: str, *, cash: object = 0, shares: Mapping[str, object] | None = None) -> LedgerTxn:
    """House side of settlement: move netted clearing balances to bank and custody.

    ``cash`` and ``shares`` are the clearing balances being closed (signed as they stand in
    ``clearing_cash`` / ``clearing_shares:SYM``); the entries bring those back to zero.
    """
    entries: list[Entry] = []
    c = check_scale(parse_decimal(cash, field="cash"), USD)
    if c:
        entries += [Entry.of(house("clearing_cash"), -c), Entry.of(house("bank"), c)]
    for sym, qty in sorted((shares or {}).items()):
        q = check_scale(parse_decimal(qty, field=f"shares {sym}"), sym)
        if q:
            entries += [Entry.of(house(f"clearing_shares:{sym}"), -q),
                        Entry.of(house(f"custody:{sym}"), q)]
    return LedgerTxn.build(txn_id, "clearing_close", entries)


# --- back office: withdrawals (appended) ------------------------------------------------------

def withdrawal_hold(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """An ACH withdrawal is requested: cash -> cash_held until the bank confirms or fails it."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "withdrawal_hold", customer(account_id, "cash"),
                customer(account_id, "cash_held"), amt, account_id=account_id)


def withdrawal_complete(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """The bank sent the money out: cash_held -> bank."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "withdrawal_complete", customer(account_id, "cash_held"), house("bank"),
                amt, account_id=account_id)


def withdrawal_release(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    """The withdrawal failed: the hold goes back, cash_held -> cash."""
    amt = positive_amount(amount, USD)
    return _two(txn_id, "withdrawal_release", customer(account_id, "cash_held"),
                customer(account_id, "cash"), amt, account_id=account_id)
