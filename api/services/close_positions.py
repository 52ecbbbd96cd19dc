"""Closing positions: ``DELETE /v2/positions/{symbol}`` and ``DELETE /v2/positions``.

A close is a market day sell placed through :meth:`OrderService.place`, like any customer
order: its workflow holds the shares, routes, books the fills (nothing here touches the ledger
or a venue). What it sells is decided by :mod:`domain.close_position` from the position as read
from the shard (:func:`api.services.positions.holdings`).

- One position: answers the order (Alpaca's order object); 404 without a position, 422 for bad
  ``qty``/``percentage`` (with a code), 403 ``insufficient_qty`` (with Alpaca's ``available``,
  ``existing_qty``, ``held_for_orders``, ``symbol``) when open sells hold the shares asked for.
  Refusals place nothing.
- Every position: with ``cancel_orders`` the account's open orders are canceled first (each
  through its workflow) and the close waits, up to ``close_all_cancel_wait_s``, for them to
  end, so the shares they held are free again; then one sell per position. The answer is
  Alpaca's multi-status list ``[{symbol, status, body[, order_id]}]`` (HTTP 207): the order, or
  the error body of a position that could not be closed (e.g. its shares still held by an
  order whose venue has not confirmed the cancel yet).

Not here: waiting for the sells to fill (the answer is the placed orders, as Alpaca's).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from api.errors import ApiError
from api.services.orders import MAX_LIST_LIMIT, OrderService
from api.services.positions import Holding, holdings, no_position, resolve_symbol
from domain.alpaca import number
from domain.close_position import CloseRequest, close_qty, parse_close_request
from domain.errors import DomainError


def _invalid(exc: DomainError) -> ApiError:
    return ApiError(422, exc.code, exc.message, code=42210000)


async def close_position(service: OrderService, account_id: uuid.UUID, symbol: str,
                         qty: str | None, percentage: str | None) -> dict[str, Any]:
    """Sell ``qty`` shares, ``percentage`` of the position, or all of it (see the module)."""
    try:
        req = parse_close_request(qty, percentage)
    except DomainError as exc:
        raise _invalid(exc) from exc
    sym = resolve_symbol(symbol)
    h = (await holdings(service.router, account_id, sym)).get(sym)
    if h is None or h.qty <= 0:
        raise no_position(sym)
    return await _sell(service, account_id, h, req)


async def _sell(service: OrderService, account_id: uuid.UUID, h: Holding,
                req: CloseRequest) -> dict[str, Any]:
    try:
        want = close_qty(h.qty, req)
    except DomainError as exc:
        raise _invalid(exc) from exc
    available = h.qty - h.held
    if want > available:  # open sells hold the rest: refused, nothing placed
        raise ApiError(
            403, "insufficient_qty",
            f"insufficient qty available for order (requested: {number(want)}, "
            f"available: {number(available)})", code=40310000,
            details={"symbol": h.symbol, "available": number(available),
                     "existing_qty": number(h.qty), "held_for_orders": number(h.held)})
    return await service.place(account_id, {"symbol": h.symbol, "qty": number(want), "side": "sell",
                                            "type": "market", "time_in_force": "day"})


async def close_all(service: OrderService, account_id: uuid.UUID, *,
                    cancel_orders: bool) -> list[dict[str, Any]]:
    """Close every position of the account (see the module); one entry per position."""
    if cancel_orders:
        canceled = [r["id"] for r in await service.cancel_all(account_id)]
        await _until_ended(service, account_id, set(canceled))
    out: list[dict[str, Any]] = []
    for h in (await holdings(service.router, account_id)).values():
        if h.qty <= 0:
            continue
        try:
            order = await _sell(service, account_id, h, CloseRequest())
        except ApiError as exc:
            out.append({"symbol": h.symbol, "status": exc.status, "body": exc.body()})
        else:
            out.append({"symbol": h.symbol, "status": 200, "order_id": order["id"], "body": order})
    return out


async def _until_ended(service: OrderService, account_id: uuid.UUID, ids: set[str]) -> None:
    """Return once none of the orders ``ids`` is open, or ``close_all_cancel_wait_s`` passed
    (the positions they still hold are then answered as not closable, not waited for)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.settings.close_all_cancel_wait_s
    while ids:
        still = {o["id"] for o in await service.list_orders(account_id, status="open",
                                                            limit=MAX_LIST_LIMIT)}
        ids &= still
        if not ids or loop.time() >= deadline:
            return
        await asyncio.sleep(service.settings.close_all_poll_s)
