"""``sherwood sim ...``: command-line entry points of the simulators.

``sim_app`` is a typer sub-app; the main CLI mounts it as ``sherwood sim``. Each command only
parses options and runs the simulator's async entry point; no simulation logic lives here.
Each command imports its simulator (and the metrics server) when it runs, so mounting the
sub-app costs every other ``sherwood`` command nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sherwood.lifecycle import stopped_by_signals

if TYPE_CHECKING:
    from simulators.market_maker import MarketMakerConfig

sim_app = typer.Typer(help="Simulated venues and feeds for local development and tests.",
                      no_args_is_help=True)


@sim_app.callback()
def _sim() -> None:
    """Simulated venues and feeds (keeps ``market-maker`` a sub-command even when alone)."""


@sim_app.command("market-maker")
def market_maker(
    port: int = typer.Option(9878, help="TCP port to accept the broker's FIX session on."),
    sender_comp_id: str = typer.Option("MM1", help="Our CompID (the venue name)."),
    target_comp_id: str = typer.Option("SHERWOOD", help="The broker's CompID."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    heartbeat: float = typer.Option(30.0, help="HeartBtInt in seconds."),
    redis_url: str | None = typer.Option(None, help="Read quotes/halts from this Redis."),
    price_improvement_bps: Decimal = typer.Option(Decimal(0), parser=Decimal,
                                                  help="Price improvement in basis points."),
    price_improvement_cents: Decimal = typer.Option(
        Decimal(0), parser=Decimal, help="Fixed price improvement per share in cents, e.g. 0.1."),
    improvement_jitter_cents: Decimal = typer.Option(
        Decimal(0), parser=Decimal, help="Plus a uniform draw in [0, this] cents (seeded)."),
    reject_rate: float = typer.Option(0.0, min=0.0, max=1.0,
                                      help="Share of new orders the venue declines (seeded)."),
    partial_fill_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of DAY/GTC orders filled in two halves (seeded)."),
    fill_slices: str = typer.Option("", help="Partial-fill slice sizes, e.g. 400,300,300."),
    fill_delay: float = typer.Option(0.0, help="Seconds between partial-fill slices."),
    max_liquidity: int | None = typer.Option(None, help="Shares available to IOC/FOK orders."),
    tick_interval: float = typer.Option(1.0, help="Seconds between random-walk steps."),
    seed: int = typer.Option(0, help="Random-walk seed."),
    latency: float = typer.Option(0.0, help="Seconds added before each report."),
    never_ack: bool = typer.Option(False, "--never-ack", help="Answer no order message at all."),
    duplicate_reports: bool = typer.Option(False, "--duplicate-reports",
                                           help="Send every ExecutionReport twice."),
    possresend_old: bool = typer.Option(False, "--possresend-old",
                                        help="After each fill re-send an old report, 97=Y."),
    overfill: bool = typer.Option(False, "--overfill",
                                  help="After each fill send a made-up trade for the order qty."),
    drop_connection: bool = typer.Option(False, "--drop-connection",
                                         help="Drop the TCP connection after the first ack."),
    skip_seq: bool = typer.Option(False, "--skip-seq",
                                  help="Skip outbound MsgSeqNums now and then."),
    halted: str = typer.Option("", help="Halted symbols, e.g. GME,AMC."),
    day_close: str | None = typer.Option(
        None, help="Expire DAY orders daily at this New York time, e.g. 16:00."),
    clock_offset_s: float = typer.Option(
        0.0, help="The venue's business clock runs this many seconds ahead of the wall clock "
        "(its opening and closing auctions; as SHERWOOD_MARKET_CLOCK_OFFSET_S)."),
    data_dir: Path | None = typer.Option(None, help="Keep the FIX session store here."),
    log_level: str = typer.Option("INFO", help="Logging level."),
    metrics_port: int | None = typer.Option(None, help="Serve Prometheus /metrics on host:port."),
) -> None:
    """Run a simulated wholesale market maker (FIX 4.4 acceptor) until interrupted."""
    from sherwood.metrics import start_metrics_server
    from simulators.market_maker import MarketMakerConfig, parse_slices, parse_symbols

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        slices = parse_slices(fill_slices)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fill-slices") from exc
    try:
        close = time.fromisoformat(day_close) if day_close else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--day-close") from exc
    config = MarketMakerConfig(
        sender_comp_id=sender_comp_id, target_comp_id=target_comp_id, host=host, port=port,
        heartbeat_interval=heartbeat, data_dir=data_dir, redis_url=redis_url, seed=seed,
        tick_interval=tick_interval, price_improvement_bps=price_improvement_bps,
        price_improvement_cents=price_improvement_cents,
        improvement_jitter_cents=improvement_jitter_cents, reject_rate=reject_rate,
        partial_fill_rate=partial_fill_rate,
        fill_slices=slices, fill_delay=fill_delay, max_liquidity=max_liquidity,
        halted=parse_symbols(halted), day_close=close, latency=latency, never_ack=never_ack,
        duplicate_reports=duplicate_reports, possresend_old=possresend_old, overfill=overfill,
        drop_connection_after_ack=drop_connection, skip_seq=skip_seq, clock_offset_s=clock_offset_s,
    )
    start_metrics_server(host, metrics_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))


async def _serve(config: MarketMakerConfig) -> None:
    """Run the venue until SIGINT/SIGTERM, then log out cleanly."""
    from simulators.market_maker import run_market_maker

    with stopped_by_signals() as stop:
        await run_market_maker(config, stop=stop)


@sim_app.command("exchange-feed")
def exchange_feed(
    port: int = typer.Option(8002, help="Ingest's feed port (TCP, line protocol)."),
    host: str = typer.Option("127.0.0.1", help="Ingest's address."),
    symbols: int = typer.Option(1000, help="Universe size (seeded assets + synthetic), <= 10000."),
    rate: float = typer.Option(1000.0, help="Updates per second (<= 100000)."),
    hot: int = typer.Option(5, help="Number of hot symbols."),
    hot_share: float = typer.Option(0.3, help="Share of updates that go to the hot symbols."),
    trade_ratio: float = typer.Option(0.1, help="Share of updates that are trades."),
    halt_every: float = typer.Option(0.0, help="Halt a random symbol every N seconds (0: never)."),
    halt_for: float = typer.Option(5.0, help="Seconds a halt lasts."),
    seed: int = typer.Option(0, help="Random seed."),
    replay: Path | None = typer.Option(None, help="Replay this CSV instead of the random walk."),
    log_level: str = typer.Option("INFO", help="Logging level."),
    metrics_port: int | None = typer.Option(None, help="Serve Prometheus /metrics on this loopback port."),
) -> None:
    """Run the exchange feed simulator: synthetic quotes/trades/halts to marketdata ingest."""
    from sherwood.metrics import start_metrics_server
    from simulators.exchange_feed import FeedConfig, run_exchange_feed

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FeedConfig(symbols=symbols, rate=rate, hot=hot, hot_share=hot_share,
                        trade_ratio=trade_ratio, halt_every_s=halt_every, halt_for_s=halt_for, seed=seed)

    async def _go() -> None:
        with stopped_by_signals() as stop:
            await run_exchange_feed(config, host, port, stop, replay=replay)

    start_metrics_server("127.0.0.1", metrics_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_go())
