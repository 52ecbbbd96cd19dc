"""A reference model of one brokerage account's money across business days, for the stateful
test (tests/db/test_money_stateful.py). Pure: no database, written from the rules as the docs
and issue 15 state them, not from the code that implements them.

What it knows per account: ``cash`` (settled money plus provisional ACH credit, less every
hold taken from it), ``cash_held``, unsettled sale proceeds in lots by settlement date, shares
settled / held for sells / bought and not yet settled, the ACH deposits still provisional, the
withdrawals pending, whether a shortfall is open, the fills of the pattern-day-trader window and
the good-faith violations. From that it predicts what each step does (an order held or rejected
with which code, a withdrawal accepted or refused) and the ledger balances afterwards
(:meth:`AccountModel.balances`), which the test compares with the real ledger after every step.

Deliberately not here: prices, quotes, market hours, symbol controls, anything of the Temporal
workflow. Where the model follows a choice the code makes that the rules leave open, it says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal

from domain import calendar

ZERO = Decimal(0)
INSTANT_ALLOWANCE = Decimal(1000)
COLLAR = Decimal("0.05")
PDT_EQUITY = Decimal(25000)


def lot_name(settles: date) -> str:
    return f"cash_unsettled@{settles.isoformat()}"


def previous_session(d: date) -> date:
    d -= timedelta(days=1)
    while not calendar.is_session(d):
        d -= timedelta(days=1)
    return d


@dataclass
class Deposit:
    amount: Decimal
    expected: date  # when the ACH is expected to settle (bank days)


@dataclass
class Order:
    id: str
    side: str
    symbol: str
    qty: Decimal
    limit: Decimal | None  # None: a market buy
    state: str  # OPEN, FILLED, CANCELED, STUCK (nothing else is kept)
    hold: Decimal = ZERO
    sources: dict[str, Decimal] = field(default_factory=dict)
    filled: Decimal = ZERO
    value: Decimal = ZERO
    first_trade: date | None = None
    # good faith (buys): the funds the hold took that were not settled, and when they settle
    unsettled_funded: Decimal = ZERO
    funds_settle: date | None = None


def _rank(source: str) -> tuple[int, str]:
    """Holds are taken and used settled first, then proceeds lots by date, provisional last."""
    if source in ("cash", "shares"):
        return (0, "")
    if source == "provisional":
        return (2, "")
    return (1, source)  # a lot (its name sorts by date) or unsettled shares


@dataclass
class AccountModel:
    kind: str  # cash | instant
    cash: Decimal = ZERO
    cash_held: Decimal = ZERO
    lots: dict[date, Decimal] = field(default_factory=dict)
    shares: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    shares_held: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    shares_unsettled: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    deposits: dict[str, Deposit] = field(default_factory=dict)  # pending (provisional)
    withdrawals: dict[str, Decimal] = field(default_factory=dict)  # pending
    shortfall_open: bool = False
    orders: dict[str, Order] = field(default_factory=dict)
    fills: list[tuple[str, str, date]] = field(default_factory=list)  # (symbol, side, trade date)
    # buy executions not settled yet: (settle date, symbol, qty)
    unsettled_buys: list[tuple[date, str, Decimal]] = field(default_factory=list)
    violations: set[tuple[str, date]] = field(default_factory=set)  # (buy order, sale date)
    restricted_until: date | None = None

    # --- figures ----------------------------------------------------------------------------

    @property
    def provisional(self) -> Decimal:
        return sum((d.amount for d in self.deposits.values()), ZERO)

    @property
    def settled(self) -> Decimal:
        """Settled cash not held (negative while the account owes money)."""
        return self.cash - self.provisional

    @property
    def unsettled(self) -> Decimal:
        return sum(self.lots.values(), ZERO)

    def settled_only(self, today: date) -> bool:
        return self.restricted_until is not None and today <= self.restricted_until

    def buying_power(self, today: date) -> Decimal:
        """settled cash - provisional + min(provisional, allowance) + unsettled proceeds (issue
        15, item 2), as the account type allows; settled cash only while restricted."""
        restricted = self.settled_only(today)
        usable = (min(self.provisional, INSTANT_ALLOWANCE)
                  if self.kind == "instant" and not restricted else ZERO)
        unsettled = ZERO if restricted else self.unsettled
        return max(ZERO, self.settled + usable + unsettled)

    def withdrawable(self) -> Decimal:
        return max(ZERO, self.settled)

    def position(self, symbol: str) -> Decimal:
        return self.shares[symbol] + self.shares_held[symbol] + self.shares_unsettled[symbol]

    def close_only(self) -> bool:
        return self.shortfall_open and self.settled < 0

    def balances(self) -> dict[str, Decimal]:
        """The ledger balances this account should have (zero ones left out)."""
        out: dict[str, Decimal] = {"cash": self.cash, "cash_held": self.cash_held}
        out.update({lot_name(d): v for d, v in self.lots.items()})
        for prefix, book in (("shares", self.shares), ("shares_held", self.shares_held),
                             ("shares_unsettled", self.shares_unsettled)):
            out.update({f"{prefix}:{s}": q for s, q in book.items()})
        return {k: v for k, v in out.items() if v}

    # --- funding ----------------------------------------------------------------------------

    def deposit(self, tid: str, amount: Decimal, expected: date) -> None:
        self.deposits[tid] = Deposit(amount, expected)
        self.cash += amount

    def settle_deposit(self, tid: str) -> None:
        self.deposits.pop(tid)
        self._cover()

    def bounce_deposit(self, tid: str) -> None:
        dep = self.deposits.pop(tid)
        self.cash -= dep.amount
        if self.cash < 0:
            self.shortfall_open = True

    def withdraw(self, tid: str, amount: Decimal) -> bool:
        """Withdrawals take settled cash only (never provisional credit nor unsettled proceeds)."""
        if amount > self.settled:
            return False
        self.cash -= amount
        self.cash_held += amount
        self.withdrawals[tid] = amount
        return True

    def complete_withdrawal(self, tid: str) -> None:
        self.cash_held -= self.withdrawals.pop(tid)

    def fail_withdrawal(self, tid: str) -> None:
        amount = self.withdrawals.pop(tid)
        self.cash_held -= amount
        self.cash += amount  # (the store does not look at shortfalls here)

    def _cover(self) -> None:
        if self.settled >= 0:
            self.shortfall_open = False

    # --- orders -----------------------------------------------------------------------------

    def _equity(self, symbol: str, price: Decimal) -> Decimal:
        # the accept path values only the order's symbol (the tests give no other quote)
        return self.cash + self.cash_held + self.unsettled + self.position(symbol) * price

    def _day_trades(self, today: date) -> int:
        since = today
        for _ in range(4):
            since = previous_session(since)
        bought: set[tuple[str, date]] = set()
        counted: set[tuple[str, date]] = set()
        for symbol, side, day in self.fills:
            if day < since:
                continue
            if side == "buy":
                bought.add((symbol, day))
            elif (symbol, day) in bought:
                counted.add((symbol, day))
        return len(counted)

    def place_buy(self, oid: str, symbol: str, qty: Decimal, *, limit: Decimal | None,
                  ask: Decimal, today: date) -> str | None:
        """Hold the cash of a buy (None) or say why it is rejected."""
        if self.close_only():
            return "account_close_only"
        amount = qty * limit if limit is not None else (qty * ask * (1 + COLLAR)).quantize(
            Decimal("0.01"), rounding=ROUND_CEILING)
        if amount > self.buying_power(today):
            return "insufficient_buying_power"
        sources: dict[str, Decimal] = {}
        take = min(amount, max(ZERO, self.settled))
        if take:
            sources["cash"] = take
        rest = amount - take
        if not self.settled_only(today):
            for d in sorted(self.lots):
                part = min(rest, self.lots[d])
                if part:
                    sources[lot_name(d)] = part
                    rest -= part
        if rest:
            sources["provisional"] = rest
        from_cash = sources.get("cash", ZERO) + sources.get("provisional", ZERO)
        if from_cash > self.cash:  # the ledger refuses a hold beyond the cash account
            return "insufficient_buying_power"
        self.cash -= from_cash
        for d in list(self.lots):
            part = sources.get(lot_name(d), ZERO)
            self._take_lot(d, part)
        self.cash_held += amount
        order = Order(oid, "buy", symbol, qty, limit, "OPEN", amount, sources)
        # good faith: what the hold took from unsettled proceeds or provisional credit
        lot_dates = [d for d in self.lots_taken(sources)]
        if sources.get("provisional"):
            lot_dates.append(max(dep.expected for dep in self.deposits.values()))
        order.unsettled_funded = amount - sources.get("cash", ZERO)
        order.funds_settle = max(lot_dates) if lot_dates else None
        self.orders[oid] = order
        return None

    @staticmethod
    def lots_taken(sources: dict[str, Decimal]) -> list[date]:
        return [date.fromisoformat(k.partition("@")[2]) for k in sources if k.startswith("cash_unsettled@")]

    def _take_lot(self, d: date, amount: Decimal) -> None:
        if not amount:
            return
        self.lots[d] -= amount
        if not self.lots[d]:
            del self.lots[d]

    def place_sell(self, oid: str, symbol: str, qty: Decimal, *, limit: Decimal, today: date) -> str | None:
        """Hold the shares of a sell (None) or say why it is rejected."""
        bought_today = any(s == symbol and side == "buy" and d == today for s, side, d in self.fills)
        if (bought_today and self._equity(symbol, limit) < PDT_EQUITY
                and self._day_trades(today) >= 3):
            return "pattern_day_trader"
        if qty > self.shares[symbol] + self.shares_unsettled[symbol]:
            return "insufficient_qty"
        settled = min(qty, self.shares[symbol])
        sources = {k: v for k, v in (("shares", settled), ("shares_unsettled", qty - settled)) if v}
        self.shares[symbol] -= settled
        self.shares_unsettled[symbol] -= qty - settled
        self.shares_held[symbol] += qty
        self.orders[oid] = Order(oid, "sell", symbol, qty, limit, "OPEN", qty, sources)
        return None

    def _consume(self, order: Order, amount: Decimal) -> None:
        left: dict[str, Decimal] = {}
        for source in sorted(order.sources, key=_rank):
            used = min(amount, order.sources[source])
            amount -= used
            if order.sources[source] - used:
                left[source] = order.sources[source] - used
        order.sources = left

    def _release(self, order: Order) -> None:
        """Give what the order still holds back to where it came from."""
        for source, part in order.sources.items():
            if order.side == "buy":
                self.cash_held -= part
                if source in ("cash", "provisional"):
                    self.cash += part
                else:
                    d = date.fromisoformat(source.partition("@")[2])
                    self.lots[d] = self.lots.get(d, ZERO) + part
            else:
                self.shares_held[order.symbol] -= part
                book = self.shares if source == "shares" else self.shares_unsettled
                book[order.symbol] += part
        released_cash = order.side == "buy" and order.hold > 0
        order.hold, order.sources = ZERO, {}
        if released_cash:
            self._cover()

    def fill(self, oid: str, qty: Decimal, px: Decimal, today: date, *,
             value: Decimal | None = None) -> bool:
        """Book a venue fill (also one after the order ended: it reopens STUCK), or the firm's
        fill of a fraction (``value``: its cash value, qty x px to the cent). False: the books
        cannot take it (a late sell of shares the account no longer has settled)."""
        order = self.orders[oid]
        late = order.state in ("CANCELED",)
        value = qty * px if value is None else value
        if order.side == "buy":
            topup = max(ZERO, value - order.hold)
            self.cash -= topup
            self.cash_held += topup
            order.hold += topup
            self._consume(order, value)
            order.hold -= value
            self.cash_held -= value
            self.shares_unsettled[order.symbol] += qty
            self.unsettled_buys.append((calendar.settle_date(today), order.symbol, qty))
            # beyond what the account may spend: settled cash, plus (instant) provisional credit
            # up to the allowance
            spendable = self.settled + (min(self.provisional, INSTANT_ALLOWANCE)
                                        if self.kind == "instant" else ZERO)
            if topup and spendable < 0:
                self.shortfall_open = True
        else:
            topup = max(ZERO, qty - order.hold)
            if topup:
                # the code holds the missing shares from settled shares only
                if self.shares[order.symbol] < topup:
                    order.state = "STUCK"
                    return False
                self.shares[order.symbol] -= topup
                self.shares_held[order.symbol] += topup
                order.hold += topup
                order.sources = {"shares": order.sources.get("shares", ZERO) + topup, **{
                    k: v for k, v in order.sources.items() if k != "shares"}}
            self._consume(order, qty)
            order.hold -= qty
            self.shares_held[order.symbol] -= qty
            settles = calendar.settle_date(today)
            self.lots[settles] = self.lots.get(settles, ZERO) + value
        order.filled += qty
        order.value += value
        if order.first_trade is None:
            order.first_trade = today
        self.fills.append((order.symbol, order.side, today))
        if order.side == "sell":
            self._good_faith(order.symbol, today)
        if late:
            order.state = "STUCK"
        elif order.filled == order.qty:
            order.state = "FILLED"
            self._release(order)
        return True

    def end(self, oid: str, to: str = "CANCELED") -> None:
        """The venue (or an operator) ends the order with what is booked: the rest is released."""
        order = self.orders[oid]
        order.state = to
        self._release(order)

    def refuse(self, oid: str) -> None:
        """A report the books cannot take: the order goes STUCK with its hold."""
        self.orders[oid].state = "STUCK"

    # --- good faith -------------------------------------------------------------------------

    def _good_faith(self, symbol: str, sale: date) -> None:
        """Selling a position bought with funds not settled yet, before they settle."""
        if self.kind != "cash":
            return
        found = False
        for o in self.orders.values():
            if (o.side == "buy" and o.symbol == symbol and o.filled > 0 and o.unsettled_funded > 0
                    and o.funds_settle is not None and o.first_trade is not None
                    and o.first_trade <= sale < o.funds_settle
                    and sale - timedelta(days=15) <= o.first_trade):
                self.violations.add((o.id, sale))
                found = True
        if not found:
            return
        recent = sorted({d for _, d in self.violations if sale - timedelta(days=365) < d <= sale})
        if len(recent) >= 3:
            until = recent[-1] + timedelta(days=90)
            self.restricted_until = max(self.restricted_until or until, until)

    # --- settlement -------------------------------------------------------------------------

    def settle(self, d: date) -> None:
        """The settlement run of business date ``d``: every proceeds lot due by ``d`` becomes
        cash; shares bought and due by ``d`` become settled (those already sold or held for a
        sell stay where they are: the code settles what is left of them)."""
        moved = False
        for lot in [x for x in self.lots if x <= d]:
            if self.lots[lot] > 0:
                self.cash += self.lots.pop(lot)
                moved = True
        due: dict[str, Decimal] = defaultdict(Decimal)
        keep = []
        for settles, symbol, qty in self.unsettled_buys:
            if settles <= d:
                due[symbol] += qty
            else:
                keep.append((settles, symbol, qty))
        self.unsettled_buys = keep
        for symbol, qty in due.items():
            q = min(qty, self.shares_unsettled[symbol])
            if q > 0:
                self.shares_unsettled[symbol] -= q
                self.shares[symbol] += q
        if moved:
            self._cover()
