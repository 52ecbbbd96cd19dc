"""`sherwood dev` with embedded defaults in a temp dir: healthy, usable from another shell with no
configuration, every process scraped by a real Prometheus, stops on Ctrl-C within 15 s even with
a hung child, and a second start finds the data (ledger and Temporal). It supervises its
children: one that dies is restarted (embedded servers too) while the rest keep running, and a
SIGKILLed `sherwood dev` takes them all down. Least privilege holds in it: the API connects to
Postgres as its own login, each kind of process to Redis as its own user, and quotes still flow
from the feed to a WebSocket client.

One stack (the module's :func:`dev` fixture) serves every test here: starting one takes most of
a minute on a busy machine. The tests run in the file's order on it; each starts it again if an
earlier one left it down (run alone, each still passes), and the stop test leaves the restarted
stack running for the next."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
import pytest
import redis
from temporalio.client import Client, WorkflowExecutionStatus
from websockets.asyncio.client import connect

from db.roles import login_of, with_login
from sherwood.embedded import free_port, port_open
from sherwood.metrics import prometheus_config
from sherwood.settings import DEV_METRICS_PORTS
from tests.cli import sherwood_in_process

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHARDS = 2
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (apt-get install prometheus; .ci/run does)")


def clean_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env["SHERWOOD_DATA_DIR"] = str(data_dir)
    # every process's /metrics on a free port too (another stack may run on the defaults)
    env["SHERWOOD_DEV_METRICS_PORTS"] = json.dumps({name: free_port() for name in DEV_METRICS_PORTS})
    for key, port in ports.items():
        env[f"SHERWOOD_{key}"] = str(port)
    return env


def start(env: dict[str, str], log: Path, shards: int = SHARDS) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sherwood", "dev", "--shards", str(shards)],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sherwood dev exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{url}/healthz", params={"workers": "true"}, timeout=5)
            if r.status_code == 200 and (log.parent / "stack" / "stack.json").exists():
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not healthy in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], within: float = 90) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"sherwood dev did not stop within {within} s of Ctrl-C")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def children(data: Path) -> dict[str, dict]:
    """The children ``sherwood dev`` lists in stack.json, by name."""
    return {c["name"]: c for c in json.loads((data / "stack.json").read_text())["children"]}


@dataclass
class Dev:
    """The module's `sherwood dev` (embedded Postgres, Redis and Temporal; every port free)."""

    root: Path
    ports: dict[str, int] = field(default_factory=lambda: {key: free_port() for key in (
        "API_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT", "EMBEDDED_PG_PORT", "EMBEDDED_REDIS_PORT",
        "GATEWAY_LINK_PORT", "FANOUT_PORT", "MARKETDATA_FEED_PORT")})
    venue_ports: list[int] = field(default_factory=lambda: [free_port(), free_port()])
    proc: subprocess.Popen[bytes] | None = None
    fresh: bool = False  # started by the test now running: no child restarted yet

    def __post_init__(self) -> None:
        self.env = clean_env(self.data, self.ports)
        self.env["SHERWOOD_DEV_VENUE_PORTS"] = json.dumps(self.venue_ports)
        # the market buys below must fill at any hour CI runs (market hours: test_risk)
        self.env["SHERWOOD_ENFORCE_MARKET_HOURS"] = "false"
        self.env["SHERWOOD_DEV_RESTART_BACKOFF_INITIAL_S"] = "0.2"

    @property
    def data(self) -> Path:
        return self.root / "stack"

    @property
    def log(self) -> Path:
        return self.root / "dev.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['API_PORT']}"

    @property
    def all_ports(self) -> list[int]:
        return [*self.ports.values(), *self.venue_ports]

    @property
    def shell_env(self) -> dict[str, str]:
        """Another shell's environment: nothing but the data dir (given as --data-dir)."""
        return {k: v for k, v in self.env.items() if k != "SHERWOOD_DATA_DIR"}

    def running(self) -> dict:
        """Start the stack unless it runs; its anonymous /healthz answer."""
        self.fresh = self.proc is None or self.proc.poll() is not None
        if self.fresh:
            self.proc = start(self.env, self.log)
        assert self.proc is not None
        return wait_healthy(self.proc, self.api, self.log)

    async def account(self, deposit: str = "10000") -> dict[str, str]:
        """A funded customer made by ``sherwood accounts create`` (in this process)."""
        code, out, err = await sherwood_in_process(
            self.shell_env, "accounts", "create", "--deposit", deposit, "--json",
            "--data-dir", str(self.data))
        assert code == 0, err + out
        acct: dict[str, str] = json.loads(out)
        return acct


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    d = Dev(tmp_path_factory.mktemp("dev"))
    try:
        yield d
    finally:  # never leak processes; a stack still running stops cleanly on Ctrl-C
        if d.proc is not None and d.proc.poll() is None:
            tree = [c.pid for c in psutil.Process(d.proc.pid).children(recursive=True)]
            stop(d.proc)
            for pid in tree:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            assert d.proc.returncode == 0, d.log.read_text()[-2000:]


def headers_of(acct: dict[str, str]) -> dict[str, str]:
    return {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}


def market_buy_fills(api: str, headers: dict[str, str], qty: str, timeout: float = 30) -> None:
    """A market buy through the whole stack, filled within ``timeout``."""
    r = httpx.post(f"{api}/v2/orders", headers=headers, timeout=30, json={
        "symbol": "AAPL", "qty": qty, "side": "buy", "type": "market", "time_in_force": "day"})
    assert r.status_code == 200, r.text
    order_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while (o := httpx.get(f"{api}/v2/orders/{order_id}", headers=headers).json())["status"] != "filled":
        assert time.monotonic() < deadline, o
        time.sleep(0.2)


@pytest.mark.slow
def test_dev_stack_is_healthy_and_usable_from_another_shell(dev: Dev) -> None:
    assert dev.running() == {"status": "ok"}  # anonymous: up or down only
    if dev.fresh:  # every child runs, none restarted
        assert all(c["state"] == "running" and c["restarts"] == 0
                   for c in children(dev.data).values())
    ops = json.loads(subprocess.run(
        [sys.executable, "-m", "sherwood", "keys", "create", "--holder", "dev-health",
         "--scope", "read", "--operator", "alice", "--reason", "health check", "--json",
         "--data-dir", str(dev.data)],
        env={**dev.shell_env, "SHERWOOD_OPS_OPERATORS": '["alice"]'},
        capture_output=True, text=True, timeout=60, check=True).stdout)
    health = httpx.get(f"{dev.api}/healthz", params={"workers": "true"}, timeout=5, headers={
        "APCA-API-KEY-ID": ops["key_id"], "APCA-API-SECRET-KEY": ops["secret_key"]}).json()
    assert health["status"] == "ok" and len(health["shards"]) == SHARDS
    assert health["dependencies"]["execution_gateway"]["status"] == "ok"
    stack = json.loads((dev.data / "stack.json").read_text())
    assert stack["temporal_ui_url"] == f"http://127.0.0.1:{dev.ports['TEMPORAL_UI_PORT']}"
    # another shell, no configuration beyond the data dir (a real process: the entry point)
    out = subprocess.run(
        [sys.executable, "-m", "sherwood", "accounts", "create", "--deposit", "10000",
         "--json", "--data-dir", str(dev.data)],
        env=dev.shell_env, capture_output=True, text=True, timeout=60, check=True)
    acct = json.loads(out.stdout)
    assert set(acct) >= {"account_id", "shard", "key_id", "secret_key"}
    headers = headers_of(acct)
    assert httpx.get(f"{dev.api}/v2/account", headers=headers).json()["cash"] == "10000.00"
    # right after start a new user can trade: a market buy through the whole stack fills
    market_buy_fills(dev.api, headers, "2")
    # the children share the gateway link's secret dev made (0600): nobody was refused
    assert stat.S_IMODE((dev.data / "link.secret").stat().st_mode) == 0o600
    assert "gateway link: refused" not in (dev.data / "logs" / "gateway.log").read_text()
    assert "not used" not in (dev.data / "logs" / "shard-worker.log").read_text()


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)


async def check_least_privilege(data: Path, stack: dict, acct: dict) -> None:
    """The API child holds its own database login and no service password, and every session it
    has open on the server is that login (matched by client port); each kind of process has its
    own Redis user; the feed's quotes reach a WebSocket client through ingest's and the fan-out's."""
    kids = children(data)
    service = login_of(stack["postgres_url"])
    api_env = proc_env(kids["api"]["pid"])
    api = login_of(api_env["SHERWOOD_POSTGRES_URL"])
    assert api.user == f"{service.user}_api" and api.password
    assert service.password and service.password not in "\0".join(api_env.values())
    for name in ("shard-worker", "gateway", "backoffice", "ingest"):
        assert api.password not in "\0".join(proc_env(kids[name]["pid"]).values()), name
    pg_port = urlsplit(stack["postgres_url"]).port
    ports = [c.laddr.port for c in psutil.Process(kids["api"]["pid"]).net_connections("tcp")
             if c.raddr and c.raddr.port == pg_port]
    assert ports, "the API holds no database session"
    with psycopg.connect(with_login(stack["directory_url"], api)) as conn:
        users = {r[0] for r in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)).fetchall()}
    assert users == {api.user}

    redis_urls = {n: proc_env(kids[n]["pid"])["SHERWOOD_REDIS_URL"]
                  for n in ("api", "shard-worker", "gateway", "ingest", "fanout")}
    assert {n: urlsplit(u).username for n, u in redis_urls.items()} == {
        "api": "sherwood-service", "shard-worker": "sherwood-service", "gateway": "sherwood-service",
        "ingest": "sherwood-ingest", "fanout": "sherwood-quotes"}
    fan = redis.Redis.from_url(redis_urls["fanout"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        fan.set("sherwood:ratelimit:x", 1)
    fan.close()
    async with connect(stack["marketdata_ws_url"]) as ws:
        assert json.loads(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(json.dumps({"action": "auth", "key": acct["key_id"], "secret": acct["secret_key"]}))
        assert json.loads(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
        await ws.send(json.dumps({"action": "subscribe", "quotes": ["*"]}))
        deadline = time.monotonic() + 30
        while not any(m.get("T") == "q" for m in json.loads(await asyncio.wait_for(ws.recv(), 30))):
            assert time.monotonic() < deadline, "no quote from the feed"


@pytest.mark.slow
async def test_least_privilege_holds_in_the_dev_stack(dev: Dev) -> None:
    dev.running()
    acct = await dev.account()
    stack = json.loads((dev.data / "stack.json").read_text())
    await check_least_privilege(dev.data, stack, acct)


def _query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    result: list[dict] = r.json()["data"]["result"]
    return result


def _wait(what: str, check, timeout: float, log: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # Prometheus still starting
            last = exc
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"{what} not within {timeout}s: {last}\n{tail}")


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_every_process_of_the_dev_stack(dev: Dev, tmp_path: Path) -> None:
    """The real Prometheus (Debian's package) scrapes every process `sherwood dev` runs: each
    one's /metrics target is `up == 1`, read through Prometheus's HTTP API, and the shard gauges
    the back office computes at scrape time are there (tests/sherwood/test_prometheus.py: the
    alerts and the deployed configuration)."""
    dev.running()
    metrics_ports = json.loads(dev.env["SHERWOOD_DEV_METRICS_PORTS"])
    stack = json.loads((dev.data / "stack.json").read_text())
    assert stack["metrics"] == {name: f"http://127.0.0.1:{port}/metrics"
                                for name, port in metrics_ports.items()}
    # the configuration sherwood dev wrote for its own ports is one Prometheus accepts
    written = subprocess.run(["promtool", "check", "config", stack["prometheus_config"]],
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stdout + written.stderr

    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(
        stack["metrics"], rule_files=[str(DEPLOY / "alerts.yml")], scrape_interval_s=1)))
    port = free_port()
    prom = f"http://127.0.0.1:{port}"
    prom_log = tmp_path / "prometheus.log"
    prom_proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=open(prom_log, "ab"), stderr=subprocess.STDOUT)
    try:
        def all_up() -> list[dict] | None:
            targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            healthy = {t["labels"]["job"] for t in targets if t["health"] == "up"}
            return targets if healthy == set(metrics_ports) else None

        _wait("every target up", all_up, 60, prom_log)

        def every_job_up() -> list[dict] | None:
            result = _query(prom, "up == 1")
            return result if {s["metric"]["job"] for s in result} == set(metrics_ports) else None

        up = _wait("up == 1 for every job", every_job_up, 30, prom_log)
        assert all(s["value"][1] == "1" for s in up)
        assert _query(prom, "up == 0") == []
        # the scrape-time shard gauges (the back office) and the gateway's FIX sessions
        shards = [str(n) for n in range(SHARDS)]
        stuck = _wait("the shard gauges", lambda: (
            r if len(r := _query(prom, "sherwood_orders_stuck")) == SHARDS else None), 30, prom_log)
        assert sorted((s["metric"]["shard"], s["value"][1]) for s in stuck) == [(n, "0") for n in shards]
        assert sorted((s["metric"]["shard"], s["value"][1])
                      for s in _query(prom, "sherwood_shard_scrape_ok")) == [(n, "1") for n in shards]
        sessions = _wait("both FIX sessions up", lambda: (
            r if len(r := _query(prom, "sherwood_fix_session_up == 1")) == 2 else None), 60, prom_log)
        assert {s["metric"]["venue"] for s in sessions} == {"MM1", "MM2"}
        # the rest of the shard gauges (one per shard), the fan-out's state and ingest's counts
        # (the feed runs)
        for expr in ("sherwood_outbox_oldest_pending_seconds", "sherwood_reconciliation_ok",
                     "sherwood_settlement_days_behind"):
            assert sorted(s["metric"]["shard"] for s in _query(prom, expr)) == shards, expr
        for expr in ("sherwood_fanout_clients", "sherwood_fanout_queue_bytes"):
            assert len(_query(prom, expr)) == 1, expr
        _wait("ingest counting the feed", lambda: _query(prom, "sherwood_ingest_accepted_total > 0"),
              30, prom_log)
    finally:
        prom_proc.terminate()
        try:
            prom_proc.wait(15)
        except subprocess.TimeoutExpired:
            prom_proc.kill()


def wait_restarted(data: Path, name: str, old_pid: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = children(data)[name]
        if child["pid"] not in (None, old_pid) and child["state"] == "running" and alive(child["pid"]):
            return child
        time.sleep(0.2)
    pytest.fail(f"{name} was not restarted: {children(data)[name]}")


@pytest.mark.slow
async def test_dev_restarts_what_dies(dev: Dev) -> None:
    dev.running()
    data = dev.data
    before = children(data)
    assert set(before) >= {"postgres", "redis", "temporal", "mm1", "mm2", "ingest", "fanout",
                           "exchange-feed", "shard-worker", "gateway", "backoffice", "api"}
    assert all(c["state"] == "running" for c in before.values())

    # one Sherwood process dies: it alone is restarted, the rest keep running
    os.kill(before["gateway"]["pid"], signal.SIGKILL)
    gw = wait_restarted(data, "gateway", before["gateway"]["pid"])
    assert gw["restarts"] == before["gateway"]["restarts"] + 1 and gw["last_exit"] == -9
    now = children(data)
    assert {n: c["pid"] for n, c in now.items() if n != "gateway"} == \
        {n: c["pid"] for n, c in before.items() if n != "gateway"}

    # so does a venue, the feed, the API and each embedded server
    for name in ("mm1", "exchange-feed", "api", "redis", "temporal", "postgres"):
        old = children(data)[name]
        os.kill(old["pid"], signal.SIGKILL)
        assert wait_restarted(data, name, old["pid"], timeout=90)["restarts"] > old["restarts"]
    assert "restarted" in dev.log.read_text()
    status = subprocess.run([sys.executable, "-m", "sherwood", "dev", "--status", "--data-dir",
                             str(data)], env=dev.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "gateway" in status.stdout and str(children(data)["gateway"]["pid"]) in status.stdout

    # and the stack trades again: a market buy fills
    assert dev.proc is not None
    wait_healthy(dev.proc, dev.api, dev.log, timeout=120)
    headers = headers_of(await dev.account())
    deadline = time.monotonic() + 60
    while True:  # the gateway may still be logging on to the restarted venue
        r = httpx.post(f"{dev.api}/v2/orders", headers=headers, timeout=30, json={
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "market",
            "time_in_force": "day"})
        assert r.status_code == 200, r.text
        oid = r.json()["id"]
        while (o := httpx.get(f"{dev.api}/v2/orders/{oid}", headers=headers).json())["status"] in (
                "accepted", "pending_new", "new"):
            assert time.monotonic() < deadline, o
            time.sleep(0.2)
        if o["status"] == "filled":
            break
        assert time.monotonic() < deadline, o


@pytest.mark.slow
async def test_dev_stops_on_ctrl_c_with_a_hung_child_and_a_second_start_keeps_the_data(
        dev: Dev) -> None:
    dev.running()
    data, api = dev.data, dev.api
    headers = headers_of(await dev.account())
    market_buy_fills(api, headers, "2")
    cash_after = httpx.get(f"{api}/v2/account", headers=headers).json()["cash"]
    stack = json.loads((data / "stack.json").read_text())
    temporal = await Client.connect(stack["temporal_address"])
    await temporal.start_workflow("PersistCheck", id="persist-check", task_queue="nowhere")
    # a child that hangs (stopped: it answers no signal but SIGKILL) does not hold up Ctrl-C
    proc = dev.proc
    assert proc is not None
    hung = children(data)["api"]["pid"]
    os.kill(hung, signal.SIGSTOP)
    pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    t0 = time.monotonic()
    stop(proc, within=15)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 0, dev.log.read_text()[-2000:]
    assert not [p for p in pids if alive(p)], "children outlived sherwood dev"
    for port in dev.all_ports:
        assert not port_open("127.0.0.1", port), f"port {port} still open after stop"
    assert not (data / "stack.json").exists()

    dev.running()  # started again: left running for the tests after this one
    r = httpx.get(f"{api}/v2/account", headers=headers)
    assert r.status_code == 200 and r.json()["cash"] == cash_after
    positions = httpx.get(f"{api}/v2/positions", headers=headers).json()
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "2")]
    temporal = await Client.connect(f"127.0.0.1:{dev.ports['TEMPORAL_PORT']}")
    desc = await temporal.get_workflow_handle("persist-check").describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING


@pytest.mark.slow
def test_a_sigkilled_dev_takes_every_process_down(dev: Dev) -> None:
    dev.running()
    proc = dev.proc
    assert proc is not None
    # SIGKILL of `sherwood dev` itself: every process under it goes with it
    tree = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) >= 12
    proc.kill()
    proc.wait(5)
    deadline = time.monotonic() + 10
    while (left := [p for p in tree if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not left, [psutil.Process(p).cmdline() for p in left if alive(p)]
        for port in dev.all_ports:
            assert not port_open("127.0.0.1", port), f"port {port} still open"
    finally:  # never leak processes on a failure
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
