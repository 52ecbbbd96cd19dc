"""Request/response schemas of the REST API (Alpaca v2 shapes). Separate from database rows;
numbers travel as strings."""

from __future__ import annotations

from pydantic import BaseModel


class AccountOut(BaseModel):
    id: str
    account_number: str
    status: str
    currency: str = "USD"
    cash: str
    buying_power: str
    regt_buying_power: str
    daytrading_buying_power: str
    non_marginable_buying_power: str
    portfolio_value: str
    equity: str
    last_equity: str
    long_market_value: str
    short_market_value: str = "0"
    initial_margin: str = "0"
    maintenance_margin: str = "0"
    multiplier: str = "1"
    pending_transfer_in: str = "0"
    pending_transfer_out: str = "0"
    pattern_day_trader: bool
    trading_blocked: bool
    transfers_blocked: bool = False
    account_blocked: bool = False
    shorting_enabled: bool = False
    daytrade_count: int = 0
    created_at: str
    # Sherwood extras (clients ignore unknown fields)
    account_type: str
    shard: int
    cash_held: str
    cash_unsettled: str


class ShardHealth(BaseModel):
    shard: int
    status: str
    latency_ms: float | None = None
    error: str | None = None


class DependencyHealth(BaseModel):
    status: str
    latency_ms: float | None = None
    error: str | None = None


class HealthOut(BaseModel):
    status: str
    dependencies: dict[str, DependencyHealth]
    shards: list[ShardHealth]
