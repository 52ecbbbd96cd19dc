"""``sherwood dev``: the whole local stack in one command.

Uses the URLs configured in Settings and starts embedded servers for whatever is not configured
(Postgres, Redis, the Temporal dev server), migrates every database, then runs Sherwood's own
processes as children. It writes ``<data_dir>/stack.json`` so commands in another shell find the
stack with no configuration; the file also lists every child (name, pid, state, restarts, last
exit status) and is rewritten whenever one changes. Each of Sherwood's processes (and each
simulator) serves Prometheus's ``/metrics`` on its port from ``dev_metrics_ports``; the URLs are
in ``stack.json`` as ``"metrics": {process: url}`` and in ``<data_dir>/prometheus.yml``, a
Prometheus configuration scraping them (with ``deploy/alerts.yml``'s rules).

Least privilege holds in it as in production: the processes connect to Postgres as the service
role, the API as its own role (db/roles.py, :func:`with_service_role`), and to the embedded
Redis each kind as its own ACL user (sherwood/redis_acl.py; the ``default`` user's password
stays in this process). The children's environments carry only their own credentials.

Once the stack is healthy it supervises its children like a process manager
(:mod:`sherwood.processes`, policy in :mod:`sherwood.supervisor`): a child that dies, an embedded
server included, is logged, counted and started again after a backoff while the rest keep
running. Killing a child's pid (SIGKILL, or SIGINT for Postgres's fast shutdown) is therefore
how to restart it. Children never outlive ``sherwood dev``: the kernel signals them when it
dies (PR_SET_PDEATHSIG) and the Python ones also watch its pid. A stop (Ctrl-C, SIGTERM) gives
Sherwood's processes, then the servers, ``dev_stop_grace_s`` each before SIGKILL.

What it does not do: restart a child that dies while the stack is starting (that fails the
start, with the child's log to read), or supervise servers it did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import SecretStr

from db.roles import Login, login_of, with_login
from sherwood.embedded import (
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedRedis,
    TemporalDevServer,
    wait_redis_loaded,
)
from sherwood.link_secret import ensure_link_secret
from sherwood.metrics import write_prometheus_config
from sherwood.processes import Supervisor, spawn
from sherwood.redis_acl import PROCESS_USERS, USERS, acl_lines, url_for, user_name
from sherwood.settings import Settings
from sherwood.supervisor import RestartPolicy
from sherwood.wiring import migrate_databases, shard_urls

Progress = Callable[[str], None]

SERVICES, PROCESSES = 0, 1  # stop tiers: Sherwood's processes first, then the servers they use


@dataclass(frozen=True)
class ProcessKind:
    """One kind of Sherwood process: ``sherwood <args>`` (``part``: what leaving it out turns off)."""

    name: str
    args: tuple[str, ...]
    part: str = "trading"


# Sherwood's own processes, in start order (the API last: its health checks the others). The
# production compose runs the same kinds (tests/test_compose.py checks it), the shard worker once
# per shard; the simulators sherwood dev also starts (venues, exchange feed) are the outside world.
PROCESS_KINDS = (
    ProcessKind("ingest", ("serve", "ingest"), "marketdata"),
    ProcessKind("fanout", ("serve", "fanout"), "marketdata"),
    ProcessKind("shard-worker", ("serve", "shard-worker")),
    ProcessKind("gateway", ("serve", "gateway")),
    ProcessKind("backoffice", ("serve", "backoffice"), "backoffice"),
    ProcessKind("api", ("serve", "api")),
)
SIMULATORS = ("market-maker", "exchange-feed")  # `sherwood sim <kind>`


def with_service_role(s: Settings) -> Settings:
    """Least privilege in the dev stack too: when no owner is configured, the Postgres server's
    URL user (the embedded server's superuser) becomes the owner that migrates, and the processes
    connect as ``<db_prefix>_service`` with a password made for this start (migrations set it;
    it lives only in the children's environment and the owner-only ``stack.json``). The API
    connects as ``<service user>_api`` (db/roles.py) unless ``SHERWOOD_API_DB_USER`` names
    another, with a password made for this start too."""
    if s.db_owner() is None and s.postgres_url:
        owner = login_of(s.postgres_url)
        service = Login(f"{s.db_prefix}_service", secrets.token_urlsafe(18))
        s = s.model_copy(update={"postgres_url": with_login(s.postgres_url, service),
                                 "db_owner_user": owner.user,
                                 "db_owner_password": SecretStr(owner.password) if owner.password else None})
    if s.db_owner() is not None and s.api_login() is None:
        service_user = login_of(s.postgres_url or s.directory_db_url()).user
        s = s.model_copy(update={"api_db_user": f"{service_user}_api",
                                 "api_db_password": SecretStr(secrets.token_urlsafe(18))})
    return s


def restart_policy(s: Settings) -> RestartPolicy:
    return RestartPolicy(backoff_initial_s=s.dev_restart_backoff_initial_s,
                         backoff_max_s=max(s.dev_restart_backoff_max_s, s.dev_restart_backoff_initial_s),
                         stable_s=s.dev_restart_stable_s)


def service_start(start: Callable[[], object], proc: Callable[[], subprocess.Popen[bytes] | None],
                  ) -> Callable[[], subprocess.Popen[bytes]]:
    """An embedded server's (re)start for the supervisor: ``start()`` returns once it answers."""
    def go() -> subprocess.Popen[bytes]:
        start()
        p = proc()
        if p is None:
            raise EmbeddedError("the server runs but is not our child")
        return p
    return go


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT/SIGTERM ignored meanwhile (a second Ctrl-C must not cut a bounded stop short)."""
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def running_stack(data_dir: Path) -> dict[str, Any] | None:
    """The ``stack.json`` of the ``sherwood dev`` running on ``data_dir``, or None when none
    runs (the file of a stack that was killed is ignored: its lock is free)."""
    path = data_dir / "stack.json"
    if not path.exists():
        return None
    with open(data_dir / "dev.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info: dict[str, Any] = json.loads(path.read_text())
            return info
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


@dataclass
class DevStack:
    settings: Settings
    progress: Progress = print
    _stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _lock: IO[str] | None = None
    info: dict[str, object] = field(default_factory=dict)
    # the read path and the back office can be left out (benchmarks of the trading path)
    marketdata: bool = True
    backoffice: bool = True
    supervisor: Supervisor = field(init=False)
    metrics: dict[str, str] = field(default_factory=dict)  # process -> its /metrics URL
    # the embedded Redis's URL per kind of user (sherwood/redis_acl.py), and its default user's
    redis_urls: dict[str, str] = field(default_factory=dict)
    redis_admin_url: str = ""
    _published: bool = False

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(restart_policy(self.settings), progress=self.progress)

    @property
    def logs(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> dict[str, object]:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._take_lock()
        try:
            self._start_services()
        except BaseException:
            self.stop()
            raise
        return self.info

    def _take_lock(self) -> None:
        lock = open(self.settings.data_dir / "dev.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedError(
                f"a `sherwood dev` stack already runs on {self.settings.data_dir}"
            ) from None
        self._lock = lock

    def _start_services(self) -> None:
        s = self.settings
        host = s.bind_host
        updates: dict[str, object] = {}

        if s.postgres_url or (s.directory_url and s.shard_urls):
            self.progress(f"Postgres: configured ({s.postgres_url or s.directory_url})")
        else:
            pg = EmbeddedPostgres(s.data_dir / "postgres", port=s.embedded_pg_port, host=host,
                                  die_with_parent=True)
            self.progress(f"Postgres: starting embedded server on {host}:{s.embedded_pg_port} ...")
            updates["postgres_url"] = pg.start()
            if pg.proc is not None:
                self.supervisor.add("postgres", service_start(pg.start, lambda: pg.proc),
                                    tier=SERVICES, stop_signal=signal.SIGINT, running=pg.proc)
            else:  # a cluster left running by an older version: stopped, not supervised
                self._stops.append(("postgres", pg.stop))

        if s.redis_url:
            self.progress(f"Redis: configured ({s.redis_url})")
            self.redis_admin_url = s.redis_url
        else:
            # clients authenticate, each kind of process as its own user (sherwood/redis_acl.py)
            # with a password made for this start, in the URL each child gets (its environment);
            # the services' URL is in stack.json (owner-only), the default user's only here
            passwords = {kind: secrets.token_urlsafe(18) for kind in USERS}
            rd = EmbeddedRedis(s.data_dir / "redis", port=s.embedded_redis_port, host=host,
                               save=s.embedded_redis_save, load_timeout_s=s.redis_load_timeout_s,
                               die_with_parent=True, password=secrets.token_urlsafe(18),
                               acl=acl_lines(s.redis_prefix, passwords))
            self.progress(f"Redis: starting embedded server on {host}:{s.embedded_redis_port} "
                          f"(users {', '.join(user_name(s.redis_prefix, k) for k in USERS)}) ...")
            self.redis_admin_url = rd.start()
            self.redis_urls = {kind: url_for(rd.url, user_name(s.redis_prefix, kind), pw)
                               for kind, pw in passwords.items()}
            updates["redis_url"] = self.redis_urls["service"]
            self.supervisor.add("redis", service_start(rd.start, lambda: rd.proc), tier=SERVICES,
                                running=rd.proc)

        ui_url = None
        if s.temporal_address:
            self.progress(f"Temporal: configured ({s.temporal_address})")
            self._register_search_attributes(s)
        else:
            tmp = TemporalDevServer(port=s.temporal_port, ui_port=s.temporal_ui_port, host=host,
                                    db_file=s.data_dir / "temporal.db",
                                    log_file=self.logs / "temporal.log", die_with_parent=True)
            self.progress(f"Temporal: starting dev server on {host}:{s.temporal_port} "
                          f"(UI :{s.temporal_ui_port}, state in temporal.db) ...")
            updates["temporal_address"] = tmp.start()
            self.supervisor.add("temporal", service_start(tmp.start, lambda: tmp.proc),
                                tier=SERVICES, running=tmp.proc)
            ui_url = f"http://{host}:{s.temporal_ui_port}"

        s = self.settings = with_service_role(s.model_copy(update=updates))
        self.progress(f"Databases: migrating directory + {s.shard_count} shards, gateway, market data "
                      f"(as {s.db_owner_user or 'the configured user'}; services connect as "
                      f"{login_of(s.postgres_url).user if s.postgres_url else 'the configured users'}, "
                      f"the API as {s.api_db_user or 'they do'}) ...")
        migrate_databases(s, progress=lambda m: None)

        api_url = f"http://{host}:{s.api_port}"
        self.info = {
            "postgres_url": s.postgres_url,
            "directory_url": s.directory_db_url(),
            "shard_urls": shard_urls(s),
            "redis_url": s.redis_url,
            "temporal_address": s.temporal_address,
            "temporal_ui_url": ui_url,
            "api_url": api_url,
            "shards": s.shard_count,
            "data_dir": str(s.data_dir),
            "pid": os.getpid(),
        }
        import asyncio

        from simulators.reference_quotes import seed_reference_quotes

        assert s.redis_url
        wait_redis_loaded(self.redis_admin_url, s.redis_load_timeout_s)
        asyncio.run(seed_reference_quotes(self.redis_admin_url, s.redis_prefix))
        for i, (name, port) in enumerate(zip(("MM1", "MM2"), s.dev_venue_ports, strict=False)):
            self._spawn(name.lower(), [
                "sim", "market-maker", "--host", host, "--port", str(port), "--sender-comp-id", name,
                "--target-comp-id", "SHERWOOD", "--redis-url", self.redis_url(name.lower()),
                "--clock-offset-s", str(s.market_clock_offset_s),  # auctions on the workers' clock
                "--data-dir", str(s.data_dir / "venues" / name), "--seed", str(i),
                *_venue_quality_args(s, i)])
        if self.marketdata:
            self._spawn("exchange-feed", ["sim", "exchange-feed", "--host", host, "--port",
                                          str(s.marketdata_feed_port), "--rate", str(s.exchange_feed_rate)])
            self.info["marketdata_ws_url"] = f"ws://{host}:{s.fanout_port}/v2/iex"
        for kind in PROCESS_KINDS:
            if (kind.part == "marketdata" and not self.marketdata) or (
                    kind.part == "backoffice" and not self.backoffice):
                continue
            self._spawn(kind.name, list(kind.args))
        self.info["venues"] = [f"{n}@{host}:{p}" for n, p in zip(("MM1", "MM2"), s.dev_venue_ports,
                                                                   strict=False)]
        self.info["metrics"] = self.metrics
        write_prometheus_config(s.data_dir / "prometheus.yml", self.metrics)
        self.info["prometheus_config"] = str(s.data_dir / "prometheus.yml")
        self._wait_healthy(api_url)
        if self.backoffice:
            self._apply_schedules(s)
        self._published = True
        self.publish()

    def publish(self) -> None:
        """Write ``stack.json`` (atomically): where everything is, and every child's status."""
        if not self._published:
            return
        self.info["children"] = self.supervisor.public()
        path = self.settings.stack_file()
        tmp = path.with_suffix(".json.tmp")
        # it holds the service role's password: readable by this user only
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.info, indent=2))
        os.replace(tmp, path)

    def _apply_schedules(self, s: Settings) -> None:
        import asyncio

        from sherwood.temporal import connect
        from workers.backoffice import apply_schedules

        async def _go() -> str:
            return await apply_schedules(await connect(s), s)

        self.progress(f"settlement schedule: {asyncio.run(_go())}")

    def _register_search_attributes(self, s: Settings) -> None:
        import asyncio

        from sherwood.temporal import connect, ensure_search_attributes

        async def _go() -> None:
            client = await connect(s)
            await ensure_search_attributes(client, s.temporal_namespace)

        asyncio.run(_go())

    def redis_url(self, child: str | None) -> str:
        """The Redis URL of ``child``: its kind's user on the embedded Redis, else the configured."""
        kind = PROCESS_USERS.get(child or "", "service")
        return self.redis_urls.get(kind) or self.settings.redis_url or ""

    def child_env(self, name: str | None = None) -> dict[str, str]:
        """The environment of child ``name`` (None: a Sherwood command as the services)."""
        s = self.settings.for_api() if name == "api" else self.settings
        # the owner's credentials stay here: the children connect as the service role, the API
        # as its own (its environment holds no service password, the others none of the API's)
        drop = ("SHERWOOD_DB_OWNER_",) if name == "api" else ("SHERWOOD_DB_OWNER_", "SHERWOOD_API_DB_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        if name == "api":
            env.update({k: v for k, v in (("SHERWOOD_API_DB_USER", s.api_db_user),
                                          ("SHERWOOD_GATEWAY_DB_URL", s.gateway_db_url),
                                          ("SHERWOOD_MARKETDATA_DB_URL", s.marketdata_db_url)) if v})
            if s.api_db_password:
                env["SHERWOOD_API_DB_PASSWORD"] = s.api_db_password.get_secret_value()
        env.update({
            "SHERWOOD_DATA_DIR": str(s.data_dir),
            "SHERWOOD_SHARDS": str(s.shard_count),
            "SHERWOOD_BIND_HOST": s.bind_host,
            "SHERWOOD_API_PORT": str(s.api_port),
            "SHERWOOD_DB_PREFIX": s.db_prefix,
            "SHERWOOD_REDIS_PREFIX": s.redis_prefix,
            "SHERWOOD_FANOUT_PORT": str(s.fanout_port),
            "SHERWOOD_MARKETDATA_FEED_PORT": str(s.marketdata_feed_port),
            # the child exits when this process is gone (sherwood.lifecycle.exit_with_parent)
            "SHERWOOD_DEV_SUPERVISOR_PID": str(os.getpid()),
        })
        if s.gateway_link_port is not None:
            env["SHERWOOD_GATEWAY_LINK_PORT"] = str(s.gateway_link_port)
        # the gateway link's secret: the configured one, else <data_dir>/link.secret (made once)
        env["SHERWOOD_GATEWAY_LINK_SECRET"] = (s.gateway_link_secret.get_secret_value()
                                               if s.gateway_link_secret else ensure_link_secret(s.data_dir))
        for key, value in (("POSTGRES_URL", s.postgres_url), ("REDIS_URL", self.redis_url(name)),
                           ("TEMPORAL_ADDRESS", s.temporal_address),
                           ("DIRECTORY_URL", s.directory_url)):
            if value:
                env[f"SHERWOOD_{key}"] = value
        if s.shard_urls:
            env["SHERWOOD_SHARD_URLS"] = json.dumps(s.shard_urls)
        if "SHERWOOD_VENUES" not in os.environ:
            env["SHERWOOD_VENUES"] = json.dumps([
                {"name": n, "host": s.bind_host, "port": p}
                for n, p in zip(("MM1", "MM2"), s.dev_venue_ports, strict=False)])
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        path = self.logs / f"{name}.log"
        port = self.settings.dev_metrics_ports.get(name)
        metrics, extra = "", {}
        if port is not None:
            # `sherwood serve` reads SHERWOOD_METRICS_PORT; the simulators take an option
            if args[0] == "sim":
                args = [*args, "--metrics-port", str(port)]
            extra["SHERWOOD_METRICS_PORT"] = str(port)
            url = f"http://{self.settings.bind_host}:{port}/metrics"
            self.metrics[name] = url
            metrics = f", metrics {url}"

        def start() -> subprocess.Popen[bytes]:
            env = self.child_env(name)
            env.pop("SHERWOOD_METRICS_PORT", None)  # never the parent's own port
            env.update(extra)
            with open(path, "ab") as log:
                return spawn([sys.executable, "-m", "sherwood", *args], env=env,
                             stdout=log, death_signal=signal.SIGTERM)

        proc = self.supervisor.add(name, start, tier=PROCESSES)
        self.progress(f"{name}: started (pid {proc.pid}, log {path}{metrics})")

    def _wait_healthy(self, api_url: str) -> None:
        deadline = time.monotonic() + self.settings.dev_health_timeout_s
        last = ""
        while time.monotonic() < deadline:
            for name, code in self.supervisor.exited():
                raise EmbeddedError(f"{name} exited with {code}; see {self.logs}")
            try:
                r = httpx.get(f"{api_url}/healthz", params={"workers": "true"}, timeout=5)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise EmbeddedError(f"the stack did not become healthy: {last}")

    def wait(self) -> None:
        """Supervise until interrupted: restart each child that dies (logged, counted in
        ``stack.json``), keep the others running."""
        while True:
            if self.supervisor.poll():
                self.publish()
            time.sleep(self.settings.dev_supervise_interval_s)

    def stop(self) -> None:
        """Stop everything this stack started, bounded: each tier (Sherwood's processes, then
        the servers) gets ``dev_stop_grace_s`` before SIGKILL. Further SIGINT/SIGTERM are
        ignored meanwhile."""
        with signals_ignored():
            self.supervisor.stop(self.settings.dev_stop_grace_s)
            for name, stop in reversed(self._stops):
                self.progress(f"stopping {name} ...")
                try:
                    stop()
                except Exception as exc:  # keep stopping the rest
                    self.progress(f"  {name} did not stop cleanly: {exc}")
            self._stops.clear()
            stack = self.settings.stack_file()
            if stack.exists() and self._lock is not None:
                stack.unlink()
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def _venue_quality_args(s: Settings, i: int) -> list[str]:
    """The ``sim market-maker`` options that make dev venue ``i`` differ from the others."""
    def nth(values: list[Any], default: Any) -> str:
        return str(values[i] if i < len(values) else default)

    return ["--price-improvement-cents", nth(s.dev_venue_improvement_cents, 0),
            "--latency", nth(s.dev_venue_latency_s, 0.0),
            "--reject-rate", nth(s.dev_venue_reject_rate, 0.0),
            "--partial-fill-rate", nth(s.dev_venue_partial_fill_rate, 0.0)]
