"""The chart of accounts and the posting templates of the ledger (pure: no I/O).

A ledger transaction is a set of signed entries under one id; per currency they sum to zero.
Customer accounts (``cash``, ``cash_held``, ``cash_unsettled``, ``shares:SYM``, ``shares_held:SYM``,
``shares_unsettled:SYM``) never go below zero; house accounts (``bank``, ``custody:SYM``,
``clearing_cash``, ``clearing_shares:SYM``, ``ach_provisional``, ``fees``) are signed freely.

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
HOUSE_CASH = frozenset({"bank", "clearing_cash", "ach_provisional", "fees"})
HOUSE_SHARES = frozenset({"custody", "clearing_shares"})

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


def valid_symbol(symbol: str) -> bool:
    return bool(_SYMBOL.match(symbol))


@dataclass(frozen=True, order=True)
class AccountRef:
    """One ledger account: ``owner`` is the customer account id, or None for a house account."""

    owner: uuid.UUID | None
    name: str

    def __post_init__(self) -> None:
        base, _, sym = self.name.partition(":")
        customer = self.owner is not None
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
    txn_id: str, account_id: uuid.UUID, amount: object, *, from_unsettled: object = 0
) -> LedgerTxn:
    """Hold cash for a buy. ``from_unsettled`` of it comes out of unsettled sale proceeds (which
    count toward buying power), the rest out of ``cash``."""
    amt = positive_amount(amount, USD)
    unsettled = check_scale(parse_decimal(from_unsettled, field="from_unsettled"), USD)
    if unsettled < 0 or unsettled > amt:
        raise InvalidAmount("from_unsettled must be between 0 and the amount held")
    if unsettled == 0:
        return _two(txn_id, "hold_cash", customer(account_id, "cash"),
                    customer(account_id, "cash_held"), amt, account_id=account_id)
    entries = [Entry.of(customer(account_id, "cash_unsettled"), -unsettled),
               Entry.of(customer(account_id, "cash_held"), amt)]
    if amt > unsettled:
        entries.append(Entry.of(customer(account_id, "cash"), -(amt - unsettled)))
    return LedgerTxn.build(txn_id, "hold_cash", entries, account_id=account_id)


def release_cash(txn_id: str, account_id: uuid.UUID, amount: object) -> LedgerTxn:
    amt = positive_amount(amount, USD)
    return _two(txn_id, "release_cash", customer(account_id, "cash_held"),
                customer(account_id, "cash"), amt, account_id=account_id)


def hold_shares(
    txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, *, from_unsettled: object = 0
) -> LedgerTxn:
    """Hold shares for a sell. ``from_unsettled`` of them are shares bought but not yet settled
    (they may be sold: the sale settles on the same cycle), the rest come out of ``shares``."""
    q = positive_amount(qty, symbol, field="qty")
    unsettled = check_scale(parse_decimal(from_unsettled, field="from_unsettled"), symbol)
    if unsettled < 0 or unsettled > q:
        raise InvalidAmount("from_unsettled must be between 0 and the quantity held")
    if unsettled == 0:
        return _two(txn_id, "hold_shares", customer(account_id, f"shares:{symbol}"),
                    customer(account_id, f"shares_held:{symbol}"), q, account_id=account_id)
    entries = [Entry.of(customer(account_id, f"shares_unsettled:{symbol}"), -unsettled),
               Entry.of(customer(account_id, f"shares_held:{symbol}"), q)]
    if q > unsettled:
        entries.append(Entry.of(customer(account_id, f"shares:{symbol}"), -(q - unsettled)))
    return LedgerTxn.build(txn_id, "hold_shares", entries, account_id=account_id)


def release_shares(txn_id: str, account_id: uuid.UUID, symbol: str, qty: object) -> LedgerTxn:
    q = positive_amount(qty, symbol, field="qty")
    return _two(txn_id, "release_shares", customer(account_id, f"shares_held:{symbol}"),
                customer(account_id, f"shares:{symbol}"), q, account_id=account_id)


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


def sell_fill(txn_id: str, account_id: uuid.UUID, symbol: str, qty: object, price: object) -> LedgerTxn:
    """One (partial) sell fill: held shares go to clearing; clearing owes unsettled cash."""
    q = positive_amount(qty, symbol, field="qty")
    p = positive_amount(price, USD, field="price")
    v = fill_value(q, p)
    entries = [
        Entry.of(customer(account_id, f"shares_held:{symbol}"), -q),
        Entry.of(house(f"clearing_shares:{symbol}"), q),
        Entry.of(house("clearing_cash"), -v),
        Entry.of(customer(account_id, "cash_unsettled"), v),
    ]
    return LedgerTxn.build(txn_id, "sell_fill", entries, account_id=account_id,
                           memo={"symbol": symbol, "qty": str(q), "price": str(p)})


def settle_customer(
    txn_id: str, account_id: uuid.UUID, *, cash: object = 0, shares: Mapping[str, object] | None = None
) -> LedgerTxn:
    """T+1 for one customer: unsettled proceeds -> cash, unsettled shares -> shares."""
    entries: list[Entry] = []
    c = parse_decimal(cash, field="cash")
    if c < 0:
        raise InvalidAmount("settled cash must not be negative")
    if c:
        c = check_scale(c, USD)
        entries += [Entry.of(customer(account_id, "cash_unsettled"), -c),
                    Entry.of(customer(account_id, "cash"), c)]
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
