"""The one typed settings object (environment variables ``SHERWOOD_*``).

Only entry points (CLI commands, process mains, test fixtures) build a :class:`Settings`; everything
else receives the values it needs. Every duration is a setting so tests can run them short.

When a URL is not configured, a running ``sherwood dev`` stack is found through the
``stack.json`` it writes into the data directory (see :meth:`Settings.resolved`).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.roles import Login, with_login
from domain.risk import RiskLimits

STACK_FILE = "stack.json"
# `sherwood dev`'s children and their /metrics ports (deploy/prometheus.yml scrapes these)
DEV_METRICS_PORTS = {"api": 9100, "shard-worker": 9101, "gateway": 9102, "backoffice": 9103,
                     "ingest": 9104, "fanout": 9105, "mm1": 9106, "mm2": 9107, "exchange-feed": 9108}


def default_data_dir() -> Path:
    return Path.home() / ".sherwood"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHERWOOD_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    # What this deployment is (SHERWOOD_ENV). "production" (the default) refuses to start what
    # would run unprotected, e.g. the gateway's direct link without SHERWOOD_GATEWAY_LINK_SECRET;
    # "dev" and "test" run without it instead (sherwood/link_secret.py).
    env: Literal["production", "dev", "test"] = "production"
    shards: int = Field(default=4, ge=1, le=64)

    # Postgres: either one server URL (databases named <db_prefix>_directory, <db_prefix>_shard_<n>)
    # or explicit URLs per database. Unset everywhere -> embedded server (sherwood dev).
    postgres_url: str | None = None
    directory_url: str | None = None
    shard_urls: list[str] | None = None
    db_prefix: str = "sherwood"
    # Least privilege (db/roles.py): `sherwood migrate` creates and migrates every database as
    # the owner (this user and password in place of each URL's), then makes each URL's own user
    # a service role that may read and append but not rewrite the books. Unset: migrations run
    # as the URLs' user (no roles are managed; `sherwood migrate` warns).
    db_owner_user: str | None = None
    db_owner_password: SecretStr | None = None
    # The API's own login (db/roles.py): `sherwood migrate` makes it a role that reads and writes
    # only what the API writes itself (watchlists, ops tables; no ledger, orders or transfers),
    # and the API process connects with it in place of each URL's user (Settings.for_api).
    # Unset: the API connects as the service role. `sherwood dev` and the tests set one.
    api_db_user: str | None = None
    api_db_password: SecretStr | None = None
    db_pool_size: int = 5  # per shard, per process
    db_max_overflow: int = 10

    redis_url: str | None = None
    redis_prefix: str = "sherwood"
    shard_cache_ttl_s: int = 3600

    # Timeouts on shared infrastructure. Every Redis client of the processes is built by
    # sherwood.redis_client.redis_from_url with these: a Redis that accepts the connection and
    # never answers fails a command within redis_socket_timeout_s instead of hanging it.
    redis_socket_timeout_s: float = 2.0
    redis_connect_timeout_s: float = 2.0
    redis_health_check_interval_s: float = 15.0  # an idle pooled connection is PINGed first
    # a worker process's stop (shard, back office) waits this long for its activities to end
    worker_shutdown_timeout_s: float = 15.0
    # Postgres sessions on the request path (the API, the shard workers, the fan-out's key
    # lookups; not the back office, migrations or the CLI): a statement running longer, or
    # waiting longer for a lock, is canceled by the server (SQLSTATE 57014 / 55P03). The API
    # answers 503 "db_timeout"; see db.engines.is_db_timeout.
    db_statement_timeout_s: float = 5.0
    db_lock_timeout_s: float = 2.0
    # Failed logins (unknown key, wrong secret) per source address: over this many in the
    # window, the source gets 429 "too_many_failed_logins" before any directory lookup.
    login_failures_per_source: int = Field(default=10, ge=1)
    login_failure_window_s: float = 60.0
    # Operator identity (domain/ops.py, docs/operations.md "Operator identity"). The names
    # `sherwood ops|keys ... --operator NAME` accepts (SHERWOOD_OPS_OPERATORS='["alice","bob"]');
    # a resolution of a STUCK order booking more than ops_four_eyes_notional (USD) waits for a
    # second, different operator's approval; an ops key lives ops_key_days unless told otherwise.
    ops_operators: list[str] = Field(default_factory=list)
    ops_four_eyes_notional: Decimal = Field(default=Decimal(10000), ge=0)
    ops_key_days: int = Field(default=90, ge=1, le=366)
    # Trade updates WebSockets (GET /stream) one API key may hold open in one API process.
    stream_max_connections_per_key: int = Field(default=5, ge=1)

    temporal_address: str | None = None
    temporal_namespace: str = "default"
    # TLS to Temporal (Temporal Cloud, or a self-hosted cluster with mTLS; sherwood/temporal.py):
    # temporal_tls alone -> TLS with the system's roots; a client cert + key -> mTLS; server_ca
    # -> trust that CA instead; server_name -> the name the server's certificate must carry.
    temporal_tls: bool = False
    temporal_tls_client_cert: Path | None = None
    temporal_tls_client_key: Path | None = None
    temporal_tls_server_ca: Path | None = None
    temporal_tls_server_name: str | None = None

    # Local stack (sherwood dev). Every server binds 127.0.0.1 unless configured otherwise.
    bind_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    embedded_pg_port: int = 5433
    embedded_redis_port: int = 6380
    dev_health_timeout_s: float = 90.0
    dev_venue_ports: list[int] = Field(default_factory=lambda: [9878, 9879])  # MM1, MM2
    # How the dev venues differ (per venue, in dev_venue_ports order; simulators/matching.py):
    # fixed price improvement per share in cents, seconds before each report, the share of new
    # orders declined and of DAY/GTC orders filled in two halves. MM1 improves by 1 cent and MM2
    # by 0.1 cent, so smart routing (gateway_routing="smart") has something to learn.
    dev_venue_improvement_cents: list[Decimal] = Field(
        default_factory=lambda: [Decimal(1), Decimal("0.1")])
    dev_venue_latency_s: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    dev_venue_reject_rate: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    dev_venue_partial_fill_rate: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    # sherwood dev supervises its children (sherwood/supervisor.py): a child that dies is started
    # again after a backoff (initial, doubled per death in a row, at most max; reset once it has
    # stayed up stable_s); a stop gives each tier stop_grace_s before SIGKILL. Its children get
    # dev_supervisor_pid and exit (SIGTERM to themselves, then hard after stop_grace_s) when
    # that process is gone, checked every parent_check_s.
    dev_restart_backoff_initial_s: float = Field(default=0.5, gt=0)
    dev_restart_backoff_max_s: float = Field(default=30.0, gt=0)
    dev_restart_stable_s: float = Field(default=60.0, ge=0)
    dev_supervise_interval_s: float = Field(default=0.2, gt=0)
    dev_stop_grace_s: float = Field(default=5.0, ge=0)
    dev_parent_check_s: float = Field(default=1.0, gt=0)
    dev_supervisor_pid: int | None = None
    # Metrics (sherwood/metrics.py): this process serves Prometheus's /metrics on
    # bind_host:metrics_port (None: no metrics server). `sherwood dev` gives each child its port
    # from dev_metrics_ports (by process name) and lists the URLs in stack.json ("metrics").
    # Gauges read from the shards at scrape time wait at most metrics_scrape_timeout_s per shard.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    dev_metrics_ports: dict[str, int] = Field(default_factory=lambda: dict(DEV_METRICS_PORTS))
    metrics_scrape_timeout_s: float = Field(default=2.0, gt=0)
    # the embedded Redis's RDB snapshot policy ("seconds changes" pairs; no append-only file) and
    # how long a start waits for Redis (embedded or configured) to load its dataset
    embedded_redis_save: str = "3600 1 300 100 60 10000"
    redis_load_timeout_s: float = 120.0

    # Orders: every duration is a setting so tests run them short and real.
    venue_ack_timeout_s: float = 30.0
    venue_cancel_timeout_s: float = 10.0
    venue_status_timeout_s: float = 10.0
    # a cancel/replace with no venue answer this long -> status request; none within
    # venue_status_timeout_s -> the original STUCK, the replacement REJECTED
    venue_replace_timeout_s: float = 10.0
    # an order no venue took within this long (no venue up) is abandoned: REJECTED, funds released
    venue_route_market_timeout_s: float = 10.0
    venue_route_limit_timeout_s: float = 300.0
    day_expiry_grace_s: float = 5.0
    day_order_ttl_s: float | None = None  # unset: DAY orders expire at the NYSE close
    market_order_collar: Decimal = Decimal("0.05")
    # POST /v2/orders answers within this long: the order as accepted, or 504 order_pending (the
    # client retries with the same client_order_id) while a worker restarts
    order_accept_timeout_s: float = 5.0
    # admission control (api/admission.py): orders of one shard in transit (admitted, not yet
    # resting at a venue, held or ended) across every API process; past it POST /v2/orders
    # waits up to wait_s for a slot, then answers 429 over_capacity (Retry-After), before any
    # workflow is started or hold taken. 0: no limit. A slot lapses after hold_max_s whatever
    # happens (a lost release). 2: measured with `python -m bench.orders --overload 10,50` on the
    # 2-core dev box with 4 shards: at 50 clients the throughput of 10 and a p99 under 2x that at
    # 10 (3 per shard: 2.8x; 8: 6x)
    order_admission_per_shard: int = Field(default=2, ge=0)
    order_admission_wait_s: float = Field(default=0.25, ge=0, le=5)
    # 3: every refusal costs the API and the client CPU the saturated box then lacks, and the
    # more so the cheaper an order is. `bench.orders --overload 10,50` (throughput and p99 at
    # 50 clients over 10's): at first 2 s gave 1.01/1.13x and 1.52/1.74x with ~210 refusals, 1 s
    # 0.83/0.96x and 2.09/1.57x with ~335. Once an order took one local activity less, 2 s gave
    # 0.88-1.02x (median 0.92x over 8 runs, ~205 refusals) and 3 s 0.98-1.04x (4 runs, p99
    # 1.50-1.84x, ~140 refusals): issue 20 asks for >= 0.95x and <= 2x
    order_admission_retry_after_s: int = Field(default=3, ge=1)
    order_admission_hold_max_s: float = Field(default=30.0, gt=0, le=300)
    # a shard transaction failing transiently is retried this long, then the order ends visibly
    # (REJECTED before its hold, STUCK with it); the gateway's answer on an unsent order, as long
    order_store_retry_s: float = 120.0
    order_gateway_retry_s: float = 600.0
    # Orders accepted outside the regular session wait for the next open (domain/hours.py).
    # Tests only: the wait is capped at queued_open_wait_max_s (unset: the real time to the open),
    # and the shard workers' business clock (market hours, trade dates) runs
    # market_clock_offset_s ahead of the wall clock ("it is 20:00 ET now").
    queued_open_wait_max_s: float | None = Field(default=None, ge=0)
    market_clock_offset_s: float = 0.0
    # Broker-held triggers (trailing stops, activities/trigger.py). The watching activity
    # heartbeats within trigger_heartbeat_timeout_s (a worker gone that long: the activity is
    # retried elsewhere from its last heartbeat); it re-reads the latest quote every
    # trigger_poll_s (a pub/sub message lost to a reconnect is caught up) and writes the hwm and
    # stop to the order row at most once per trigger_write_interval_s (the API shows them).
    trigger_heartbeat_timeout_s: float = Field(default=10.0, gt=0)
    trigger_poll_s: float = Field(default=1.0, gt=0)
    trigger_write_interval_s: float = Field(default=1.0, ge=0)

    # DELETE /v2/positions?cancel_orders=true: how long it waits for the canceled orders to end
    # (their held shares to come back) before it places the closing sells, polling this often
    close_all_cancel_wait_s: float = Field(default=10.0, ge=0)
    close_all_poll_s: float = Field(default=0.05, gt=0)

    # Audit: the firm's id on every line of ``sherwood audit export`` (the CAT-like order-event
    # file; its IMID/CRD in a real submission)
    cat_firm_id: str = Field(default="SHERWOOD", min_length=1, max_length=32)

    # Risk: pre-trade limits, market hours, rate limits.
    max_order_notional: Decimal = Decimal(250000)
    max_order_qty: Decimal = Decimal(100000)
    # the firm's own position per symbol from filling fractions of shares (domain.fractional):
    # an order the firm fills alone that would take it beyond this many shares either way is
    # rejected (fractional_inventory_limit)
    fractional_max_inventory: Decimal = Field(default=Decimal(100), gt=0)
    limit_price_band: Decimal = Decimal("0.10")
    instant_deposit_allowance: Decimal = Decimal(1000)
    concentration_warning_share: Decimal = Decimal("0.25")
    enforce_market_hours: bool = True
    order_rate_per_s: float = 10.0  # per account, shared by every API process (Redis)
    request_rate_per_min: float = 600.0  # per API key
    # Request bodies (api/body.py): larger -> 413, deeper nesting -> 422, both before parsing.
    request_body_max_bytes: int = 64 * 1024
    request_json_max_depth: int = 32

    # Ledger tuning: number of cached-balance stripes for house accounts (hot rows).
    house_balance_stripes: int = Field(default=32, ge=1, le=256)
    ledger_max_retries: int = 8

    # execution gateway
    # Its own database (<db_prefix>_gateway on postgres_url unless set), the venues it connects
    # to (JSON list in SHERWOOD_VENUES, see VenueConfig), venue choice when an order names none
    # ("smart": by recent execution quality, see below; "round_robin" over logged-on venues; or
    # "first": the first logged-on venue in list order),
    # the FIX session stores (default <data_dir>/gateway) and its Temporal task queue.
    gateway_db_url: str | None = None
    venues: list[VenueConfig] = Field(default_factory=lambda: [VenueConfig(name="MM1", port=9878)])
    gateway_routing: str = "round_robin"
    # Smart routing (gateway_routing="smart", domain/routing.py): the score adds the average
    # price improvement per share in cents, the fill rate, minus the reject rate and the seconds
    # to first fill, each times its weight, over each venue's last routing_window_orders orders;
    # a venue with fewer than routing_warmup_orders is tried first, and routing_explore_rate of
    # orders go to the least-observed venue (seeded by routing_seed; None: a random seed).
    # Scores are per symbol, else per order-size bucket, where every connected venue has
    # routing_scope_min_orders decided orders in it (0: venue-wide only). A starting gateway
    # warms the window from its database (the last routing_window_orders routes per venue).
    routing_weight_improvement_per_cent: float = Field(default=1.0, ge=0)
    routing_weight_fill_rate: float = Field(default=1.0, ge=0)
    routing_weight_reject_rate: float = Field(default=2.0, ge=0)
    routing_weight_latency_per_s: float = Field(default=1.0, ge=0)
    routing_explore_rate: float = Field(default=0.05, ge=0, le=1)
    routing_warmup_orders: int = Field(default=5, ge=0)
    routing_window_orders: int = Field(default=100, ge=1, le=10_000)
    routing_scope_min_orders: int = Field(default=20, ge=0, le=10_000)
    routing_seed: int | None = None
    gateway_data_dir: Path | None = None
    gateway_task_queue: str = "execution-gateway"
    gateway_delivery_interval_s: float = 0.2
    # the report delivery loop is woken by every new report; with nothing to retry it looks at
    # its table this often anyway (a safety net)
    gateway_delivery_idle_poll_s: float = 2.0
    gateway_delivery_max_backoff_s: float = 5.0
    gateway_signal_timeout_s: float = 5.0
    # The shard outbox publisher is woken by each order commit; it also looks this often anyway
    # (rows from another process, a failed round).
    outbox_idle_s: float = 1.0
    # Committed rows waiting in memory for the publisher; past it they are left to the sweep
    # (the database row is the truth), never queued without bound (workers/outbox.py).
    outbox_queue_max: int = Field(default=10_000, ge=1)
    outbox_retry_s: float = 1.0  # after a failed publish, the table is tried again this soon
    # Workflow-task polls per shard worker, and the share of them on the normal (non-sticky)
    # queue, where every order's first workflow task comes (workers/shard.py).
    shard_workflow_task_polls: int = Field(default=10, ge=2)
    shard_nonsticky_poll_ratio: float = Field(default=0.8, gt=0, le=1)
    # How long a workflow task waits on the sticky queue of the shard worker that has its order
    # cached before any worker of the shard may take it. A worker that died (SIGKILL, OOM) never
    # takes it: every order in flight on it stalls this long (the SDK's default is 10 s; the
    # trailing stop's SIGKILL test took 20.6 s with it, 13.2 s with 3). A live worker takes its
    # tasks in well under a second even at c=50 (bench.orders' task_wait p99 130 ms), so 3 s
    # costs no replays.
    shard_sticky_timeout_s: float = Field(default=3.0, gt=0, le=60)
    # After a NewOrderSingle, how long send_new_order waits for the venue's first answer, and
    # for the next one once answers come (a market order's New then Fill): answers within the
    # wait travel in the activity result instead of as separate signals (see VenueAck).
    gateway_first_report_wait_s: float = 0.25
    gateway_report_linger_s: float = 0.05
    # The order's fast path (activities/gateway_link.py): the gateway serves send_new_order on
    # bind_host:gateway_link_port (None: off); shard workers dial gateway_link_address (unset:
    # bind_host:gateway_link_port) and fall back to the gateway's activity when the call fails
    # or takes longer than gateway_link_timeout_s. Both ends prove they hold gateway_link_secret
    # (challenge-response, activities/gateway_link.py; `sherwood dev` makes one in its data dir);
    # a peer has gateway_link_hello_timeout_s to do so, and at most gateway_link_max_unauthenticated
    # connections wait for theirs at once (more are closed at once). At most
    # gateway_link_max_in_flight calls per connection: the shard worker waits for a slot, the
    # gateway refuses calls beyond it (the default is above the shard worker's 200 concurrent
    # local activities: it never waits).
    gateway_link_port: int | None = 8003
    gateway_link_address: str | None = None
    gateway_link_timeout_s: float = 1.0
    gateway_link_secret: SecretStr | None = None
    gateway_link_hello_timeout_s: float = 5.0
    gateway_link_max_in_flight: int = Field(default=256, ge=1, le=10_000)
    gateway_link_max_unauthenticated: int = Field(default=16, ge=1, le=10_000)

    # market data
    # Ingest listens for the exchange feed's line protocol on feed_port (TCP, 127.0.0.1), writes
    # Redis (channel per symbol, latest quote/trade hashes, halts set) and 1-minute bars into its
    # own database (<db_prefix>_marketdata on postgres_url unless marketdata_db_url is set, never a
    # shard database). The fan-out WebSocket server listens on fanout_port (/v2/iex, /v2/sip).
    # Watchlists (/v2/watchlists, on the account's shard): lists per account, symbols per list
    # (over either: 422 watchlist_limit_reached / watchlist_too_long)
    watchlist_max_per_account: int = Field(default=50, ge=1, le=1_000)
    watchlist_max_symbols: int = Field(default=500, ge=1, le=10_000)
    marketdata_db_url: str | None = None
    marketdata_max_request_symbols: int = Field(default=1_000, ge=1, le=10_000)  # symbols= per request
    marketdata_feed_port: int = 8002
    marketdata_universe_size: int = Field(default=10_000, ge=0, le=10_000)  # symbols ingest knows
    marketdata_max_price: float = 1_000_000.0
    marketdata_max_jump: float = 0.5  # a price more than 50% off the last accepted one is absurd
    marketdata_max_tick_age_s: float = 5.0  # older ticks are stale
    marketdata_max_future_s: float = 2.0  # ticks further in the future are dropped
    marketdata_bar_flush_s: float = 1.0
    marketdata_bar_grace_s: float = 2.0  # a minute bar is final (T:"b" published) this long after its end
    marketdata_trade_retention_s: float = Field(default=7 * 86_400.0, gt=0)  # historical trades kept
    # processes that ingest the feed, symbols split among them (>1: a router and that many workers)
    marketdata_ingest_workers: int = Field(default=1, ge=1, le=16)
    quote_max_age_s: float = 30.0  # LatestQuotes: an ingested quote older than this is no quote
    fanout_port: int = 8001
    # fan-out processes on fanout_port (>1: SO_REUSEPORT, the kernel spreads the connections;
    # marketdata/fanout_processes.py); limits below are per process
    fanout_processes: int = Field(default=1, ge=1, le=16)
    fanout_max_connections: int = 20_000  # per process -> 406
    fanout_max_connections_per_key: int = 5  # 0 = unlimited (Alpaca allows 1) -> 406
    fanout_max_symbols: int = 2_000  # per connection, all channels together -> 405
    fanout_max_buffer_bytes: int = 1 << 20  # per connection: over it -> 407 and disconnect
    fanout_slow_timeout_s: float = 10.0  # frames unacknowledged (no pong) this long -> 407 and disconnect
    fanout_flush_interval_s: float = 0.01  # batching window: one frame per connection per round
    fanout_auth_timeout_s: float = 10.0
    fanout_ping_interval_s: float = 20.0
    fanout_redis_backoff_max_s: float = 2.0
    fanout_redis_ping_s: float = 2.0  # the fan-out's Redis link is dead after 3 unanswered pings
    exchange_feed_rate: float = 1_000.0  # updates/s of `sherwood sim exchange-feed` under dev

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(max_order_notional=self.max_order_notional, max_order_qty=self.max_order_qty,
                          price_band=self.limit_price_band,
                          instant_allowance=self.instant_deposit_allowance,
                          concentration=self.concentration_warning_share,
                          enforce_market_hours=self.enforce_market_hours,
                          fractional_max_inventory=self.fractional_max_inventory)

    # back office
    # ACH: a transfer settles after ach_settle_days NYSE business days; ach_business_day_s
    # simulates one business day as that many seconds (tests), unset = the real calendar.
    ach_settle_days: int = Field(default=2, ge=0, le=10)
    ach_business_day_s: float | None = None
    ach_poll_interval_s: float = 60.0
    # POST /v2/transfers answers within this long: the transfer as started, or 504
    # transfer_pending (the client retries with the same Idempotency-Key)
    transfer_accept_timeout_s: float = 5.0
    # a transfer's first step (before anything moved) failing transiently is retried this long,
    # then the transfer ends FAILED with nothing moved; a later step (bank, settle, bounce,
    # complete, release) this long, then it is recorded for an operator and its workflow fails
    transfer_store_retry_s: float = 120.0
    transfer_step_retry_s: float = 600.0
    # a settlement or reconciliation activity failing transiently is retried this long, then its
    # shard is halted for an operator and the run fails
    settlement_retry_s: float = 1800.0
    # Settlement schedule: every weekday at this New York time (the workflow no-ops on
    # non-sessions and catches up missed sessions, at most settlement_catch_up_days).
    settlement_schedule_id: str = "settlement-daily"
    settlement_hour_ny: int = Field(default=17, ge=0, le=23)
    settlement_minute_ny: int = Field(default=30, ge=0, le=59)
    # End-of-day equity snapshot (last_equity): every weekday at this New York time, after the
    # close (the workflow writes nothing on non-sessions)
    equity_snapshot_schedule_id: str = "equity-snapshot-daily"
    equity_snapshot_hour_ny: int = Field(default=16, ge=0, le=23)
    equity_snapshot_minute_ny: int = Field(default=15, ge=0, le=59)
    # corporate actions: applied weekdays before the open (New York time), from the announcements
    # feed (the simulator's JSON-lines file; default <data_dir>/announcements.jsonl)
    corporate_actions_schedule_id: str = "corporate-actions-daily"
    corporate_actions_hour_ny: int = Field(default=7, ge=0, le=23)
    announcements_file: Path | None = None
    corporate_actions_split_wait_s: float = Field(default=3600.0, gt=0)
    settlement_catch_up_days: int = Field(default=10, ge=1, le=60)
    backoffice_db_pool_size: int = 2
    # The end-of-day reconciliation's invariants audit (db/audit.py): "halt" halts a shard whose
    # audit finds a violation; "record" records and logs the violations without halting (to roll
    # the audit out on books written before it, and for test shards seeded outside the order path).
    # A balance mismatch or an unbalanced transaction halts the shard either way.
    reconcile_audit: Literal["halt", "record"] = "halt"
    # Where the clearinghouse simulator reads the venues' fills ("gateway": gateway_reports).
    clearinghouse_source: str = "gateway"

    def db_owner(self) -> Login | None:
        if not self.db_owner_user:
            return None
        pw = self.db_owner_password.get_secret_value() if self.db_owner_password else None
        return Login(self.db_owner_user, pw)

    def api_login(self) -> Login | None:
        if not self.api_db_user:
            return None
        pw = self.api_db_password.get_secret_value() if self.api_db_password else None
        return Login(self.api_db_user, pw)

    def for_api(self) -> Settings:
        """These settings with the API's login in place of the user of every database URL (the
        same settings when no API login is set). Idempotent."""
        api = self.api_login()
        if api is None:
            return self
        updates: dict[str, object] = {
            key: with_login(url, api) for key in ("postgres_url", "directory_url", "gateway_db_url",
                                                  "marketdata_db_url")
            if (url := getattr(self, key))}
        if self.shard_urls:
            updates["shard_urls"] = [with_login(u, api) for u in self.shard_urls]
        return self.model_copy(update=updates)

    def shard_url(self, shard: int) -> str:
        if self.shard_urls:
            return self.shard_urls[shard]
        if not self.postgres_url:
            raise RuntimeError("no Postgres configured: set SHERWOOD_POSTGRES_URL or run `sherwood dev`")
        return _with_db(self.postgres_url, f"{self.db_prefix}_shard_{shard}")

    def directory_db_url(self) -> str:
        if self.directory_url:
            return self.directory_url
        if not self.postgres_url:
            raise RuntimeError("no Postgres configured: set SHERWOOD_POSTGRES_URL or run `sherwood dev`")
        return _with_db(self.postgres_url, f"{self.db_prefix}_directory")

    @property
    def shard_count(self) -> int:
        return len(self.shard_urls) if self.shard_urls else self.shards

    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE

    def resolved(self) -> Settings:
        """Fill unset URLs from a running ``sherwood dev`` stack's ``stack.json``, if any."""
        path = self.stack_file()
        if not path.exists():
            return self
        stack = json.loads(path.read_text())
        updates: dict[str, object] = {}
        for key in ("postgres_url", "redis_url", "temporal_address", "shards"):
            if key in stack and key not in self.model_fields_set:
                updates[key] = stack[key]
        return self.model_copy(update=updates)

    # execution gateway
    def gateway_db_url_resolved(self) -> str:
        if self.gateway_db_url:
            return self.gateway_db_url
        if not self.postgres_url:
            raise RuntimeError("no Postgres configured: set SHERWOOD_POSTGRES_URL or run `sherwood dev`")
        return _with_db(self.postgres_url, f"{self.db_prefix}_gateway")

    # market data
    def marketdata_db_url_resolved(self) -> str:
        if self.marketdata_db_url:
            return self.marketdata_db_url
        if not self.postgres_url:
            raise RuntimeError("no Postgres configured: set SHERWOOD_POSTGRES_URL or run `sherwood dev`")
        return _with_db(self.postgres_url, f"{self.db_prefix}_marketdata")

    def gateway_link_address_resolved(self) -> str | None:
        if self.gateway_link_address:
            return self.gateway_link_address
        if self.gateway_link_port is None:
            return None
        return f"{self.bind_host}:{self.gateway_link_port}"

    def gateway_link_stack(self) -> str:
        """What the gateway and its shard workers must agree on to use the direct link."""
        return f"{self.temporal_namespace}/{self.gateway_task_queue}/{self.db_prefix}"

    def announcements_file_resolved(self) -> Path:
        return self.announcements_file or self.data_dir / "announcements.jsonl"

    def gateway_data_dir_resolved(self) -> Path:
        return self.gateway_data_dir if self.gateway_data_dir is not None else self.data_dir / "gateway"


def _with_db(server_url: str, db: str) -> str:
    """Replace the database part of a Postgres URL, keeping query parameters."""
    base, _, query = server_url.partition("?")
    scheme, _, rest = base.partition("://")
    hostpart = rest.split("/", 1)[0]
    url = f"{scheme}://{hostpart}/{db}"
    return f"{url}?{query}" if query else url


# execution gateway
class VenueConfig(BaseModel):
    """One FIX venue the execution gateway connects to (an element of ``SHERWOOD_VENUES``).

    ``SHERWOOD_VENUES='[{"name": "MM1", "port": 9878}, {"name": "MM2", "port": 9879}]'``;
    ``target_comp_id`` defaults to ``name``.
    """

    name: str
    host: str = "127.0.0.1"
    port: int
    sender_comp_id: str = "SHERWOOD"
    target_comp_id: str = ""
    heartbeat_interval: float = 30.0
    reconnect_min_delay: float = 0.2
    reconnect_max_delay: float = 5.0

    @property
    def target(self) -> str:
        return self.target_comp_id or self.name


Settings.model_rebuild()
