"""Portfolio history (``GET /v2/account/portfolio/history``): the request, the points it asks
for, and the equity at each point replayed from the ledger. Pure.

- :func:`parse_query` reads Alpaca's parameters (``period``, ``timeframe``, ``date_end``,
  ``extended_hours``), bounded: a period is ``<n>D`` (sessions), ``<n>W``, ``<n>M`` or ``<n>A``
  (calendar weeks, months, years) up to :data:`MAX_YEARS` years; intraday timeframes
  (1Min/5Min/15Min/1H) yield at most :data:`MAX_POINTS` points. Defaults as Alpaca's: period 1M;
  timeframe 1Min under 7 days, 15Min under 30, else 1D; ``date_end`` the current market date.
- Daily points (1D) are the back office's end-of-day snapshots (one per session, at the close);
  intraday points are replayed here: :func:`replay` walks the account's ledger entries from a
  starting balance and marks the positions at the last price known at each point
  (:class:`PriceBook`: minute-bar closes and fills, else the previous close).
- Profit/loss is against ``base_value`` (the equity at the previous close before the window, or
  the first point's) less the money moved in or out since (deposits, returned deposits,
  withdrawals: :data:`EXTERNAL_KINDS`): a deposit is not a profit.

Deliberately not here: reading anything, the clock (``now`` and ``today`` are arguments).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain import calendar
from domain.account import account_figures, share_positions
from domain.errors import DomainError

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)
TIMEFRAMES: dict[str, timedelta | None] = {
    "1Min": timedelta(minutes=1), "5Min": timedelta(minutes=5), "15Min": timedelta(minutes=15),
    "1H": timedelta(hours=1), "1D": None,
}
MAX_POINTS = 10_000  # intraday points per request
MAX_YEARS = 1  # the calendar is loaded two years back
_PERIOD = re.compile(r"([1-9][0-9]{0,3})([DWMA])")
# ledger transaction kinds that move money into or out of the firm (not profit or loss)
EXTERNAL_KINDS = frozenset({"deposit", "deposit_bounce", "withdrawal_complete"})
EXTENDED_OPEN, EXTENDED_CLOSE = time(4, 0), time(20, 0)


class HistoryError(DomainError):
    code = "invalid_portfolio_history_request"


@dataclass(frozen=True)
class HistoryQuery:
    sessions: tuple[date, ...]  # the sessions of the window, oldest first
    timeframe: str
    extended_hours: bool

    @property
    def intraday(self) -> bool:
        return TIMEFRAMES[self.timeframe] is not None


def _period_days(n: int, unit: str) -> int:
    return {"D": n, "W": 7 * n, "M": 30 * n, "A": 365 * n}[unit]


def parse_query(*, period: str | None, timeframe: str | None, date_end: str | None,
                extended_hours: str | bool | None, today: date) -> HistoryQuery:
    """The sessions and timeframe asked for; raises :class:`HistoryError` (with a code) on any
    bad parameter. ``today`` is the current New York date."""
    m = _PERIOD.fullmatch(period or "1M")
    if m is None:
        raise HistoryError("period must be <number><D|W|M|A>, e.g. 1D, 2W, 3M, 1A",
                           code="invalid_period")
    n, unit = int(m.group(1)), m.group(2)
    if _period_days(n, unit) > 366 * MAX_YEARS:
        raise HistoryError(f"period may be at most {MAX_YEARS}A", code="invalid_period")
    if timeframe is None:
        days = _period_days(n, unit)
        timeframe = "1Min" if days < 7 else "15Min" if days < 30 else "1D"
    if timeframe not in TIMEFRAMES:
        raise HistoryError(f"timeframe must be one of {', '.join(TIMEFRAMES)}", code="invalid_timeframe")
    if extended_hours in (None, False, "false"):
        ext = False
    elif extended_hours in (True, "true"):
        ext = True
    else:
        raise HistoryError("extended_hours must be true or false", code="invalid_extended_hours")
    end = today if date_end is None else min(_date(date_end), today)
    sessions = _sessions(end, n, unit)
    q = HistoryQuery(tuple(sessions), timeframe, ext)
    if q.intraday:
        step = TIMEFRAMES[timeframe]
        assert step is not None
        per_day = (timedelta(hours=16) if ext else timedelta(hours=6, minutes=30)) // step
        if per_day * len(sessions) > MAX_POINTS:
            raise HistoryError(f"{timeframe} over {period or '1M'} is more than {MAX_POINTS} points: "
                               "ask for a shorter period or a longer timeframe", code="too_many_points")
    return q


def _date(text: str) -> date:
    """A date as Alpaca takes it: ``YYYY-MM-DD``, or an RFC 3339 time (its date)."""
    try:
        if len(text) > 32:
            raise ValueError(text)
        return date.fromisoformat(text[:10])
    except ValueError:
        raise HistoryError("date_end must be a date (YYYY-MM-DD)", code="invalid_date_end") from None


def _sessions(end: date, n: int, unit: str) -> list[date]:
    out: list[date] = []
    d = end
    if unit == "D":
        while len(out) < n:
            if calendar.is_session(d):
                out.append(d)
            d -= timedelta(days=1)
    else:
        first = end - timedelta(days=_period_days(n, unit) - 1)
        while d >= first:
            if calendar.is_session(d):
                out.append(d)
            d -= timedelta(days=1)
    return sorted(out)


def day_stamp(d: date) -> int:
    """A daily point's timestamp: the session's date at 00:00 New York time (epoch seconds)."""
    return int(datetime.combine(d, time(0), NY).timestamp())


def intraday_points(q: HistoryQuery, now: datetime) -> list[datetime]:
    """Left-labeled window starts of every session in ``q``, up to ``now`` (UTC)."""
    step = TIMEFRAMES[q.timeframe]
    assert step is not None
    out: list[datetime] = []
    for d in q.sessions:
        hours = calendar.session_hours(d)
        if hours is None:
            continue
        opens, closes = hours
        if q.extended_hours:
            opens = datetime.combine(d, EXTENDED_OPEN, NY).astimezone(UTC)
            closes = max(closes, datetime.combine(d, EXTENDED_CLOSE, NY).astimezone(UTC))
        t = opens
        while t < closes and t <= now:
            out.append(t)
            t += step
    return out


@dataclass(frozen=True)
class LedgerMove:
    """One ledger entry of the account: when, which of its ledger accounts, how much, and
    whether its transaction moved money in or out of the firm."""

    at: datetime
    name: str
    amount: Decimal
    external: bool = False


@dataclass
class PriceBook:
    """Prices known per symbol over time (minute-bar closes at the bar's end, fills at their
    booking), and a price to fall back on before the first (the previous close)."""

    series: dict[str, list[tuple[datetime, Decimal]]] = field(default_factory=dict)
    fallback: dict[str, Decimal] = field(default_factory=dict)

    def add(self, symbol: str, at: datetime, price: Decimal) -> None:
        self.series.setdefault(symbol, []).append((at, price))

    def freeze(self) -> None:
        for s in self.series.values():
            s.sort(key=lambda p: p[0])

    def at(self, symbol: str, t: datetime) -> Decimal | None:
        s = self.series.get(symbol, [])
        i = bisect.bisect_right(s, t, key=lambda p: p[0])
        return s[i - 1][1] if i else self.fallback.get(symbol)


@dataclass(frozen=True)
class Point:
    equity: Decimal
    cashflow: Decimal  # money moved in (+) or out (-) since the start of the replay


def replay(start: Mapping[str, Decimal], moves: Iterable[LedgerMove], prices: PriceBook,
           points: Sequence[datetime]) -> list[Point]:
    """The account's equity at each of ``points`` (ascending), from its balances at the start
    and every ledger entry since (ascending by time): cash plus each position marked at the
    price known then (a position with no price at all counts 0)."""
    bal = dict(start)
    pending = sorted(moves, key=lambda m: m.at)
    i, flow, out = 0, ZERO, []
    for t in points:
        while i < len(pending) and pending[i].at <= t:
            m = pending[i]
            bal[m.name] = bal.get(m.name, ZERO) + m.amount
            if m.external:
                flow += m.amount
            i += 1
        mv = {}
        for sym, qty in share_positions(bal).items():
            px = prices.at(sym, t)
            if px is not None:
                mv[sym] = qty * px
        out.append(Point(account_figures(bal, mv).equity, flow))
    return out


def profit_loss(equity: Sequence[Decimal], cashflow: Sequence[Decimal], base: Decimal
                ) -> tuple[list[Decimal], list[Decimal | None]]:
    """Profit/loss per point against ``base`` (less the money moved in or out up to the point,
    cumulative), in dollars (to the cent) and as a fraction of the base (None when the base is
    zero)."""
    pl = [(e - base - f).quantize(Decimal("0.01")) for e, f in zip(equity, cashflow, strict=True)]
    pct = [None if base == 0 else (p / base).quantize(Decimal("0.0000001")) for p in pl]
    return pl, pct
