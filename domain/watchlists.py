"""Watchlist rules (Alpaca's ``/v2/watchlists``): names, symbols, limits. Pure: the store loads the
account's lists and the symbols the asset table knows, asks these functions, and writes what they
return (or nothing: each raises a :class:`~domain.errors.DomainError` with a stable code).

Names are 1 to 64 characters without control characters, unique per account. Symbols are
upper-cased, must be known assets, appear once per list, and keep the customer's order. Limits
(settings): ``max_lists`` per account, ``max_symbols`` per list.

What it deliberately does not do: decide "not found" (a missing list or a symbol not in it is the
caller's 404), or look anything up.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from domain.errors import DomainError

MAX_NAME = 64
MAX_SYMBOL = 16
MAX_INPUT_SYMBOLS = 10_000  # an input list longer than this is refused before anything else


class WatchlistError(DomainError):
    code = "invalid_watchlist"


@dataclass(frozen=True)
class WatchlistLimits:
    max_lists: int
    max_symbols: int


def check_name(name: object) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise WatchlistError(f"a watchlist name is 1 to {MAX_NAME} printable characters",
                             code="invalid_watchlist_name")
    return name


def normalize_symbol(symbol: object) -> str:
    """An upper-cased symbol of letters, digits and dots (at most 16), else ``invalid_symbol``."""
    if not isinstance(symbol, str) or not 0 < len(symbol) <= MAX_SYMBOL \
            or not symbol.replace(".", "").isalnum() or not symbol.isascii():
        raise WatchlistError(f"not a symbol: {str(symbol)[:20]!r}", code="invalid_symbol")
    return symbol.upper()


def symbols_needed(symbols: Sequence[object]) -> list[str]:
    """The normalized symbols of a request (to look up which the asset table knows)."""
    if len(symbols) > MAX_INPUT_SYMBOLS:
        raise WatchlistError("too many symbols", code="watchlist_too_long")
    return [normalize_symbol(s) for s in symbols]


def _checked_symbols(symbols: Sequence[object], known: Collection[str], limits: WatchlistLimits) -> list[str]:
    out = symbols_needed(symbols)
    if len(set(out)) != len(out):
        raise WatchlistError("a symbol appears twice", code="duplicate_symbol")
    if len(out) > limits.max_symbols:
        raise WatchlistError(f"a watchlist holds at most {limits.max_symbols} symbols",
                             code="watchlist_too_long")
    unknown = [s for s in out if s not in known]
    if unknown:
        raise WatchlistError(f"unknown symbol(s): {', '.join(unknown[:5])}", code="unknown_symbol")
    return out


def decide_create(names: Collection[str], name: object, symbols: Sequence[object],
                  known: Collection[str], limits: WatchlistLimits) -> tuple[str, list[str]]:
    """A new list: its name and symbols. ``names`` are the account's existing lists' names."""
    n = check_name(name)
    syms = _checked_symbols(symbols, known, limits)
    if n in names:
        raise WatchlistError(f"a watchlist named {n!r} exists", code="duplicate_watchlist_name")
    if len(names) >= limits.max_lists:
        raise WatchlistError(f"an account has at most {limits.max_lists} watchlists",
                             code="watchlist_limit_reached")
    return n, syms


def decide_update(other_names: Collection[str], current: tuple[str, list[str]], name: object | None,
                  symbols: Sequence[object] | None, known: Collection[str],
                  limits: WatchlistLimits) -> tuple[str, list[str]]:
    """A list renamed and/or its symbols replaced (``None``: unchanged). ``other_names`` are the
    account's other lists' names."""
    n = current[0] if name is None else check_name(name)
    syms = current[1] if symbols is None else _checked_symbols(symbols, known, limits)
    if n in other_names:
        raise WatchlistError(f"a watchlist named {n!r} exists", code="duplicate_watchlist_name")
    return n, syms


def decide_add(current: list[str], symbol: object, known: Collection[str],
               limits: WatchlistLimits) -> list[str]:
    """The list's symbols with ``symbol`` appended."""
    s = normalize_symbol(symbol)
    if s in current:
        raise WatchlistError(f"{s} is already in the watchlist", code="symbol_already_in_watchlist")
    if len(current) >= limits.max_symbols:
        raise WatchlistError(f"a watchlist holds at most {limits.max_symbols} symbols",
                             code="watchlist_too_long")
    if s not in known:
        raise WatchlistError(f"unknown symbol: {s}", code="unknown_symbol")
    return [*current, s]
