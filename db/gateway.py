"""The execution gateway's own store (database ``<prefix>_gateway``, history ``db/migrations/gateway``).

Tables:

``gateway_orders``
    One row per ClOrdID the gateway ever handed to a FIX session (NewOrderSingle, cancel and
    status requests). The row is reserved (status ``sending``) BEFORE the message is sent and
    marked ``sent`` after the session persisted it (a new order sent by ``send_new_order``: once
    its first answers are in, by the statement that marks them delivered). An activity retry
    that finds ``sent`` sends nothing; one that finds ``sending`` (a crash in between) sends
    again with PossResend=Y, and the venue deduplicates by ClOrdID. A replacement's row
    (OrderCancelReplaceRequest) names the route it belongs to (``route_order_id``: the first
    order of its chain).

``gateway_routes``
    Each new order's route with the NBBO at routing (:meth:`GatewayStore.record_route`). Every
    fill read from ``gateway_reports`` comes with its order's route (:class:`RouteFacts`, a
    replacement's through ``route_order_id``), which the shard stores with the execution; a
    starting gateway warms its venue scores from the last routes (:meth:`recent_routes`).

``gateway_reports``
    Every inbound venue event, keyed by ``(venue, exec_id)``: an ExecutionReport or an
    OrderCancelReject (synthesized exec id), kept as the venue sent it
    (:class:`fix.messages.ExecReport`; order workflows get its :class:`VenueEvent`). Inserted
    once (``ON CONFLICT DO NOTHING``) before the FIX session advances its inbound sequence
    number; ``delivered_at`` is set once the order workflow has been signalled. Undelivered rows
    carry a retry schedule (``next_attempt_at``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from db import sql
from db.engines import make_engine
from db.pgpool import StatementPool
from domain.execution import RouteFacts, VenueEvent, VenueEventKind
from fix.messages import ExecReport, report_from_payload, venue_event

SENDING = "sending"
SENT = "sent"
ABANDONED = "abandoned"  # a new order its workflow gave up routing: never sent, never will be


@dataclass(frozen=True)
class SendReservation:
    """The state of a ClOrdID after :meth:`GatewayStore.reserve_send`."""

    cl_ord_id: str
    order_id: str
    venue: str
    msg_type: str
    status: str  # sending | sent
    created: bool  # True: this call reserved it (nothing was sent before)
    attempts: int = 1


@dataclass(frozen=True)
class RouteRecord:
    """A new order's route (``gateway_routes``): venue, policy and why, the NBBO at routing."""

    order_id: str
    venue: str
    policy: str
    reason: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    qty: str
    limit_price: str | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    quote_age_ms: int | None = None


@dataclass(frozen=True)
class Recorded:
    """What :meth:`GatewayStore.record_report` did: ``new`` (see there) and the route of the
    order the report is about (None: no route recorded, e.g. an order this gateway never sent)."""

    new: bool | None
    route: RouteFacts | None = None


@dataclass(frozen=True)
class RecentRoute:
    order_id: str
    venue: str
    side: str
    symbol: str
    qty: str
    bid: Decimal | None
    ask: Decimal | None
    at: float  # routed_at, epoch seconds


@dataclass(frozen=True)
class RecentRoutes:
    """What :meth:`GatewayStore.recent_routes` read: the routes, ``(replacement, route)`` pairs,
    and ``(event, received_at epoch seconds)`` for every report about them."""

    routes: list[RecentRoute]
    replacements: list[tuple[str, str]]
    reports: list[tuple[VenueEvent, float]]


@dataclass(frozen=True)
class PendingReport:
    """An undelivered report row."""

    id: int
    venue: str
    exec_id: str
    order_id: str
    attempts: int
    event: VenueEvent  # what the order workflow is signalled


def event_from_payload(payload: dict[str, Any] | str) -> VenueEvent:
    """The venue event of a recorded report (the row keeps the report as the venue sent it)."""
    data = json.loads(payload) if isinstance(payload, str) else payload
    return venue_event(report_from_payload(data))


class GatewayStore:
    """Async access to the gateway tables.

    Every method is ONE statement, run in autocommit: atomic on its own, one round trip instead
    of BEGIN / statement / COMMIT (a market order makes about five of these calls). They run on
    a psycopg pool (:class:`db.pgpool.StatementPool`), not through SQLAlchemy, whose per-use
    cost was a quarter of the gateway's CPU per order. A statement that fails on a
    serialization failure or deadlock is retried. ``engine`` (SQLAlchemy, same database) is for
    readers outside the hot path; it connects only when used."""

    def __init__(self, engine: AsyncEngine, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        self.engine = engine
        self.statements = StatementPool(engine.url.render_as_string(hide_password=False),
                                        min_size=min(2, pool_size),
                                        max_size=pool_size + max_overflow)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> GatewayStore:
        return cls(make_engine(url, pool_size=pool_size, max_overflow=max_overflow, autocommit=True),
                   pool_size=pool_size, max_overflow=max_overflow)

    async def dispose(self) -> None:
        await self.statements.close()
        await self.engine.dispose()

    async def _first(self, statement: str, params: dict[str, Any]) -> sql.Row | None:
        return await self.statements.first(statement, params)

    async def _rows(self, statement: str, params: dict[str, Any]) -> list[sql.Row]:
        return await self.statements.rows(statement, params)

    async def read(self, statement: str, params: dict[str, Any]) -> list[sql.Row]:
        """Rows of a read-only statement (reports: db/execution_quality.py)."""
        return await self._rows(statement, params)

    async def _execute(self, statement: str, params: dict[str, Any]) -> None:
        await self.statements.execute(statement, params)

    # ------------------------------------------------------------------ outbound sends

    async def reserve_send(
        self, cl_ord_id: str, order_id: str, venue: str, msg_type: str, *,
        account_id: str | None = None, shard: int | None = None, route_of: str | None = None,
    ) -> SendReservation:
        """Reserve ``cl_ord_id`` for ``venue``, or return the existing reservation. A new
        order's reservation records where the order lives (``account_id``, ``shard``); a
        replacement's (``route_of``: the order it replaces) the route it belongs to, the first
        order of the chain.

        When the ClOrdID is already known, its recorded venue wins over ``venue`` (the message
        may already be at that venue) and its attempt counter is incremented.
        """
        row = await self._first(
            """INSERT INTO gateway_orders (cl_ord_id, order_id, venue, msg_type, account_id, shard,
                                           route_order_id)
               VALUES (:c, :o, :v, :t, :a, :s,
                       CASE WHEN CAST(:r AS text) IS NOT NULL THEN coalesce(
                           (SELECT x.route_order_id FROM gateway_orders x WHERE x.cl_ord_id = :r),
                           :r) END)
               ON CONFLICT (cl_ord_id) DO NOTHING
               RETURNING venue, status, attempts""",
            {"c": cl_ord_id, "o": order_id, "v": venue, "t": msg_type, "a": account_id, "s": shard,
             "r": route_of})
        if row is not None:
            return SendReservation(cl_ord_id, order_id, row["venue"], msg_type, row["status"], True,
                                   row["attempts"])
        # known already (rows are never deleted, so it is still there)
        row = await self._first(
            """UPDATE gateway_orders SET attempts = attempts + 1 WHERE cl_ord_id = :c
               RETURNING order_id, venue, msg_type, status, attempts""", {"c": cl_ord_id})
        assert row is not None, cl_ord_id
        return _reservation(cl_ord_id, row)

    async def mark_sent(self, cl_ord_id: str, msg_seq_num: int | None = None) -> None:
        await self._execute(_MARK_SENT, {"c": cl_ord_id, "n": msg_seq_num})

    async def abandon(self, cl_ord_id: str, order_id: str) -> SendReservation:
        """Reserve a new order's ClOrdID as abandoned unless a send reserved it first; returns
        the reservation as it stands (``status`` ``abandoned``: nothing was or will be sent)."""
        row = await self._first(
            """INSERT INTO gateway_orders (cl_ord_id, order_id, venue, msg_type, status)
               VALUES (:c, :o, '', 'D', 'abandoned') ON CONFLICT (cl_ord_id) DO NOTHING
               RETURNING venue, status, attempts""", {"c": cl_ord_id, "o": order_id})
        if row is not None:
            return SendReservation(cl_ord_id, order_id, row["venue"], "D", row["status"], True,
                                   row["attempts"])
        existing = await self.get_send(cl_ord_id)
        assert existing is not None, cl_ord_id
        return existing

    async def order_home(self, order_id: str) -> tuple[str, int] | None:
        """The account and shard of an order the gateway sent (None: not known here)."""
        row = await self._first(
            """SELECT account_id, shard FROM gateway_orders
               WHERE order_id = :o AND account_id IS NOT NULL AND shard IS NOT NULL LIMIT 1""",
            {"o": order_id})
        return None if row is None else (row["account_id"], row["shard"])

    async def get_send(self, cl_ord_id: str) -> SendReservation | None:
        row = await self._first(
            """SELECT order_id, venue, msg_type, status, attempts FROM gateway_orders
               WHERE cl_ord_id = :c""", {"c": cl_ord_id})
        return None if row is None else _reservation(cl_ord_id, row)

    async def record_route(self, route: RouteRecord) -> None:
        """The order's route as decided, with the NBBO at routing (once: a retry keeps the
        first; ``routed_at`` is the database's clock)."""
        await self._execute(
            """INSERT INTO gateway_routes
                   (order_id, venue, policy, reason, symbol, side, order_type, time_in_force, qty,
                    limit_price, bid, ask, quote_age_ms)
               VALUES (:o, :v, :p, :r, :s, :side, :t, :tif, CAST(:q AS numeric),
                       CAST(:lp AS numeric), CAST(:b AS numeric), CAST(:a AS numeric), :age)
               ON CONFLICT (order_id) DO NOTHING""",
            {"o": route.order_id, "v": route.venue, "p": route.policy, "r": route.reason,
             "s": route.symbol, "side": route.side, "t": route.order_type,
             "tif": route.time_in_force, "q": route.qty, "lp": route.limit_price,
             "b": None if route.bid is None else str(route.bid),
             "a": None if route.ask is None else str(route.ask), "age": route.quote_age_ms})

    # ------------------------------------------------------------------ inbound reports

    async def record_report(self, signal: ExecReport, *, deliverable: bool = True) -> Recorded:
        """Insert the report once. ``new`` None: recorded before (a duplicate); True: new, to
        deliver; False: new and kept for the audit only, booked as delivered --
        ``deliverable=False`` (it names no order) or an order this gateway never sent (a
        ClOrdID it does not know: never delivered to a workflow, so nothing books it).
        ``route``: the route of the order the report is about (see :func:`route_facts`), read in
        the same statement."""
        row = await self._first(
            """WITH g AS (
               INSERT INTO gateway_reports
                   (venue, exec_id, order_id, cl_ord_id, msg_type, payload, delivered_at,
                    last_error)
               SELECT :v, :e, :o, :c, :t, CAST(:p AS jsonb),
                      CASE WHEN k.ok THEN NULL ELSE now() END,
                      CASE WHEN NOT :d THEN 'not deliverable'
                           WHEN NOT k.ok THEN 'refused: an order this gateway never sent' END
                 FROM (SELECT :d AND EXISTS (SELECT 1 FROM gateway_orders WHERE order_id = :o) AS ok) k
               ON CONFLICT (venue, exec_id) DO NOTHING
               RETURNING order_id, received_at, delivered_at IS NULL AS deliverable)
               SELECT g.deliverable, """ + _ROUTE_COLS + " FROM g " + _ROUTE_JOIN,
            {"v": signal.venue, "e": signal.exec_id, "o": signal.order_id,
             "c": signal.cl_ord_id, "t": signal.msg_type, "p": json.dumps(asdict(signal)),
             "d": deliverable})
        if row is None:
            return Recorded(None)
        return Recorded(bool(row["deliverable"]), route_facts(row))

    async def list_undelivered(self, limit: int = 500) -> list[PendingReport]:
        """Undelivered reports that are due, oldest first."""
        rows = await self._rows(
            """SELECT g.id, g.venue, g.exec_id, g.order_id, g.attempts, g.payload, """
            + _ROUTE_COLS + """
                 FROM (SELECT * FROM gateway_reports
                        WHERE delivered_at IS NULL AND next_attempt_at <= now()
                        ORDER BY id LIMIT :n) g """ + _ROUTE_JOIN + " ORDER BY g.id", {"n": limit})
        return [PendingReport(r["id"], r["venue"], r["exec_id"], r["order_id"], r["attempts"],
                              with_route(event_from_payload(r["payload"]), route_facts(r)))
                for r in rows]

    async def mark_delivered(self, keys: list[tuple[str, str]], *,
                             sent: tuple[str, int] | None = None) -> None:
        """Set ``delivered_at`` on the ``(venue, exec_id)`` rows (idempotent); with ``sent``
        (ClOrdID, MsgSeqNum), mark that send as :meth:`mark_sent` does, in the same statement."""
        if not keys and sent is None:
            return
        params: dict[str, Any] = {"v": [k[0] for k in keys], "e": [k[1] for k in keys]}
        mark = ""
        if sent is not None:
            mark = f"WITH s AS ({_MARK_SENT})\n"
            params.update({"c": sent[0], "n": sent[1]})
        await self._execute(
            mark + """UPDATE gateway_reports r SET delivered_at = now(), last_error = NULL
               FROM unnest(CAST(:v AS text[]), CAST(:e AS text[])) AS k(venue, exec_id)
               WHERE r.venue = k.venue AND r.exec_id = k.exec_id
                 AND r.delivered_at IS NULL""", params)

    async def defer_order(self, order_id: str, delay_s: float, error: str) -> None:
        """Postpone every undelivered report of ``order_id`` (keeps their relative order)."""
        await self._execute(
            """UPDATE gateway_reports
               SET attempts = attempts + 1, last_error = :err,
                   next_attempt_at = now() + make_interval(secs => :d)
               WHERE order_id = :o AND delivered_at IS NULL""",
            {"o": order_id, "d": delay_s, "err": error[:1000]})

    async def reports_for_order(self, order_id: str) -> list[tuple[VenueEvent, bool]]:
        """Every report booked for ``order_id`` in arrival order, with its delivered flag."""
        rows = await self._rows(
            """SELECT g.payload, g.delivered_at IS NOT NULL AS delivered, """ + _ROUTE_COLS + """
                 FROM gateway_reports g """ + _ROUTE_JOIN + """
                WHERE g.order_id = :o ORDER BY g.id""", {"o": order_id})
        return [(with_route(event_from_payload(r["payload"]), route_facts(r)), bool(r["delivered"]))
                for r in rows]

    # ------------------------------------------------------------------ venue quality

    async def recent_routes(self, venues: list[str], per_venue: int) -> RecentRoutes:
        """The last ``per_venue`` routes of each venue (oldest first), the replacements of those
        orders, and every report about them in arrival order: what a starting gateway warms its
        venue scores from. Times are the database clock's, in seconds."""
        routes = await self._rows(
            """SELECT r.order_id, r.venue, r.side, r.symbol, r.qty::text AS qty, r.bid, r.ask,
                      extract(epoch FROM r.routed_at)::float8 AS at
                 FROM unnest(CAST(:vs AS text[])) AS v(venue),
                      LATERAL (SELECT * FROM gateway_routes x WHERE x.venue = v.venue
                                ORDER BY x.routed_at DESC LIMIT :n) r
                ORDER BY r.routed_at, r.order_id""", {"vs": venues, "n": per_venue})
        ids = [r["order_id"] for r in routes]
        if not ids:
            return RecentRoutes([], [], [])
        chains = await self._rows(
            """SELECT cl_ord_id, route_order_id FROM gateway_orders
                WHERE route_order_id = ANY(CAST(:ids AS text[])) ORDER BY created_at, cl_ord_id""",
            {"ids": ids})
        every = ids + [c["cl_ord_id"] for c in chains]
        reports = await self._rows(
            """SELECT payload, extract(epoch FROM received_at)::float8 AS at FROM gateway_reports
                WHERE order_id = ANY(CAST(:ids AS text[])) ORDER BY id LIMIT :n""",
            {"ids": every, "n": 20 * len(every)})
        return RecentRoutes(
            [RecentRoute(r["order_id"], r["venue"], r["side"], r["symbol"], r["qty"],
                         _dec(r["bid"]), _dec(r["ask"]), r["at"]) for r in routes],
            [(c["cl_ord_id"], c["route_order_id"]) for c in chains],
            [(event_from_payload(r["payload"]), r["at"]) for r in reports])


# The route of the order a report (``g``: order_id, received_at) is about: its own, or for a
# replacement the route of the first order of its chain (gateway_orders.route_order_id).
# LIMIT 1 (order_id is the key: at most one row anyway) keeps the lookup a lateral subquery, one
# probe of the key per report: flattened into a join, the planner hashed the whole of
# gateway_routes for the delivery loop's every pass (one per order, the table growing with every
# order routed: measured 1.8M rows read for 1,500 orders).
_ROUTE_JOIN = """
LEFT JOIN LATERAL (
    SELECT r.venue AS route_venue, r.order_id AS route_order_id, r.order_type AS route_type,
           r.side AS route_side, r.limit_price AS route_limit, r.bid AS route_bid,
           r.ask AS route_ask, r.quote_age_ms AS route_age_ms, r.routed_at AS route_at
      FROM gateway_routes r
     WHERE r.order_id = coalesce((SELECT o.route_order_id FROM gateway_orders o
                                   WHERE o.cl_ord_id = g.order_id), g.order_id)
     LIMIT 1) rt ON true
"""
_ROUTE_COLS = """rt.route_venue, rt.route_order_id, rt.route_type, rt.route_side, rt.route_limit,
    rt.route_bid, rt.route_ask, rt.route_age_ms, rt.route_at,
    (extract(epoch FROM g.received_at - rt.route_at) * 1000)::bigint AS route_since_ms"""


def route_facts(row: sql.Row) -> RouteFacts | None:
    """The :class:`RouteFacts` of a row selected with ``_ROUTE_COLS``; None without a route."""
    if row["route_venue"] is None:
        return None

    def s(v: Any) -> str | None:
        return None if v is None else str(v)

    return RouteFacts(
        venue=row["route_venue"], route_order_id=row["route_order_id"],
        order_type=row["route_type"], side=row["route_side"],
        routed_at=row["route_at"].isoformat(), limit_price=s(row["route_limit"]),
        bid=s(row["route_bid"]), ask=s(row["route_ask"]), quote_age_ms=row["route_age_ms"],
        since_routed_ms=row["route_since_ms"])


def with_route(event: VenueEvent, route: RouteFacts | None) -> VenueEvent:
    """``event`` carrying its order's route when it is a fill (the shard stores it with the
    execution); any other event as it is."""
    if route is None or event.kind != VenueEventKind.FILL:
        return event
    return replace(event, route=route)


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


_MARK_SENT = """UPDATE gateway_orders
   SET status = 'sent', sent_at = COALESCE(sent_at, now()),
       msg_seq_num = COALESCE(CAST(:n AS integer), msg_seq_num)
 WHERE cl_ord_id = :c"""


def _reservation(cl_ord_id: str, row: sql.Row) -> SendReservation:
    return SendReservation(cl_ord_id, row["order_id"], row["venue"], row["msg_type"], row["status"],
                           False, row["attempts"])
