"""The seeded universe of tradable US equities (symbol, name, exchange, reference price).

The reference price only seeds simulators' random walks when no quote feed runs; it is never used
for money. The list is data, not logic: later slices may load a larger universe.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

_NS = uuid.UUID("6f1d4b1e-8c1e-4c50-9f0e-5e1f0a1b2c3d")


@dataclass(frozen=True)
class Asset:
    symbol: str
    name: str
    exchange: str
    ref_price: Decimal
    tradable: bool = True

    @property
    def id(self) -> uuid.UUID:
        """Stable asset id, the same on every shard and every run."""
        return _asset_id(self.symbol)


@lru_cache(maxsize=4096)
def _asset_id(symbol: str) -> uuid.UUID:
    # every order object (each trade update, each order read) names its asset: a SHA-1 each
    return uuid.uuid5(_NS, symbol)


_RAW = """
AAPL|Apple Inc.|NASDAQ|187.50
MSFT|Microsoft Corporation|NASDAQ|415.20
GOOGL|Alphabet Inc. Class A|NASDAQ|172.30
AMZN|Amazon.com Inc.|NASDAQ|181.10
META|Meta Platforms Inc.|NASDAQ|495.00
NVDA|NVIDIA Corporation|NASDAQ|121.40
TSLA|Tesla Inc.|NASDAQ|242.80
NFLX|Netflix Inc.|NASDAQ|640.10
AMD|Advanced Micro Devices Inc.|NASDAQ|158.20
INTC|Intel Corporation|NASDAQ|31.05
CSCO|Cisco Systems Inc.|NASDAQ|48.60
ADBE|Adobe Inc.|NASDAQ|512.40
PEP|PepsiCo Inc.|NASDAQ|171.30
COST|Costco Wholesale Corporation|NASDAQ|812.70
AVGO|Broadcom Inc.|NASDAQ|160.90
QCOM|Qualcomm Inc.|NASDAQ|168.20
SBUX|Starbucks Corporation|NASDAQ|78.40
PYPL|PayPal Holdings Inc.|NASDAQ|63.20
HOOD|Robinhood Markets Inc.|NASDAQ|22.15
COIN|Coinbase Global Inc.|NASDAQ|224.50
PLTR|Palantir Technologies Inc.|NASDAQ|24.80
SIRI|Sirius XM Holdings Inc.|NASDAQ|3.12
JPM|JPMorgan Chase & Co.|NYSE|198.40
BAC|Bank of America Corporation|NYSE|37.90
WFC|Wells Fargo & Company|NYSE|58.20
GS|Goldman Sachs Group Inc.|NYSE|462.10
MS|Morgan Stanley|NYSE|98.30
V|Visa Inc.|NYSE|274.80
MA|Mastercard Inc.|NYSE|458.60
KO|Coca-Cola Company|NYSE|62.40
DIS|Walt Disney Company|NYSE|102.70
NKE|Nike Inc.|NYSE|94.10
WMT|Walmart Inc.|NYSE|66.20
HD|Home Depot Inc.|NYSE|345.20
JNJ|Johnson & Johnson|NYSE|152.30
PFE|Pfizer Inc.|NYSE|28.60
MRK|Merck & Co. Inc.|NYSE|128.40
XOM|Exxon Mobil Corporation|NYSE|113.50
CVX|Chevron Corporation|NYSE|156.20
T|AT&T Inc.|NYSE|17.40
VZ|Verizon Communications Inc.|NYSE|40.10
BA|Boeing Company|NYSE|178.90
GE|GE Aerospace|NYSE|160.30
F|Ford Motor Company|NYSE|12.30
GM|General Motors Company|NYSE|45.60
UBER|Uber Technologies Inc.|NYSE|71.80
GME|GameStop Corp.|NYSE|22.70
AMC|AMC Entertainment Holdings Inc.|NYSE|4.85
BB|BlackBerry Limited|NYSE|2.45
NOK|Nokia Oyj|NYSE|3.95
SNAP|Snap Inc.|NYSE|10.60
SPY|SPDR S&P 500 ETF Trust|ARCA|528.40
QQQ|Invesco QQQ Trust|NASDAQ|451.20
IWM|iShares Russell 2000 ETF|ARCA|205.30
DIA|SPDR Dow Jones Industrial Average ETF|ARCA|392.10
GLD|SPDR Gold Shares|ARCA|215.70
TLRY|Tilray Brands Inc.|NASDAQ|1.72
SNDL|SNDL Inc.|NASDAQ|0.9750
MULN|Mullen Automotive Inc.|NASDAQ|0.4210
"""

ASSETS: tuple[Asset, ...] = tuple(
    Asset(sym, name, exch, Decimal(px))
    for sym, name, exch, px in (line.split("|") for line in _RAW.strip().splitlines())
)
BY_SYMBOL: dict[str, Asset] = {a.symbol: a for a in ASSETS}


def get_asset(symbol: str) -> Asset | None:
    return BY_SYMBOL.get(symbol)
