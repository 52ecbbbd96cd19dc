from __future__ import annotations

import time


def q(sym: str, bid: str = "100.00", ask: str = "100.02", *, t: int | None = None, bs: int = 3,
      asz: int = 4) -> bytes:
    return f"Q,{sym},{bid},{bs},{ask},{asz},{t or time.time_ns()},V,V,C".encode()


def tr(sym: str, price: str = "100.01", size: int = 100, *, t: int | None = None, i: int = 1) -> bytes:
    return f"T,{sym},{price},{size},{t or time.time_ns()},{i},V,C".encode()
