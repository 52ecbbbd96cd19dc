"""Settlement rules (pure: no I/O): which dates a run covers, per-symbol netting, and the
comparison of Sherwood's settled executions with the clearinghouse's report.

Also the Settlement workflow's payload from each shard (:class:`ShardSettlement`; the workflow
imports it from here, :mod:`db.settlement` builds it). Dates are ISO strings on the wire (workflow
payloads) and :class:`datetime.date` here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from domain import calendar
from domain.errors import DomainError

ZERO = Decimal(0)


def sessions_between(start: date, end: date) -> list[date]:
    """NYSE sessions in [start, end], in order."""
    out: list[date] = []
    d = start
    while d <= end:
        if calendar.is_session(d):
            out.append(d)
        d += timedelta(days=1)
    return out


class SettlementDateError(DomainError):
    code = "settlement_date_in_future"


def check_settleable(d: date, now: datetime) -> None:
    """A business date may be settled once it has come (today in New York, or earlier): a later
    date would settle today's trades before their settlement date."""
    today = calendar.trade_date(now)
    if d > today:
        raise SettlementDateError(f"{d} has not come yet (today is {today} in New York): "
                                  "a settlement date after today would settle trades early")


def catch_up_dates(last_done: date | None, today: date, max_days: int) -> list[date]:
    """Sessions to settle when the schedule fires on ``today``: every session after the last
    settled one up to today (missed days first, in order), at most ``max_days`` of them."""
    if last_done is None or last_done >= today:
        start = today
    else:
        start = last_done + timedelta(days=1)
    start = max(start, today - timedelta(days=max_days * 2))
    dates = sessions_between(start, today)
    return dates[-max_days:] if len(dates) > max_days else dates


@dataclass(frozen=True)
class Fill:
    """One execution as settlement sees it."""

    venue: str
    exec_id: str
    symbol: str
    side: str  # buy | sell
    qty: Decimal
    price: Decimal

    @property
    def value(self) -> Decimal:
        return self.qty * self.price


@dataclass
class Netting:
    """Per-symbol netting: ``net_shares`` = bought - sold (shares the street delivers to us),
    ``net_cash`` = sell value - buy value (cash the street pays us; negative: we pay)."""

    symbol: str
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    buy_value: Decimal = ZERO
    sell_value: Decimal = ZERO
    fills: int = 0

    @property
    def net_shares(self) -> Decimal:
        return self.bought - self.sold

    @property
    def net_cash(self) -> Decimal:
        return self.sell_value - self.buy_value

    def add(self, other: Netting) -> None:
        self.bought += other.bought
        self.sold += other.sold
        self.buy_value += other.buy_value
        self.sell_value += other.sell_value
        self.fills += other.fills

    def to_wire(self) -> dict[str, str]:
        return {"symbol": self.symbol, "bought": _s(self.bought), "sold": _s(self.sold),
                "buy_value": _s(self.buy_value), "sell_value": _s(self.sell_value),
                "net_shares": _s(self.net_shares), "net_cash": _s(self.net_cash),
                "fills": str(self.fills)}

    @classmethod
    def from_wire(cls, d: dict[str, str]) -> Netting:
        return cls(d["symbol"], Decimal(d["bought"]), Decimal(d["sold"]), Decimal(d["buy_value"]),
                   Decimal(d["sell_value"]), int(d["fills"]))


def _s(d: Decimal) -> str:
    n = d.normalize()
    return format(n if n != 0 else ZERO, "f")


def net(fills: Iterable[Fill]) -> dict[str, Netting]:
    out: dict[str, Netting] = {}
    for f in fills:
        n = out.setdefault(f.symbol, Netting(f.symbol))
        if f.side == "buy":
            n.bought += f.qty
            n.buy_value += f.value
        else:
            n.sold += f.qty
            n.sell_value += f.value
        n.fills += 1
    return out


def merge(parts: Iterable[Iterable[Netting]]) -> dict[str, Netting]:
    out: dict[str, Netting] = {}
    for part in parts:
        for n in part:
            out.setdefault(n.symbol, Netting(n.symbol)).add(n)
    return dict(sorted(out.items()))


@dataclass
class ShardSettlement:
    """What settling one business date did on one shard (the ``settle_shard_day`` activity's
    answer to the Settlement workflow): ``status`` done | no_session, ``replayed`` when the date
    was already settled, ``netting`` per symbol in :meth:`Netting.to_wire` form."""

    shard: int
    business_date: str
    status: str  # done | no_session
    executions: int = 0
    accounts: int = 0
    replayed: bool = False
    netting: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class StreetFill:
    """One execution as the clearinghouse knows it (from the venues)."""

    venue: str
    exec_id: str
    qty: Decimal
    price: Decimal
    symbol: str | None = None
    side: str | None = None


@dataclass(frozen=True)
class Break:
    kind: str  # missing_at_street | missing_at_sherwood | qty_mismatch | price_mismatch
    venue: str
    exec_id: str
    ours: str | None = None
    theirs: str | None = None


@dataclass
class Comparison:
    matched: int = 0
    breaks: list[Break] = field(default_factory=list)


def compare(ours: Iterable[StreetFill], theirs: Iterable[StreetFill]) -> Comparison:
    """Every difference between our settled executions and the clearinghouse's report."""
    mine = {(f.venue, f.exec_id): f for f in ours}
    street = {(f.venue, f.exec_id): f for f in theirs}
    out = Comparison()
    for key in sorted(mine.keys() | street.keys()):
        a, b = mine.get(key), street.get(key)
        if b is None:
            assert a is not None
            out.breaks.append(Break("missing_at_street", *key, ours=f"{_s(a.qty)}@{_s(a.price)}"))
        elif a is None:
            out.breaks.append(Break("missing_at_sherwood", *key, theirs=f"{_s(b.qty)}@{_s(b.price)}"))
        else:
            ok = True
            if a.qty != b.qty:
                out.breaks.append(Break("qty_mismatch", *key, ours=_s(a.qty), theirs=_s(b.qty)))
                ok = False
            if a.price != b.price:
                out.breaks.append(Break("price_mismatch", *key, ours=_s(a.price), theirs=_s(b.price)))
                ok = False
            out.matched += ok
    return out
