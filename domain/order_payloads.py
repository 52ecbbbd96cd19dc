"""The order workflow's and activities' payloads (one dataclass per input; decimals as strings).
Pure data; :mod:`domain.orders` re-exports every name here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.order_state import TERMINAL, OrderState


@dataclass
class OrderSnapshot:
    """What the workflow knows about its order after each committed step."""

    order_id: str
    account_id: str
    client_order_id: str
    state: str
    symbol: str
    side: str
    qty: str
    filled_qty: str = "0"
    filled_avg_price: str | None = None
    hold_remaining: str = "0"
    venue: str | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    expires_at: str | None = None  # ISO time a DAY order expires
    duplicate: bool = False  # the client_order_id already named this order
    warnings: list[str] = field(default_factory=list)  # soft risk warnings (concentration)
    # the row's times as written (ISO): with the request they make the whole order object, so
    # the API answers a new order without reading it back; absent in older workflows' results
    created_at: str | None = None
    updated_at: str | None = None
    # accepted outside the regular session: the open (ISO, UTC) it waits for before it routes
    queued_until: str | None = None
    # the order that replaces (or is to replace) this one (cancel/replace)
    replaced_by: str | None = None
    # the firm filled a fraction of it and its inventory of the symbol is a whole share or more
    # away from zero: the workflow starts the rebalance (domain.fractional)
    rebalance: bool = False

    @property
    def terminal(self) -> bool:
        return OrderState(self.state) in TERMINAL


@dataclass
class OrderTimeouts:
    """Every duration of the order lifecycle is a setting, so tests run them short and real."""

    ack_s: float = 30.0  # ROUTED with no venue answer -> cancel request
    cancel_s: float = 10.0  # PENDING_CANCEL with no answer -> status request
    status_s: float = 10.0  # status request unanswered -> STUCK
    # PENDING_REPLACE with no answer -> status request (then status_s -> STUCK)
    replace_s: float = 10.0
    expire_grace_s: float = 5.0  # DAY order past the close with no venue expiry -> cancel
    # no venue took the order within this long (the gateway could not send it): it is abandoned,
    # never sent later against a stale hold (market and stop orders, then the other types)
    route_market_s: float = 10.0
    route_limit_s: float = 300.0
    # a shard transaction failing transiently (database out of reach) is retried this long, then
    # the order ends where an operator sees it: REJECTED before its hold, STUCK with it
    store_retry_s: float = 120.0
    # asking the gateway whether an order it could not send went out is retried this long, then
    # STUCK with the hold (it may be at a venue)
    gateway_retry_s: float = 600.0
    # an order queued outside the session waits until the next open; tests cap the wait at this
    # many seconds (SHERWOOD_QUEUED_OPEN_WAIT_MAX_S; None: the real time until the open)
    open_wait_max_s: float | None = None
    # the business clock runs this far ahead of the wall clock (SHERWOOD_MARKET_CLOCK_OFFSET_S,
    # tests only: "it is 20:00 ET now"); the shard worker's order store takes the same offset
    market_clock_offset_s: float = 0.0
    # a broker-held trigger's watching activity heartbeats within this long, or it is retried
    # (on another worker) from its last heartbeat (SHERWOOD_TRIGGER_HEARTBEAT_TIMEOUT_S)
    trigger_heartbeat_s: float = 10.0


@dataclass
class PlaceOrderInput:
    order_id: str
    account_id: str
    shard: int
    request: dict[str, Any]
    request_hash: str
    actor: str = "customer"
    collar: str = "0.05"
    timeouts: OrderTimeouts | None = None
    day_ttl_s: float | None = None
    # continue-as-new carries what the new run must not forget
    snapshot: OrderSnapshot | None = None
    seen_exec_ids: list[str] | None = None
    # the execution gateway's task queue (SHERWOOD_GATEWAY_TASK_QUEUE); None: the default
    gateway_queue: str | None = None
    # a new run of an order whose workflow had ended, started by the gateway for a venue report
    # that came after the end: it loads the order instead of accepting it
    late: bool = False
    # cancel requests sent so far (continue-as-new carries it: each cancel's ClOrdID is new)
    cancel_rounds: int = 0


@dataclass
class ReplaceInput:
    """A customer's cancel/replace of a working order (the ``replace`` update): the
    replacement's id (chosen by the caller) and the changes (Alpaca's replace body)."""

    new_order_id: str
    change: dict[str, Any]
    actor: str = "customer"


@dataclass
class RequestReplaceInput:
    order_id: str
    new_order_id: str
    change: dict[str, Any]
    actor: str
    shard: int
    day_ttl_s: float | None = None
    collar: str | None = None  # a stop buy's hold estimate, as at accept (None: the default)


@dataclass
class AcceptOrderInput:
    order_id: str
    account_id: str
    request: dict[str, Any]
    request_hash: str
    actor: str
    collar: str
    day_ttl_s: float | None = None  # tests: a DAY order expires this long after it is placed
    # an order group's whole request (domain.order_groups): the parent is accepted and the legs
    # written HELD in one transaction; ``request_hash`` is then the group's
    group: dict[str, Any] | None = None


@dataclass
class TransitionInput:
    order_id: str
    to_state: str
    reason: str
    actor: str = "system"
    venue: str | None = None
    code: str | None = None  # stable reason code of a rejection


@dataclass
class ResolveInput:
    """An operator's resolution of a STUCK order, with what the venue says happened: the total
    it filled and either the venue's own executions not booked yet (``fills``: booked under the
    venue's ExecIDs, so the clearinghouse's report matches them) or, when the venue gave none,
    their average price (booked as one operator execution)."""

    order_id: str
    outcome: str  # filled | canceled
    filled_qty: str = "0"  # total filled at the venue (>= what is already booked)
    avg_price: str | None = None  # average price of the part not yet booked
    operator: str = "operator"
    note: str = ""
    fills: list[ResolveFill] | None = None


@dataclass
class ResolveFill:
    """One execution the venue reports for a STUCK order (decimals as strings)."""

    exec_id: str
    qty: str
    price: str
