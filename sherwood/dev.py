"""``sherwood dev``: the whole local stack in one command.

Uses the URLs configured in Settings and starts embedded servers for whatever is not configured
(Postgres, Redis, the Temporal dev server), migrates every database, then runs Sherwood's own
processes as children. It writes ``<data_dir>/stack.json`` so commands in another shell find the
stack with no configuration, and on stop terminates everything it started, newest first.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from db.migrate import migrate_all
from sherwood.embedded import (
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedRedis,
    TemporalDevServer,
)
from sherwood.link_secret import ensure_link_secret
from sherwood.settings import Settings
from sherwood.wiring import shard_urls

Progress = Callable[[str], None]


@dataclass
class DevStack:
    settings: Settings
    progress: Progress = print
    _stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _lock: IO[str] | None = None
    info: dict[str, object] = field(default_factory=dict)
    # the read path and the back office can be left out (benchmarks of the trading path)
    marketdata: bool = True
    backoffice: bool = True

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
            pg = EmbeddedPostgres(s.data_dir / "postgres", port=s.embedded_pg_port, host=host)
            self.progress(f"Postgres: starting embedded server on {host}:{s.embedded_pg_port} ...")
            updates["postgres_url"] = pg.start()
            self._stops.append(("postgres", pg.stop))

        if s.redis_url:
            self.progress(f"Redis: configured ({s.redis_url})")
        else:
            rd = EmbeddedRedis(s.data_dir / "redis", port=s.embedded_redis_port, host=host)
            self.progress(f"Redis: starting embedded server on {host}:{s.embedded_redis_port} ...")
            updates["redis_url"] = rd.start()
            self._stops.append(("redis", rd.stop))

        ui_url = None
        if s.temporal_address:
            self.progress(f"Temporal: configured ({s.temporal_address})")
            self._register_search_attributes(s)
        else:
            tmp = TemporalDevServer(port=s.temporal_port, ui_port=s.temporal_ui_port, host=host,
                                    db_file=s.data_dir / "temporal.db",
                                    log_file=self.logs / "temporal.log")
            self.progress(f"Temporal: starting dev server on {host}:{s.temporal_port} "
                          f"(UI :{s.temporal_ui_port}, state in temporal.db) ...")
            updates["temporal_address"] = tmp.start()
            self._stops.append(("temporal", tmp.stop))
            ui_url = f"http://{host}:{s.temporal_ui_port}"

        s = self.settings = s.model_copy(update=updates)
        self.progress(f"Databases: migrating directory + {s.shard_count} shards ...")
        migrate_all(s.directory_db_url(), shard_urls(s), progress=lambda m: None)

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
        asyncio.run(seed_reference_quotes(s.redis_url, s.redis_prefix))
        for name, port in zip(("MM1", "MM2"), s.dev_venue_ports, strict=False):
            self._spawn(name.lower(), [
                "sim", "market-maker", "--host", host, "--port", str(port), "--sender-comp-id", name,
                "--target-comp-id", "SHERWOOD", "--redis-url", s.redis_url,
                "--data-dir", str(s.data_dir / "venues" / name)])
        if self.marketdata:
            self._spawn("ingest", ["serve", "ingest"])
            self._spawn("fanout", ["serve", "fanout"])
            self._spawn("exchange-feed", ["sim", "exchange-feed", "--host", host, "--port",
                                          str(s.marketdata_feed_port), "--rate", str(s.exchange_feed_rate)])
            self.info["marketdata_ws_url"] = f"ws://{host}:{s.fanout_port}/v2/iex"
        self._spawn("shard-worker", ["serve", "shard-worker"])
        self._spawn("gateway", ["serve", "gateway"])
        if self.backoffice:
            self._spawn("backoffice", ["serve", "backoffice"])
        self._spawn("api", ["serve", "api"])
        self.info["venues"] = [f"{n}@{host}:{p}" for n, p in zip(("MM1", "MM2"), s.dev_venue_ports,
                                                                   strict=False)]
        self._wait_healthy(api_url)
        if self.backoffice:
            self._apply_schedules(s)
        s.stack_file().write_text(json.dumps(self.info, indent=2))

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

    def child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update({
            "SHERWOOD_DATA_DIR": str(s.data_dir),
            "SHERWOOD_SHARDS": str(s.shard_count),
            "SHERWOOD_BIND_HOST": s.bind_host,
            "SHERWOOD_API_PORT": str(s.api_port),
            "SHERWOOD_DB_PREFIX": s.db_prefix,
            "SHERWOOD_REDIS_PREFIX": s.redis_prefix,
            "SHERWOOD_FANOUT_PORT": str(s.fanout_port),
            "SHERWOOD_MARKETDATA_FEED_PORT": str(s.marketdata_feed_port),
        })
        if s.gateway_link_port is not None:
            env["SHERWOOD_GATEWAY_LINK_PORT"] = str(s.gateway_link_port)
        # the gateway link's secret: the configured one, else <data_dir>/link.secret (made once)
        env["SHERWOOD_GATEWAY_LINK_SECRET"] = (s.gateway_link_secret.get_secret_value()
                                               if s.gateway_link_secret else ensure_link_secret(s.data_dir))
        for key, value in (("POSTGRES_URL", s.postgres_url), ("REDIS_URL", s.redis_url),
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
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "sherwood", *args], env=self.child_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._children.append((name, proc))
        self.progress(f"{name}: started (pid {proc.pid}, log {self.logs / (name + '.log')})")

    def _wait_healthy(self, api_url: str) -> None:
        deadline = time.monotonic() + self.settings.dev_health_timeout_s
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._children:
                if proc.poll() is not None:
                    raise EmbeddedError(f"{name} exited with {proc.returncode}; see {self.logs}")
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
        """Block until a child dies (then raise) or the caller is interrupted."""
        while True:
            for name, proc in self._children:
                if proc.poll() is not None:
                    raise EmbeddedError(f"{name} exited with {proc.returncode}; see {self.logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        for name, proc in reversed(self._children):
            if proc.poll() is None:
                self.progress(f"stopping {name} ...")
                proc.terminate()
        for _, proc in self._children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._children.clear()
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

