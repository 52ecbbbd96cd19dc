"""`promtool` accepts deploy/alerts.yml and deploy/prometheus.yml, the alerts fire when they
should, and deploy/prometheus.yml scrapes exactly `sherwood dev`'s processes on their default
ports.

The real Prometheus scraping every process of a running `sherwood dev` is in
tests/sherwood/test_dev_stack.py, on the stack that module starts once for all its tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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
