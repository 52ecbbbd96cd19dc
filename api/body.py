"""Request bodies: read with a size limit, checked for nesting depth, then decoded as JSON with
every number a ``Decimal`` read straight from its text (never a float).

:class:`JsonBodyRoute` is the route class of every router whose endpoints take a body. Before
FastAPI looks at the body it:

- reads at most ``request_body_max_bytes`` (413 ``body_too_large`` past it, from the
  Content-Length header when there is one, else while reading);
- refuses a body nested deeper than ``request_json_max_depth`` (422 ``body_too_deep``), counted
  on the raw bytes, so the JSON parser never recurses that far;
- decodes it as JSON whatever its Content-Type says (none at all, or curl's default
  ``application/x-www-form-urlencoded``: this API takes no forms), with ``NaN`` / ``Infinity``
  refused (422 ``invalid_json``), and hands FastAPI the decoded value.

The endpoints keep their declared body types, so ``/docs`` documents them as before. Field
validation (bounds on each number, unknown fields) is not done here: the domain parsers do it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from api.errors import ApiError

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (brackets inside strings do not count).
    Linear in the body's length; does not parse (and so does not validate) it."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> Any:
    """``body`` as JSON, every number a Decimal from its text. Raises ``ValueError``."""
    return json.loads(body, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant)


def _limits(request: Request) -> tuple[int, int]:
    state = getattr(request.app.state, "sherwood", None)
    if state is None:
        return DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH
    return state.settings.request_body_max_bytes, state.settings.request_json_max_depth


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (else 413): refused on its Content-Length before reading
    when it declares one, and while reading otherwise (nothing beyond ``limit + 1`` bytes kept)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def prepare_json_body(request: Request) -> None:
    """Read, bound and decode the body of ``request``, leaving the result where FastAPI reads it
    (``request.json()``), with the Content-Type set to JSON. An empty body is left alone."""
    max_bytes, max_depth = _limits(request)
    body = await read_body(request, max_bytes)
    request._body = body
    if not body.strip():
        return
    if nesting_depth(body) > max_depth:
        raise ApiError(422, "body_too_deep", f"the request body nests deeper than {max_depth} levels",
                       code=42210000)
    try:
        request._json = decode_json(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_json", f"the request body is not valid JSON: {str(exc)[:200]}",
                       code=42210000) from None
    raw = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"content-type"]
    raw.append((b"content-type", b"application/json"))
    request.scope["headers"] = raw
    request._headers = Headers(scope=request.scope)


class JsonBodyRoute(APIRoute):
    """An APIRoute whose body (when the endpoint takes one) goes through :func:`prepare_json_body`
    first. Endpoints without a body parameter are untouched (their bodies are never read)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def route(request: Request) -> Response:
            await prepare_json_body(request)
            return await handler(request)

        return route
