"""Prometheus metrics of every Sherwood process: the one home for their names, and the
``/metrics`` server each process runs on its own loopback port.

- In-process counters, gauges and histograms live in the default registry and are updated on
  the hot path (an increment, no I/O): orders by state and reason, accept->terminal latency,
  ledger post latency, outbox publish lag, FIX session state and sequence gaps, undeliverable
  reports, fan-out clients/buffers/lag, ingest messages and drops, rate-limit refusals.
- Where the database is the truth (STUCK orders, the oldest unpublished outbox row, the last
  reconciliation and settlement per shard), :class:`ShardGauges` computes the gauges at scrape
  time, each shard's query bounded by ``metrics_scrape_timeout_s``; a shard that does not answer
  in time is reported by ``sherwood_shard_scrape_ok{shard} 0`` instead of stalling the scrape.
  Only the back-office process registers it (one exporter per fact, no double counting).
- :func:`start_metrics_server` serves the registry on ``bind_host:metrics_port`` from a daemon
  thread (prometheus-client's own server), when ``metrics_port`` is set; ``sherwood dev`` gives
  each child its port from ``dev_metrics_ports``.

What it does not do: push anywhere, keep history (Prometheus does), or decide anything: the
alerts on these metrics are in ``deploy/alerts.yml``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# ---------------------------------------------------------------- orders (shard workers)
ORDERS = Counter("sherwood_orders_total",
                 "Order state changes committed, by the state entered and why (event or reject code)",
                 ["state", "reason"])
ORDER_LATENCY = Histogram("sherwood_order_accept_to_terminal_seconds",
                          "From an order's acceptance to its terminal state, by that state",
                          ["state"], buckets=LATENCY_BUCKETS)
LEDGER_POST = Histogram("sherwood_ledger_post_seconds",
                        "One ledger transaction posted (in its DB transaction)", buckets=FAST_BUCKETS)
OUTBOX_LAG = Histogram("sherwood_outbox_publish_lag_seconds",
                       "From an outbox row's commit to its publication on Redis", buckets=FAST_BUCKETS)
OUTBOX_PUBLISHED = Counter("sherwood_outbox_published_total", "Outbox rows published")

# ---------------------------------------------------------------- execution gateway
FIX_SESSION_UP = Gauge("sherwood_fix_session_up", "1 while the FIX session to the venue is logged on",
                       ["venue"])
# the live FIX sessions of this process per venue (a gateway registers its own, and takes them
# back when it stops): the gauge reads 1 while any of them is logged on
_FIX_SESSIONS: dict[str, list[Callable[[], bool]]] = {}


def fix_session(venue: str, logged_on: Callable[[], bool]) -> Callable[[], None]:
    """Report ``venue``'s session state at scrape time; returns the call that takes it back."""
    sessions = _FIX_SESSIONS.setdefault(venue, [])
    sessions.append(logged_on)
    FIX_SESSION_UP.labels(venue=venue).set_function(
        lambda: float(any(up() for up in _FIX_SESSIONS.get(venue, []))))

    def forget() -> None:
        if logged_on in sessions:
            sessions.remove(logged_on)

    return forget


FIX_SEQUENCE_GAPS = Counter("sherwood_fix_sequence_gaps_total",
                            "Inbound sequence gaps detected (a resend was requested)", ["venue"])
REPORTS_UNDELIVERABLE = Counter("sherwood_reports_undeliverable_total",
                                "Execution reports whose order workflow could not be signalled "
                                "(postponed; retried with backoff)")
REPORTS_DELIVERED = Counter("sherwood_reports_delivered_total",
                            "Execution reports delivered to their workflow")

# ---------------------------------------------------------------- market data
# (clients, queue depth and the server's own counters: FanoutGauges, read at scrape time)
FANOUT_LAG = Histogram("sherwood_fanout_lag_seconds",
                       "A flush round's duration plus the batching window: how late the round's "
                       "last connection got what the first got", buckets=FAST_BUCKETS)
# (ingest's accepted/dropped counts: IngestCounters, read at scrape time)

# ---------------------------------------------------------------- API
RATE_LIMIT_REFUSALS = Counter("sherwood_rate_limit_refusals_total", "Requests refused by a rate limit (429)",
                              ["limit"])
ADMISSION_REFUSALS = Counter("sherwood_order_admission_refusals_total",
                             "Orders refused because their shard had its limit of orders in "
                             "transit (429 over_capacity, api/admission.py)", ["shard"])
ADMISSION_WAIT = Histogram("sherwood_order_admission_wait_seconds",
                           "POST /v2/orders admitted: how long it waited for its shard's slot "
                           "(0 when one was free; api/admission.py)", buckets=FAST_BUCKETS)
ORDER_ACCEPT = Histogram("sherwood_order_accept_seconds",
                         "POST /v2/orders: the order's accept in its workflow, from the update's "
                         "send to its answer (after admission)", buckets=FAST_BUCKETS)

_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def label(value: str | None, default: str = "other") -> str:
    """A label value from outside text, bounded: a short identifier, else ``default`` (free text
    in a label would make every distinct message a new time series)."""
    return value if value is not None and _LABEL.match(value) else default


def order_transitions(transitions: Iterable[tuple[str, str | None, datetime | None]], now: datetime) -> None:
    """Count committed order state changes: (state entered, why, the order's acceptance time
    when the state is terminal, else None). Called after the commit, never inside it."""
    for state, why, accepted_at in transitions:
        st = label(state.lower())
        ORDERS.labels(state=st, reason=label(why)).inc()
        if accepted_at is not None:
            ORDER_LATENCY.labels(state=st).observe(max((now - accepted_at).total_seconds(), 0.0))


# ---------------------------------------------------------------- scrape-time gauges

_SHARD_FACTS = """
SELECT
  (SELECT count(*) FROM orders WHERE state = 'STUCK') AS stuck,
  (SELECT extract(epoch FROM clock_timestamp() - min(created_at)) FROM outbox
     WHERE published_at IS NULL) AS outbox_age,
  (SELECT ok FROM reconciliation_runs ORDER BY id DESC LIMIT 1) AS recon_ok,
  (SELECT max(business_date) FROM settlement_runs) AS settled_through,
  (SELECT count(*) FROM shard_halts WHERE cleared_at IS NULL) AS halts
"""


class ShardGauges(Collector):
    """Gauges read from every shard at scrape time (see the module docstring).

    ``shards``: (shard number, async engine). The scrape runs on the process's event loop
    ``loop`` (the engines belong to it); the scraping thread waits at most ``timeout_s`` per
    shard plus a little."""

    def __init__(self, shards: Sequence[tuple[int, Any]], loop: asyncio.AbstractEventLoop,
                 timeout_s: float, today: Callable[[], date] | None = None) -> None:
        self.shards = list(shards)
        self.loop = loop
        self.timeout_s = timeout_s
        self.today = today or (lambda: datetime.now(UTC).date())

    async def _one(self, engine: Any) -> dict[str, Any]:
        from sqlalchemy import text

        async with engine.connect() as conn:
            row = (await conn.execute(text(_SHARD_FACTS))).mappings().one()
            return dict(row)

    async def _all(self) -> list[tuple[int, dict[str, Any] | None]]:
        async def bounded(n: int, engine: Any) -> tuple[int, dict[str, Any] | None]:
            try:
                return n, await asyncio.wait_for(self._one(engine), self.timeout_s)
            except Exception as exc:  # a slow or down shard must not fail the whole scrape
                log.warning("metrics: shard %s not read: %s", n, exc)
                return n, None
        return list(await asyncio.gather(*(bounded(n, e) for n, e in self.shards)))

    def describe(self) -> Iterable[Any]:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterable[Any]:
        ok = GaugeMetricFamily("sherwood_shard_scrape_ok",
                               "1 if the shard answered the metrics query in time", labels=["shard"])
        stuck = GaugeMetricFamily("sherwood_orders_stuck", "Orders in STUCK (waiting for an operator)",
                                  labels=["shard"])
        outbox = GaugeMetricFamily("sherwood_outbox_oldest_pending_seconds",
                                   "Age of the oldest unpublished outbox row (0: none)", labels=["shard"])
        recon = GaugeMetricFamily("sherwood_reconciliation_ok",
                                  "1 if the shard's last reconciliation found the books right, 0 if not, "
                                  "-1 if none ran yet", labels=["shard"])
        settled = GaugeMetricFamily("sherwood_settlement_days_behind",
                                    "Calendar days since the last settled business date (-1: none yet)",
                                    labels=["shard"])
        halts = GaugeMetricFamily("sherwood_shard_halts_open", "Open trading halts on the shard",
                                  labels=["shard"])
        future = asyncio.run_coroutine_threadsafe(self._all(), self.loop)
        try:
            results = future.result(self.timeout_s + 1.0)
        except Exception as exc:
            future.cancel()
            log.warning("metrics: shard gauges not read: %s", exc)
            results = [(n, None) for n, _ in self.shards]
        today = self.today()
        for n, row in results:
            shard = str(n)
            ok.add_metric([shard], 0 if row is None else 1)
            if row is None:
                continue
            stuck.add_metric([shard], float(row["stuck"]))
            outbox.add_metric([shard], float(row["outbox_age"] or 0.0))
            recon.add_metric([shard], -1 if row["recon_ok"] is None else int(bool(row["recon_ok"])))
            through = row["settled_through"]
            settled.add_metric([shard], -1 if through is None else (today - through).days)
            halts.add_metric([shard], float(row["halts"]))
        return [ok, stuck, outbox, recon, settled, halts]


class FanoutGauges(Collector):
    """The fan-out server's state read at scrape time (nothing added to its hot path): open
    connections, bytes queued for them (ours and the sockets' write buffers), and its own
    counters (``FanoutServer.stats``)."""

    COUNTERS = {"delivered": "Messages sent to clients", "frames": "Frames sent to clients",
                "slow_disconnects": "Connections cut for being slow (407)",
                "redis_reconnects": "Reconnections to Redis", "received": "Messages read from Redis"}

    def __init__(self, server: Any) -> None:
        self.server = server

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        conns = list(self.server.conns)  # one C-level copy: the loop may change the set meanwhile
        queued = 0
        for c in conns:
            transport = getattr(c.ws, "transport", None)
            queued += c.buffered + (transport.get_write_buffer_size() if transport is not None else 0)
        yield GaugeMetricFamily("sherwood_fanout_clients", "Open market-data WebSocket connections",
                                value=len(conns))
        yield GaugeMetricFamily("sherwood_fanout_queue_bytes",
                                "Bytes waiting to be sent to all connections", value=queued)
        stats = dict(self.server.stats)
        for key, doc in self.COUNTERS.items():
            yield CounterMetricFamily(f"sherwood_fanout_{key}", doc, value=stats.get(key, 0))


class IngestCounters(Collector):
    """Market-data ingest's own counts read at scrape time (its hot path keeps plain dicts):
    ``sherwood_ingest_accepted_total{kind}`` and ``sherwood_ingest_dropped_total{reason}``."""

    def __init__(self, ingest: Any) -> None:
        self.ingest = ingest

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        accepted = CounterMetricFamily("sherwood_ingest_accepted", "Feed messages accepted, by kind",
                                       labels=["kind"])
        for kind, n in dict(self.ingest.accepted).items():
            accepted.add_metric([kind], n)
        dropped = CounterMetricFamily("sherwood_ingest_dropped", "Feed messages dropped, by reason",
                                      labels=["reason"])
        for reason, n in dict(self.ingest.dropped).items():
            dropped.add_metric([reason], n)
        return [accepted, dropped]


_server_lock = threading.Lock()
_served: dict[tuple[str, int], Any] = {}


def start_metrics_server(host: str, port: int | None) -> str | None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (once per process); returns the
    URL, or None when ``port`` is None (metrics off) or cannot be bound. A port in use is logged
    as an error and the process runs on without metrics (Prometheus sees the target down and
    ``SherwoodProcessDown`` fires): metrics never stop trading."""
    if port is None:
        return None
    url = f"http://{host}:{port}/metrics"
    with _server_lock:
        if (host, port) not in _served:
            try:
                _served[(host, port)] = start_http_server(port, addr=host)
            except OSError as exc:
                log.error("metrics: cannot serve %s: %s; running without metrics", url, exc)
                return None
    log.info("metrics on %s", url)
    return url


def register_once(collector: Collector) -> Collector:
    """Register ``collector`` in the default registry (a second one of the same class replaces
    the first: a process restarting its component in-place keeps one)."""
    for existing in list(getattr(REGISTRY, "_collector_to_names", {})):
        if type(existing) is type(collector):
            REGISTRY.unregister(existing)
    REGISTRY.register(collector)
    return collector


def prometheus_config(targets: dict[str, str], *, rule_files: Sequence[str] = (),
                      scrape_interval_s: float = 15.0) -> dict[str, Any]:
    """A Prometheus configuration scraping ``targets`` ({process: /metrics URL}), one job per
    process (the job label names the process kind)."""
    jobs = []
    for name, url in sorted(targets.items()):
        scheme, _, rest = url.partition("://")
        hostport, _, path = rest.partition("/")
        jobs.append({"job_name": name, "scheme": scheme, "metrics_path": f"/{path}",
                     "static_configs": [{"targets": [hostport]}]})
    interval = f"{scrape_interval_s:g}s"
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": list(rule_files), "scrape_configs": jobs}


def write_prometheus_config(path: Any, targets: dict[str, str], **kwargs: Any) -> None:
    """Write :func:`prometheus_config` to ``path`` (JSON, which is YAML), with the repository's
    ``deploy/alerts.yml`` as its rules when it is there (a source checkout)."""
    import json
    from pathlib import Path

    alerts = Path(__file__).resolve().parents[1] / "deploy" / "alerts.yml"
    kwargs.setdefault("rule_files", [str(alerts)] if alerts.exists() else [])
    Path(path).write_text(json.dumps(prometheus_config(targets, **kwargs), indent=2))
