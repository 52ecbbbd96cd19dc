"""The real Prometheus (Debian's package) scrapes every process `sherwood dev` runs: each one's
/metrics target is `up == 1`, read through Prometheus's HTTP API, and the shard gauges the back
office computes at scrape time are there. `promtool` accepts deploy/alerts.yml and
deploy/prometheus.yml, and deploy/prometheus.yml scrapes exactly `sherwood dev`'s processes on
their default ports.

The stack uses the session's Postgres and Redis (its own database and key prefix) and its own
Temporal dev server (its task queues must not meet the other tests' workers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from db.migrate import drop_database
from sherwood.embedded import free_port
from sherwood.metrics import prometheus_config
from sherwood.settings import DEV_METRICS_PORTS, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (apt-get install prometheus; .ci/run does)")


@needs_prometheus
def test_promtool_accepts_the_alerts_and_the_config() -> None:
    rules = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr


@needs_prometheus
def test_the_alerts_fire_when_they_should_and_not_before() -> None:
    """deploy/alerts_test.yml: STUCK for 3 min does not page, for 5 does; outbox lag, a FIX
    session down, a failed reconciliation, undeliverable reports, a late settlement, a process
    down -- each fires on its series and clears (or stays quiet) when it should."""
    run = subprocess.run(["promtool", "test", "rules", str(DEPLOY / "alerts_test.yml")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_deploy_config_scrapes_every_dev_process_on_its_default_port() -> None:
    deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in deployed["scrape_configs"]}
    assert jobs == {name: [f"127.0.0.1:{port}"] for name, port in DEV_METRICS_PORTS.items()}
    assert Settings().dev_metrics_ports == DEV_METRICS_PORTS
    assert deployed["rule_files"] == ["alerts.yml"]


def test_every_alert_the_task_names_is_there() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    assert set(by_name) >= {"SherwoodOrdersStuck", "SherwoodReportsUndeliverable",
                            "SherwoodReconciliationFailed", "SherwoodSettlementLate",
                            "SherwoodFixSessionDown", "SherwoodOutboxLag"}
    assert by_name["SherwoodOrdersStuck"]["for"] == "5m"
    assert "> 5" in by_name["SherwoodOutboxLag"]["expr"]


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
def test_prometheus_scrapes_every_process_of_the_dev_stack(tmp_path: Path, pg_server_url: str,
                                                           redis_url: str) -> None:
    prefix = f"swm{os.getpid()}"
    data = tmp_path / "stack"
    metrics_ports = {name: free_port() for name in DEV_METRICS_PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHERWOOD_")}
    env.update({
        "SHERWOOD_DATA_DIR": str(data), "SHERWOOD_POSTGRES_URL": pg_server_url,
        "SHERWOOD_REDIS_URL": redis_url, "SHERWOOD_DB_PREFIX": prefix, "SHERWOOD_REDIS_PREFIX": prefix,
        "SHERWOOD_DB_POOL_SIZE": "2", "SHERWOOD_DB_MAX_OVERFLOW": "2",
        "SHERWOOD_DEV_METRICS_PORTS": json.dumps(metrics_ports),
        "SHERWOOD_DEV_VENUE_PORTS": json.dumps([free_port(), free_port()]),
        **{f"SHERWOOD_{k}": str(free_port()) for k in (
            "API_PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT", "GATEWAY_LINK_PORT", "FANOUT_PORT",
            "MARKETDATA_FEED_PORT")}})
    log = tmp_path / "dev.log"
    dev = subprocess.Popen([sys.executable, "-m", "sherwood", "dev", "--shards", "1"], env=env,
                           stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    prom_proc = None
    try:
        def healthy() -> dict | None:
            if dev.poll() is not None:
                logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}"
                               for p in sorted((data / "logs").glob("*.log")))
                pytest.fail(f"sherwood dev exited {dev.returncode}:\n{log.read_text()[-3000:]}{logs}")
            path = data / "stack.json"
            return json.loads(path.read_text()) if path.exists() else None

        stack = _wait("sherwood dev healthy", healthy, 180, log)
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
        stuck = _wait("the shard gauges", lambda: _query(prom, "sherwood_orders_stuck"), 30, prom_log)
        assert [(s["metric"]["shard"], s["value"][1]) for s in stuck] == [("0", "0")]
        assert _query(prom, "sherwood_shard_scrape_ok")[0]["value"][1] == "1"
        sessions = _wait("both FIX sessions up", lambda: (
            r if len(r := _query(prom, "sherwood_fix_session_up == 1")) == 2 else None), 60, prom_log)
        assert {s["metric"]["venue"] for s in sessions} == {"MM1", "MM2"}
        # the rest of the shard gauges, the fan-out's state and ingest's counts (the feed runs)
        for expr in ("sherwood_outbox_oldest_pending_seconds", "sherwood_reconciliation_ok",
                     "sherwood_settlement_days_behind", "sherwood_fanout_clients",
                     "sherwood_fanout_queue_bytes"):
            assert len(_query(prom, expr)) == 1, expr
        _wait("ingest counting the feed", lambda: _query(prom, "sherwood_ingest_accepted_total > 0"),
              30, prom_log)
    finally:
        if prom_proc is not None:
            prom_proc.terminate()
            try:
                prom_proc.wait(15)
            except subprocess.TimeoutExpired:
                prom_proc.kill()
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
        s = Settings(postgres_url=pg_server_url, db_prefix=prefix, shards=1)
        for url in [s.directory_db_url(), s.shard_url(0), s.gateway_db_url_resolved(),
                    s.marketdata_db_url_resolved()]:
            drop_database(url)
