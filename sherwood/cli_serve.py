"""``sherwood serve ...``: run one Sherwood process in the foreground.

What it does: one command per process kind (the REST API, the shard workers, the execution
gateway, the back-office workers, market-data ingest and fan-out), each loading the settings,
configuring logging and running that process's entry point until it is stopped.

What it deliberately does not do: start several processes or the infrastructure they need
(``sherwood dev`` does, spawning these commands as children), or hold any of the processes'
logic (it lives in api/, workers/ and marketdata/). Each serves Prometheus's ``/metrics`` on
``SHERWOOD_BIND_HOST:SHERWOOD_METRICS_PORT`` when that port is set (sherwood/metrics.py).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated

import typer

from sherwood.cli_common import DataDir, load_settings
from sherwood.lifecycle import freeze_startup_objects, run_loop
from sherwood.settings import Settings

serve_app = typer.Typer(help="Run one Sherwood process in the foreground.", no_args_is_help=True)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _settings(data_dir: DataDir) -> Settings:
    """The process's settings; its /metrics server started (when a port is set)."""
    from sherwood.metrics import start_metrics_server

    s = load_settings(data_dir)
    start_metrics_server(s.bind_host, s.metrics_port)
    return s


def _warm_calendar() -> None:
    """Build the NYSE calendar now (pandas, exchange_calendars: 1-1.5 s), at start, rather than
    inside the first order's request or workflow task (commands load it lazily)."""
    from domain.calendar import nyse

    nyse()


@serve_app.command("api")
def serve_api(data_dir: DataDir = None) -> None:
    """The REST API (uvicorn) on SHERWOOD_BIND_HOST:SHERWOOD_API_PORT."""
    import uvicorn

    from api.app import create_app

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO)
    _warm_calendar()
    app = create_app(s)
    freeze_startup_objects()
    uvicorn.run(app, host=s.bind_host, port=s.api_port, log_level="info")


@serve_app.command("shard-worker")
def serve_shard_worker(
    shard: Annotated[list[int] | None, typer.Option("--shard", help="Shard(s); default all.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Temporal workers for shard task queues (order workflows + their shard's activities)."""
    from workers.shard import run

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    _warm_calendar()
    run_loop(run(s, shard if shard else list(range(s.shard_count))))


@serve_app.command("gateway")
def serve_gateway(data_dir: DataDir = None) -> None:
    """The execution gateway: FIX sessions to every configured venue + its Temporal activities."""
    from workers.gateway import run_gateway

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    run_loop(run_gateway(s))


@serve_app.command("backoffice")
def serve_backoffice(data_dir: DataDir = None) -> None:
    """Back-office workers: settlement/reconciliation (queue backoffice) and funding + shard-local
    settlement activities (queues backoffice-shard-<n>)."""
    from sherwood.wiring import run_backoffice

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    run_loop(run_backoffice(s))


@serve_app.command("ingest")
def serve_ingest(data_dir: DataDir = None) -> None:
    """Market-data ingest: feed lines on SHERWOOD_MARKETDATA_FEED_PORT -> Redis + bars DB."""
    from marketdata.ingest_workers import run_ingest

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run_ingest(s))


@serve_app.command("fanout")
def serve_fanout(data_dir: DataDir = None) -> None:
    """Market-data WebSocket fan-out on ws://SHERWOOD_BIND_HOST:SHERWOOD_FANOUT_PORT/v2/iex."""
    from marketdata.fanout import run_fanout

    s = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run_fanout(s))
