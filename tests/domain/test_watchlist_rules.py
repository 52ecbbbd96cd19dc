"""domain.watchlists: each refusal has its code; accepted requests come back normalized."""

from __future__ import annotations

import pytest

from domain.watchlists import WatchlistError, WatchlistLimits, decide_add, decide_create, decide_update

KNOWN = {"AAPL", "MSFT", "BRK.B"}
LIM = WatchlistLimits(max_lists=2, max_symbols=3)


@pytest.mark.parametrize(("names", "name", "symbols", "code"), [
    (set(), "", [], "invalid_watchlist_name"),
    (set(), "x" * 65, [], "invalid_watchlist_name"),
    (set(), "tab\there", [], "invalid_watchlist_name"),
    (set(), 7, [], "invalid_watchlist_name"),
    ({"A"}, "A", [], "duplicate_watchlist_name"),
    ({"A", "B"}, "C", [], "watchlist_limit_reached"),
    (set(), "C", ["AAPL", "aapl"], "duplicate_symbol"),
    (set(), "C", ["AAPL", "MSFT", "BRK.B", "AAPL"], "duplicate_symbol"),
    (set(), "C", ["NOPE"], "unknown_symbol"),
    (set(), "C", ["A B"], "invalid_symbol"),
    (set(), "C", ["É"], "invalid_symbol"),
    (set(), "C", [3], "invalid_symbol"),
    (set(), "C", ["X" * 17], "invalid_symbol"),
    (set(), "C", ["AAPL"] * 10_001, "watchlist_too_long"),
])
def test_create_refusals(names: set[str], name: object, symbols: list[object], code: str) -> None:
    with pytest.raises(WatchlistError) as e:
        decide_create(names, name, symbols, KNOWN, LIM)
    assert e.value.code == code


def test_accepted_requests() -> None:
    assert decide_create({"A"}, "Tech 1", ["msft", "brk.b"], KNOWN, LIM) == ("Tech 1", ["MSFT", "BRK.B"])
    with pytest.raises(WatchlistError, match="at most 3"):
        decide_create(set(), "C", ["AAPL", "MSFT", "BRK.B", "X"], KNOWN, LIM)
    assert decide_update({"B"}, ("A", ["AAPL"]), None, ["MSFT"], KNOWN, LIM) == ("A", ["MSFT"])
    assert decide_update({"B"}, ("A", ["AAPL"]), "C", None, KNOWN, LIM) == ("C", ["AAPL"])
    with pytest.raises(WatchlistError) as e:
        decide_update({"B"}, ("A", ["AAPL"]), "B", None, KNOWN, LIM)
    assert e.value.code == "duplicate_watchlist_name"
    assert decide_add(["AAPL"], "msft", KNOWN, LIM) == ["AAPL", "MSFT"]
    for current, sym, code in [(["AAPL"], "aapl", "symbol_already_in_watchlist"),
                               (["AAPL", "MSFT", "BRK.B"], "TSLA", "watchlist_too_long"),
                               (["AAPL"], "NOPE", "unknown_symbol")]:
        with pytest.raises(WatchlistError) as e:
            decide_add(current, sym, KNOWN, LIM)
        assert e.value.code == code
