"""Corporate actions: announcements, entitlements and their ledger templates. Pure.

- **Cash dividends**: holders of the symbol at the close of the session before the ex-date
  (T+1: a buyer on the ex-date settles after the record date) are entitled to ``qty x cash``
  per share, rounded down to the cent; on the payable date each is credited by one
  ledger transaction: house ``dividend_receivable`` (what the paying agent owes the firm) ->
  customer ``cash``. Its id is the announcement's and the account's: posted once, ever.
- **Splits** (forward and reverse, ``new_rate`` for ``old_rate``): on the ex-date every settled
  position becomes ``floor(qty x new / old)`` whole shares; the old shares that make no whole
  new share are paid in cash (cash in lieu) at the previous session's close per old share,
  rounded down to the cent. One transaction per account moves the share difference against the
  house ``reorg:<symbol>`` account and the cash from house ``reorg_cash``.

- **Symbol changes** (``new_symbol``), on the ex-date: every settled position moves from the
  old symbol's share account to the new one's (against house ``reorg:<symbol>`` on both sides);
  its cost basis and history carry over.

Mergers, spinoffs and stock dividends are refused with ``unsupported_corporate_action``.
Deliberately not here: reading positions, the clock.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

from domain.errors import DomainError
from domain.ledger import Entry, LedgerTxn, customer, house, valid_symbol
from domain.money import USD, Bounds, bounded_decimal

CENT = Decimal("0.01")
RATE_BOUNDS = Bounds(Decimal(10) ** 6, 0)  # split rates are whole numbers (2 for 1, 1 for 3)
CASH_BOUNDS = Bounds(Decimal(10) ** 4, 6)  # dividend per share, USD
MAX_ID = 64
TYPES = ("dividend", "split", "symbol_change")


class CorporateActionError(DomainError):
    code = "invalid_corporate_action"


@dataclass(frozen=True)
class Announcement:
    """One corporate action as announced (Alpaca's announcement shape, in short)."""

    id: str
    ca_type: str  # dividend | split | symbol_change
    symbol: str
    ex_date: date
    record_date: date | None = None
    payable_date: date | None = None
    cash: Decimal | None = None  # dividend per share
    old_rate: Decimal | None = None
    new_rate: Decimal | None = None
    new_symbol: str | None = None  # symbol_change: what the symbol becomes

    @property
    def sub_type(self) -> str:
        if self.ca_type == "dividend":
            return "cash"
        if self.ca_type == "symbol_change":
            return "symbol_change"
        assert self.old_rate is not None and self.new_rate is not None
        return "stock_split" if self.new_rate > self.old_rate else "reverse_split"

    def to_wire(self) -> dict[str, str | None]:
        return {"id": self.id, "ca_type": self.ca_type, "symbol": self.symbol,
                "ex_date": self.ex_date.isoformat(),
                "record_date": self.record_date.isoformat() if self.record_date else None,
                "payable_date": self.payable_date.isoformat() if self.payable_date else None,
                "cash": None if self.cash is None else str(self.cash),
                "old_rate": None if self.old_rate is None else str(self.old_rate),
                "new_rate": None if self.new_rate is None else str(self.new_rate),
                "new_symbol": self.new_symbol}


def _date(d: Mapping[str, object], name: str, required: bool = True) -> date | None:
    v = d.get(name)
    if v is None and not required:
        return None
    try:
        if not isinstance(v, str) or len(v) != 10:
            raise ValueError(v)
        return date.fromisoformat(v)
    except ValueError:
        raise CorporateActionError(f"{name} must be a date (YYYY-MM-DD)", code="invalid_date") from None


def parse_announcement(d: Mapping[str, object]) -> Announcement:
    """Validate one announcement from the source (bounded: every field checked before use)."""
    aid = str(d.get("id") or "")
    if not 0 < len(aid) <= MAX_ID or not aid.replace("-", "").replace("_", "").isalnum():
        raise CorporateActionError("id must be 1..64 letters, digits, - or _", code="invalid_id")
    ca_type = str(d.get("ca_type") or "")
    if ca_type not in TYPES:
        raise CorporateActionError(f"ca_type {ca_type[:20]!r} is not supported (dividend, split, "
                                   "symbol_change)",
                                   code="unsupported_corporate_action")
    symbol = str(d.get("symbol") or "")
    if not valid_symbol(symbol):
        raise CorporateActionError("symbol must be a ticker", code="invalid_symbol")
    ex = _date(d, "ex_date")
    assert ex is not None
    if ca_type == "dividend":
        pay = _date(d, "payable_date")
        assert pay is not None
        if pay < ex:
            raise CorporateActionError("payable_date is before ex_date", code="invalid_date")
        cash = bounded_decimal(d.get("cash"), CASH_BOUNDS, field="cash")
        return Announcement(aid, ca_type, symbol, ex, _date(d, "record_date", False), pay, cash=cash)
    if ca_type == "symbol_change":
        new_symbol = str(d.get("new_symbol") or "")
        if not valid_symbol(new_symbol) or new_symbol == symbol:
            raise CorporateActionError("new_symbol must be another ticker", code="invalid_new_symbol")
        return Announcement(aid, ca_type, symbol, ex, new_symbol=new_symbol)
    old = bounded_decimal(d.get("old_rate"), RATE_BOUNDS, field="old_rate")
    new = bounded_decimal(d.get("new_rate"), RATE_BOUNDS, field="new_rate")
    if old == new:
        raise CorporateActionError("a split changes the rate", code="invalid_rate")
    return Announcement(aid, ca_type, symbol, ex, _date(d, "record_date", False),
                        _date(d, "payable_date", False), old_rate=old, new_rate=new)


def dividend_credit(qty: Decimal, cash: Decimal) -> Decimal:
    """What ``qty`` shares receive: qty x cash per share, down to the cent (the firm keeps any
    fraction of a cent it receives)."""
    return (qty * cash).quantize(CENT, rounding=ROUND_DOWN)


def dividend_txn(ann: Announcement, account_id: uuid.UUID, qty: Decimal) -> LedgerTxn | None:
    """The payable date's credit to one holder of ``qty`` shares; None when it is below a cent."""
    assert ann.cash is not None
    amount = dividend_credit(qty, ann.cash)
    if amount <= 0:
        return None
    return LedgerTxn.build(
        f"div:{ann.id}:{account_id}", "dividend",
        [Entry.of(house("dividend_receivable"), -amount), Entry.of(customer(account_id, "cash"), amount)],
        account_id=account_id, memo={"announcement": ann.id, "symbol": ann.symbol, "qty": str(qty),
                                     "rate": str(ann.cash)})


@dataclass(frozen=True)
class SplitResult:
    old_qty: Decimal
    new_qty: Decimal  # whole shares after the split
    in_lieu_old: Decimal  # old shares paid in cash (to 9 places: 1/3 of a share is 0.333333333)
    cash_in_lieu: Decimal


def split_position(ann: Announcement, qty: Decimal, close: Decimal | None) -> SplitResult:
    """``qty`` old shares after the split: whole new shares, and cash for the old shares that make
    no whole new share, at ``close`` per old share (required when there is such a remainder)."""
    assert ann.old_rate is not None and ann.new_rate is not None
    ratio = Fraction(ann.new_rate) / Fraction(ann.old_rate)
    new = Decimal(math.floor(Fraction(qty) * ratio))
    left = Fraction(qty) - Fraction(new) / ratio  # exact: 1/3 of an old share stays 1/3
    if left and (close is None or close <= 0):
        raise CorporateActionError(f"no closing price of {ann.symbol} for the cash in lieu",
                                   code="no_closing_price")
    cash = Decimal(math.floor(left * Fraction(close) * 100)) / 100 if left and close else Decimal(0)
    in_lieu = Decimal(left.numerator) / Decimal(left.denominator)
    return SplitResult(qty, new, in_lieu.quantize(Decimal("1e-9"), rounding=ROUND_DOWN), cash)


def split_txn(ann: Announcement, account_id: uuid.UUID, result: SplitResult) -> LedgerTxn | None:
    """One account's split: its settled shares from old to new (against house ``reorg:<symbol>``),
    the cash in lieu from house ``reorg_cash``. None when nothing changes."""
    delta = result.new_qty - result.old_qty
    entries = []
    if delta:
        entries += [Entry.of(customer(account_id, f"shares:{ann.symbol}"), delta, ann.symbol),
                    Entry.of(house(f"reorg:{ann.symbol}"), -delta, ann.symbol)]
    if result.cash_in_lieu:
        entries += [Entry.of(house("reorg_cash"), -result.cash_in_lieu, USD),
                    Entry.of(customer(account_id, "cash"), result.cash_in_lieu, USD)]
    if not entries:
        return None
    return LedgerTxn.build(
        f"split:{ann.id}:{account_id}", "split", entries, account_id=account_id,
        memo={"announcement": ann.id, "symbol": ann.symbol, "old_qty": str(result.old_qty),
              "new_qty": str(result.new_qty), "in_lieu_old": str(result.in_lieu_old),
              "cash_in_lieu": str(result.cash_in_lieu)})


def symbol_change_txn(ann: Announcement, account_id: uuid.UUID, qty: Decimal) -> LedgerTxn:
    """One account's ``qty`` settled shares of the old symbol become shares of the new one."""
    assert ann.new_symbol is not None
    old, new = ann.symbol, ann.new_symbol
    return LedgerTxn.build(
        f"symchg:{ann.id}:{account_id}", "symbol_change",
        [Entry.of(customer(account_id, f"shares:{old}"), -qty, old),
         Entry.of(house(f"reorg:{old}"), qty, old),
         Entry.of(house(f"reorg:{new}"), -qty, new),
         Entry.of(customer(account_id, f"shares:{new}"), qty, new)],
        account_id=account_id, memo={"announcement": ann.id, "symbol": new, "old_symbol": old,
                                     "new_qty": str(qty)})
