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


class WatchlistIn(BaseModel):
    """A new watchlist: a name (1-64 characters, unique per account) and known symbols."""

    name: str
    symbols: list[str] | None = None


class WatchlistUpdateIn(BaseModel):
    """A rename and/or a new list of symbols (at least one of the two)."""

    name: str | None = None
    symbols: list[str] | None = None


class WatchlistAssetIn(BaseModel):
    symbol: str


class WatchlistSummaryOut(BaseModel):
    """A watchlist as listed (no assets), Alpaca's shape."""

    id: str
    account_id: str
    name: str
    created_at: str
    updated_at: str


class WatchlistOut(WatchlistSummaryOut):
    """A watchlist with its assets, in the customer's order."""

    assets: list[AssetOut]


class CalendarDayOut(BaseModel):
    """One NYSE session (Alpaca's calendar shape), New York times."""

    date: str
    open: str = Field(description="regular open, HH:MM")
    close: str = Field(description="regular close, HH:MM (13:00 on a half day)")
    session_open: str = Field(description="extended-hours open, HHMM")
    session_close: str = Field(description="extended-hours close, HHMM")
    settlement_date: str = Field(description="T+1 settlement date of a trade that day")


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


class TakeProfitIn(BaseModel):
    """The take-profit leg of a bracket / oco / oto order: a limit sell."""

    limit_price: Number


class StopLossIn(BaseModel):
    """The stop-loss leg: a sell when the bid reaches ``stop_price`` (a limit at
    ``limit_price`` when given)."""

    stop_price: Number
    limit_price: Number | None = None


class OrderIn(BaseModel):
    """An order request (Alpaca shape). Numbers are JSON numbers or strings, read exactly."""

    symbol: str
    qty: Number | None = Field(None, description="shares, up to 10^9, at most 9 decimals (a fraction "
                                                 "of a share: market or limit, day only); or notional")
    notional: Number | None = Field(None, description="USD to buy or sell (market, day only): at least "
                                                      "$1, at most 2 decimals; or qty")
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
    time_in_force: Literal["day", "gtc", "ioc", "fok", "opg", "cls"] = Field(
        description="opg / cls: market or limit on the open / on the close (auction orders)")
    limit_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    stop_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    trail_price: Number | None = Field(
        None, description="trailing_stop only (or trail_percent): USD, at most 10^6; cents from $1")
    trail_percent: Number | None = Field(
        None, description="trailing_stop only (or trail_price): 0 < p < 100, at most 2 decimals")
    client_order_id: str | None = Field(None, max_length=128)
    extended_hours: bool | None = None
    order_class: Literal["simple", "", "bracket", "oco", "oto"] | None = Field(
        None, description="bracket and oto: a buy entry with its exits (take_profit, stop_loss), "
        "held until the entry fills; oco: a limit sell (take_profit) and a stop-loss of a long "
        "position, one canceling the other")
    position_intent: Literal["buy_to_open", "sell_to_close"] | None = None
    take_profit: TakeProfitIn | None = None
    stop_loss: StopLossIn | None = None


class ReplaceIn(BaseModel):
    """A cancel/replace (Alpaca shape): what changes (absent: unchanged). Prices only of the
    order's type (limit_price: limit, stop_limit; stop_price: stop, stop_limit)."""

    qty: Number | None = Field(None, description="the new total, what has filled included")
    limit_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    stop_price: Number | None = Field(None, description="USD, at most 10^6; cents from $1")
    time_in_force: Literal["day", "gtc"] | None = None
    client_order_id: str | None = Field(None, max_length=128,
                                        description="new to the account")


class TransferIn(BaseModel):
    """An ACH transfer request."""

    amount: Number = Field(description="USD, 0.01..10^10, at most 2 decimals")
    direction: Literal["INCOMING", "OUTGOING"]
    transfer_type: Literal["ach"] = "ach"
    client_transfer_id: str | None = Field(None, max_length=128)


def body_schema(model: type[BaseModel], *, extra_fields: bool) -> dict[str, Any]:
    """``model``'s JSON schema for ``Body(json_schema_extra=...)`` of a dict body, its nested
    models inlined (a ``#/$defs/...`` reference would not resolve inside the OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {**inline(schema), "additionalProperties": extra_fields}


class PortfolioHistoryOut(BaseModel):
    """Alpaca's portfolio history: left-labeled points (epoch seconds), the equity at the end of
    each window, profit/loss against ``base_value`` (deposits and withdrawals excluded)."""

    timestamp: list[int]
    equity: list[float]
    profit_loss: list[float]
    profit_loss_pct: list[float | None]
    base_value: float
    timeframe: str
    cashflow: dict[str, list[float]] = {}
