"""Request/response schemas of the REST API (Alpaca v2 shapes). Separate from database rows;
numbers travel as strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


# --- assets, clock, positions, activities (read endpoints) ------------------------------------

class AssetOut(BaseModel):
    """Alpaca's asset object. The JSON key of the asset class is literally ``class``."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    asset_class: str = Field(alias="class")
    exchange: str
    symbol: str
    name: str
    status: str
    tradable: bool
    marginable: bool
    shortable: bool
    easy_to_borrow: bool
    fractionable: bool
    attributes: list[str] = Field(default_factory=list)
    # Sherwood extras
    restriction: str | None = None
    restriction_reason: str | None = None


class ClockOut(BaseModel):
    timestamp: str
    is_open: bool
    next_open: str
    next_close: str


class PositionOut(BaseModel):
    asset_id: str
    symbol: str
    exchange: str
    asset_class: str = "us_equity"
    asset_marginable: bool = False
    avg_entry_price: str
    qty: str
    qty_available: str
    side: str = "long"
    market_value: str | None = None
    cost_basis: str
    unrealized_pl: str | None = None
    unrealized_plpc: str | None = None
    unrealized_intraday_pl: str | None = None
    unrealized_intraday_plpc: str | None = None
    current_price: str | None = None
    lastday_price: str | None = None
    change_today: str | None = None
    # Sherwood extras: where the shares are, and what current_price is (bid | last_fill | none)
    qty_held: str = "0"
    qty_unsettled: str = "0"
    price_source: str = "none"


class FillActivityOut(BaseModel):
    """A trade activity (activity_type FILL): one execution."""

    id: str
    activity_type: str = "FILL"
    transaction_time: str
    type: str  # fill | partial_fill
    price: str
    qty: str
    side: str
    symbol: str
    leaves_qty: str
    order_id: str
    cum_qty: str
    order_status: str


class CashActivityOut(BaseModel):
    """A non-trade activity (deposits CSD, withdrawals CSW, fees, journals)."""

    id: str
    activity_type: str
    date: str
    net_amount: str
    description: str
    status: str = "executed"
    symbol: str | None = None
    qty: str | None = None
    per_share_amount: str | None = None
    # Sherwood extra
    transaction_time: str


# --- request bodies (documentation: the routes read the body as a dict and the domain parsers
# validate it, so every refusal carries its own code; these models give /docs the fields) ------

Number = Decimal | str


class OrderIn(BaseModel):
    """An order request (Alpaca shape). Numbers are JSON numbers or strings, read exactly."""

    symbol: str
    qty: Number | None = Field(None, description="shares, up to 10^9, at most 9 decimals (a fraction "
                                                 "of a share: market or limit, day only); or notional")
    notional: Number | None = Field(None, description="USD to buy or sell (market, day only): at least "
                                                      "$1, at most 2 decimals; or qty")
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit"]
    time_in_force: Literal["day", "gtc", "ioc", "fok"]
    limit_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    stop_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    client_order_id: str | None = Field(None, max_length=128)
    extended_hours: bool | None = None
    order_class: Literal["simple", ""] | None = Field(
        None, description="only simple: bracket/oco/oto (take_profit, stop_loss) are refused")
    position_intent: Literal["buy_to_open", "sell_to_close"] | None = None


class TransferIn(BaseModel):
    """An ACH transfer request."""

    amount: Number = Field(description="USD, 0.01..10^10, at most 2 decimals")
    direction: Literal["INCOMING", "OUTGOING"]
    transfer_type: Literal["ach"] = "ach"
    client_transfer_id: str | None = Field(None, max_length=128)


def body_schema(model: type[BaseModel], *, extra_fields: bool) -> dict[str, Any]:
    """``model``'s JSON schema for ``Body(json_schema_extra=...)`` of a dict body."""
    return {**model.model_json_schema(), "additionalProperties": extra_fields}
