"""`sherwood dev` with embedded defaults in a temp dir: healthy, usable from another shell with no
configuration, stops cleanly on Ctrl-C, and a second start finds the data (ledger and Temporal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from sherwood.embedded import free_port, port_open


def clean_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env["SHERWOOD_DATA_DIR"] = str(data_dir)
    for key, port in ports.items():
        env[f"SHERWOOD_{key}"] = str(port)
    return env


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sherwood", "dev", "--shards", "2"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


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


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("sherwood dev did not stop within 90 s of Ctrl-C")


async def test_dev_stack_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    ports = {"API_PORT": free_port(), "TEMPORAL_PORT": free_port(),
             "TEMPORAL_UI_PORT": free_port(), "EMBEDDED_PG_PORT": free_port(),
             "EMBEDDED_REDIS_PORT": free_port(), "GATEWAY_LINK_PORT": free_port()}
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
            [sys.executable, "-m", "sherwood", "ops", "create-key", "--json", "--data-dir", str(data)],
            env={k: v for k, v in env.items() if k != "SHERWOOD_DATA_DIR"},
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
        temporal = await Client.connect(stack["temporal_address"])
        await temporal.start_workflow("PersistCheck", id="persist-check", task_queue="nowhere")
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
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
