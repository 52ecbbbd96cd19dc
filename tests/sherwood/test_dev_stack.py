"""`sherwood dev` with embedded defaults in a temp dir: healthy, usable from another shell with no
configuration, stops on Ctrl-C within 15 s even with a hung child, and a second start finds the
data (ledger and Temporal). It supervises its children: one that dies is restarted (embedded
servers too) while the rest keep running, and a SIGKILLed `sherwood dev` takes them all down.
Least privilege holds in it: the API connects to Postgres as its own login, each kind of process
to Redis as its own user, and quotes still flow from the feed to a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
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
from sherwood.settings import DEV_METRICS_PORTS


def clean_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env["SHERWOOD_DATA_DIR"] = str(data_dir)
    # every process's /metrics on a free port too (another stack may run on the defaults)
    env["SHERWOOD_DEV_METRICS_PORTS"] = json.dumps({name: free_port() for name in DEV_METRICS_PORTS})
    for key, port in ports.items():
        env[f"SHERWOOD_{key}"] = str(port)
    return env


def start(env: dict[str, str], log: Path, shards: int = 2) -> subprocess.Popen[bytes]:
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
async def test_dev_stack_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    ports = {"API_PORT": free_port(), "TEMPORAL_PORT": free_port(),
             "TEMPORAL_UI_PORT": free_port(), "EMBEDDED_PG_PORT": free_port(),
             "EMBEDDED_REDIS_PORT": free_port(), "GATEWAY_LINK_PORT": free_port(),
             "FANOUT_PORT": free_port(), "MARKETDATA_FEED_PORT": free_port()}
    venue_ports = [free_port(), free_port()]
    data = tmp_path / "stack"
    env = clean_env(data, ports)
    env["SHERWOOD_DEV_VENUE_PORTS"] = json.dumps(venue_ports)
    # the market buy below must fill at any hour CI runs (market hours are tested in test_risk)
    env["SHERWOOD_ENFORCE_MARKET_HOURS"] = "false"
    log = tmp_path / "dev.log"
    api = f"http://127.0.0.1:{ports['API_PORT']}"

    proc = start(env, log)
    try:
        assert wait_healthy(proc, api, log) == {"status": "ok"}  # anonymous: up or down only
        ops = json.loads(subprocess.run(
            [sys.executable, "-m", "sherwood", "keys", "create", "--holder", "dev-health",
             "--scope", "read", "--operator", "alice", "--reason", "health check", "--json",
             "--data-dir", str(data)],
            env={**{k: v for k, v in env.items() if k != "SHERWOOD_DATA_DIR"},
                 "SHERWOOD_OPS_OPERATORS": '["alice"]'},
            capture_output=True, text=True, timeout=60, check=True).stdout)
        health = httpx.get(f"{api}/healthz", params={"workers": "true"}, timeout=5, headers={
            "APCA-API-KEY-ID": ops["key_id"], "APCA-API-SECRET-KEY": ops["secret_key"]}).json()
        assert health["status"] == "ok" and len(health["shards"]) == 2
        assert health["dependencies"]["execution_gateway"]["status"] == "ok"
        stack = json.loads((data / "stack.json").read_text())
        assert stack["temporal_ui_url"] == f"http://127.0.0.1:{ports['TEMPORAL_UI_PORT']}"
        # another shell, no configuration beyond the data dir
        out = subprocess.run(
            [sys.executable, "-m", "sherwood", "accounts", "create", "--deposit", "10000",
             "--json", "--data-dir", str(data)],
            env={k: v for k, v in env.items() if k != "SHERWOOD_DATA_DIR"},
            capture_output=True, text=True, timeout=60, check=True)
        acct = json.loads(out.stdout)
        assert set(acct) >= {"account_id", "shard", "key_id", "secret_key"}
        headers = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
        assert httpx.get(f"{api}/v2/account", headers=headers).json()["cash"] == "10000.00"
        # right after start a new user can trade: a market buy through the whole stack fills
        r = httpx.post(f"{api}/v2/orders", headers=headers, timeout=30, json={
            "symbol": "AAPL", "qty": "2", "side": "buy", "type": "market", "time_in_force": "day"})
        assert r.status_code == 200, r.text
        order_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while (o := httpx.get(f"{api}/v2/orders/{order_id}", headers=headers).json())["status"] != "filled":
            assert time.monotonic() < deadline, o
            time.sleep(0.2)
        cash_after = httpx.get(f"{api}/v2/account", headers=headers).json()["cash"]
        await check_least_privilege(data, stack, acct)
        temporal = await Client.connect(stack["temporal_address"])
        # the children share the gateway link's secret dev made (0600): nobody was refused
        assert stat.S_IMODE((data / "link.secret").stat().st_mode) == 0o600
        assert "gateway link: refused" not in (data / "logs" / "gateway.log").read_text()
        assert "not used" not in (data / "logs" / "shard-worker.log").read_text()
        await temporal.start_workflow("PersistCheck", id="persist-check", task_queue="nowhere")
        # a child that hangs (stopped: it answers no signal but SIGKILL) does not hold up Ctrl-C
        hung = children(data)["api"]["pid"]
        os.kill(hung, signal.SIGSTOP)
        pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        t0 = time.monotonic()
    finally:
        stop(proc, within=15)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert not [p for p in pids if alive(p)], "children outlived sherwood dev"
    for port in [*ports.values(), *venue_ports]:
        assert not port_open("127.0.0.1", port), f"port {port} still open after stop"
    assert not (data / "stack.json").exists()

    proc = start(env, log)
    try:
        wait_healthy(proc, api, log)
        r = httpx.get(f"{api}/v2/account", headers=headers)
        assert r.status_code == 200 and r.json()["cash"] == cash_after
        positions = httpx.get(f"{api}/v2/positions", headers=headers).json()
        assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "2")]
        temporal = await Client.connect(f"127.0.0.1:{ports['TEMPORAL_PORT']}")
        desc = await temporal.get_workflow_handle("persist-check").describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
    finally:
        stop(proc)
    assert proc.returncode == 0


def wait_restarted(data: Path, name: str, old_pid: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = children(data)[name]
        if child["pid"] not in (None, old_pid) and child["state"] == "running" and alive(child["pid"]):
            return child
        time.sleep(0.2)
    pytest.fail(f"{name} was not restarted: {children(data)[name]}")


@pytest.mark.slow
async def test_dev_restarts_what_dies_and_takes_everything_down_when_killed(tmp_path: Path) -> None:
    ports = {"API_PORT": free_port(), "TEMPORAL_PORT": free_port(),
             "TEMPORAL_UI_PORT": free_port(), "EMBEDDED_PG_PORT": free_port(),
             "EMBEDDED_REDIS_PORT": free_port(), "GATEWAY_LINK_PORT": free_port(),
             "FANOUT_PORT": free_port(), "MARKETDATA_FEED_PORT": free_port()}
    venue_ports = [free_port(), free_port()]
    data = tmp_path / "stack"
    env = clean_env(data, ports)
    env["SHERWOOD_DEV_VENUE_PORTS"] = json.dumps(venue_ports)
    env["SHERWOOD_ENFORCE_MARKET_HOURS"] = "false"
    env["SHERWOOD_DEV_RESTART_BACKOFF_INITIAL_S"] = "0.2"
    log = tmp_path / "dev.log"
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    proc = start(env, log, shards=1)
    tree: list[int] = []
    try:
        wait_healthy(proc, api, log)
        before = children(data)
        assert set(before) >= {"postgres", "redis", "temporal", "mm1", "mm2", "ingest", "fanout",
                               "exchange-feed", "shard-worker", "gateway", "backoffice", "api"}
        assert all(c["state"] == "running" and c["restarts"] == 0 for c in before.values())

        # one Sherwood process dies: it alone is restarted, the rest keep running
        os.kill(before["gateway"]["pid"], signal.SIGKILL)
        gw = wait_restarted(data, "gateway", before["gateway"]["pid"])
        assert gw["restarts"] == 1 and gw["last_exit"] == -9
        now = children(data)
        assert {n: c["pid"] for n, c in now.items() if n != "gateway"} == \
            {n: c["pid"] for n, c in before.items() if n != "gateway"}

        # so does a venue, the feed, the API and each embedded server
        for name in ("mm1", "exchange-feed", "api", "redis", "temporal", "postgres"):
            old = children(data)[name]["pid"]
            os.kill(old, signal.SIGKILL)
            assert wait_restarted(data, name, old, timeout=90)["restarts"] >= 1
        assert "restarted" in log.read_text()
        status = subprocess.run([sys.executable, "-m", "sherwood", "dev", "--status", "--data-dir",
                                 str(data)], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "gateway" in status.stdout and str(children(data)["gateway"]["pid"]) in status.stdout

        # and the stack trades again: a market buy fills
        wait_healthy(proc, api, log, timeout=120)
        out = subprocess.run(
            [sys.executable, "-m", "sherwood", "accounts", "create", "--deposit", "10000",
             "--json", "--data-dir", str(data)],
            env={k: v for k, v in env.items() if k != "SHERWOOD_DATA_DIR"},
            capture_output=True, text=True, timeout=90, check=True)
        acct = json.loads(out.stdout)
        headers = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
        deadline = time.monotonic() + 60
        while True:  # the gateway may still be logging on to the restarted venue
            r = httpx.post(f"{api}/v2/orders", headers=headers, timeout=30, json={
                "symbol": "AAPL", "qty": "1", "side": "buy", "type": "market",
                "time_in_force": "day"})
            assert r.status_code == 200, r.text
            oid = r.json()["id"]
            while (o := httpx.get(f"{api}/v2/orders/{oid}", headers=headers).json())["status"] in (
                    "accepted", "pending_new", "new"):
                assert time.monotonic() < deadline, o
                time.sleep(0.2)
            if o["status"] == "filled":
                break
            assert time.monotonic() < deadline, o

        # SIGKILL of `sherwood dev` itself: every process under it goes with it
        tree = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 12
        proc.kill()
        proc.wait(5)
        deadline = time.monotonic() + 10
        while (left := [p for p in tree if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, [psutil.Process(p).cmdline() for p in left if alive(p)]
        for port in [*ports.values(), *venue_ports]:
            assert not port_open("127.0.0.1", port), f"port {port} still open"
    finally:  # never leak processes on a failure
        if proc.poll() is None:
            tree = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            stop(proc)
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
