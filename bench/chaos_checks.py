"""What the chaos run (:mod:`bench.chaos`) checks once the stack is quiet, read from the records
themselves, not from anything the stack says about itself:

- the venues' own record of their fills: every ExecutionReport a simulated market maker sent is
  in its FIX session store (``<data dir>/venues/<MM>/fix-<MM>-SHERWOOD.sqlite``, table
  ``fix_sent``, committed before it goes on the wire and kept across its restarts); a fill is a
  report with ExecType F, counted once per ExecID (duplicates and PossResend re-sends carry the
  same ExecID);
- our books: ``orders`` and ``executions`` of every shard database (a booked fill is an
  ``executions`` row with ``qty > 0``, keyed by venue and ExecID).

What it does not do: judge the orders' routing or prices (the audit does the ledger's side:
``sherwood audit invariants``), or write anything.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from domain.orders import TERMINAL as TERMINAL_STATES
from domain.orders import OrderState

# the order states as the orders table spells them (REPLACED included: one place decides)
TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
STUCK = OrderState.STUCK.value
SOH = b"\x01"


@dataclass(frozen=True)
class Fill:
    venue: str
    exec_id: str
    cl_ord_id: str
    qty: Decimal
    price: Decimal


def fix_fields(raw: bytes) -> dict[str, str]:
    """The tags of one stored FIX message (the first occurrence of each)."""
    out: dict[str, str] = {}
    for part in raw.split(SOH):
        tag, sep, value = part.partition(b"=")
        if sep and tag.isdigit():
            out.setdefault(tag.decode(), value.decode(errors="replace"))
    return out


def venue_fills(venues_dir: Path) -> dict[tuple[str, str], Fill]:
    """Every fill each venue under ``venues_dir`` sent, by (venue, ExecID), from its session
    store (read-only; the venue may be running)."""
    fills: dict[tuple[str, str], Fill] = {}
    for store in sorted(venues_dir.glob("*/fix-*.sqlite")):
        venue = store.parent.name
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT raw FROM fix_sent ORDER BY seq").fetchall()
        finally:
            db.close()
        for (raw,) in rows:
            f = fix_fields(bytes(raw))
            if f.get("35") != "8" or f.get("150") != "F" or "17" not in f:
                continue
            fills.setdefault((venue, f["17"]), Fill(venue, f["17"], f.get("11", ""),
                                                     Decimal(f.get("32", "0")), Decimal(f.get("31", "0"))))
    return fills


def pg_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+driver://``) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Books:
    """What the shard databases hold about the run's orders."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # order id -> row
    booked: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (venue, exec id)
    booked_rows: int = 0

    def states(self) -> Counter[str]:
        return Counter(o["state"] for o in self.orders.values())

    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["state"] not in TERMINAL and o["state"] != STUCK]

    def stuck(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["state"] == STUCK]

    def holds_on_terminal(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["state"] in TERMINAL and o["hold_amount"] != 0]


def read_books(shard_urls: list[str]) -> Books:
    books = Books()
    for shard, url in enumerate(shard_urls):
        with psycopg.connect(pg_url(url), connect_timeout=5) as conn:
            for row in conn.execute(
                    "SELECT id::text, account_id::text, client_order_id, symbol, side, order_type, qty,"
                    " state, cl_ord_id, venue, filled_qty, hold_amount, reject_code FROM orders"):
                keys = ("id", "account_id", "client_order_id", "symbol", "side", "type", "qty",
                        "state", "cl_ord_id", "venue", "filled_qty", "hold_amount", "reject_code")
                books.orders[row[0]] = {**dict(zip(keys, row, strict=True)), "shard": shard}
            for venue, exec_id, order_id, qty, price in conn.execute(
                    "SELECT venue, exec_id, order_id::text, qty, price FROM executions WHERE qty > 0"):
                books.booked_rows += 1
                books.booked[(venue, exec_id)] = {"order_id": order_id, "qty": qty, "price": price}
    return books


@dataclass
class FillCheck:
    venue_fills: int
    booked: int
    missing: list[dict[str, Any]]  # the venue filled, we did not book
    extra: list[dict[str, Any]]  # we booked, no venue sent it
    mismatched: list[dict[str, Any]]  # booked with another qty/price, or on another order
    per_order_mismatch: list[dict[str, Any]]  # an order's filled_qty is not its venue fills' sum

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.mismatched or self.per_order_mismatch)


def check_fills(fills: dict[tuple[str, str], Fill], books: Books) -> FillCheck:
    """Each venue fill booked exactly once (the key is unique in ``executions``, so "once" means
    present with the same quantity and price, on the order of that ClOrdID), nothing booked that
    no venue sent, and each order's filled quantity equal to the sum of its venue fills."""
    by_clordid = {o["cl_ord_id"]: o for o in books.orders.values()}
    missing, mismatched = [], []
    venue_qty: Counter[str] = Counter()
    for key, f in fills.items():
        order = by_clordid.get(f.cl_ord_id)
        if order is not None:
            venue_qty[order["id"]] += f.qty  # type: ignore[assignment]
        ours = books.booked.get(key)
        if ours is None:
            missing.append({"venue": f.venue, "exec_id": f.exec_id, "cl_ord_id": f.cl_ord_id,
                            "qty": str(f.qty), "order_id": order["id"] if order else None,
                            "order_state": order["state"] if order else None})
        elif (ours["qty"] != f.qty or ours["price"] != f.price
              or (order is not None and ours["order_id"] != order["id"])):
            mismatched.append({"venue": f.venue, "exec_id": f.exec_id, "venue_qty": str(f.qty),
                               "venue_px": str(f.price), "booked_qty": str(ours["qty"]),
                               "booked_px": str(ours["price"]), "booked_order": ours["order_id"]})
    extra = [{"venue": v, "exec_id": e, **{k: str(x) for k, x in row.items()}}
             for (v, e), row in books.booked.items() if (v, e) not in fills]
    per_order = [{"order_id": o["id"], "state": o["state"], "filled_qty": str(o["filled_qty"]),
                  "venue_fill_qty": str(venue_qty.get(o["id"], 0))}
                 for o in books.orders.values() if o["filled_qty"] != venue_qty.get(o["id"], 0)]
    return FillCheck(len(fills), books.booked_rows, missing, extra, mismatched, per_order)
