"""Request bodies (api/body.py): depth counted on the raw bytes, numbers decoded to Decimal, and
every endpoint that takes a body reads it through JsonBodyRoute."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.routing import APIRoute

from api.app import create_app
from api.body import JsonBodyRoute, decode_json, nesting_depth


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert nesting_depth(b'{"a": "\\"[[["}') == 1
    assert nesting_depth(b"[" * 10000) == 10000
    assert nesting_depth(b"3") == 0


def test_numbers_decode_to_decimal_from_their_text() -> None:
    got = decode_json(b'{"qty": 3.0, "n": 3, "p": 0.1, "big": 1E+50}')
    assert got == {"qty": Decimal("3.0"), "n": Decimal(3), "p": Decimal("0.1"), "big": Decimal("1E+50")}
    assert all(isinstance(v, Decimal) for v in got.values())
    assert str(got["p"]) == "0.1"  # not 0.1000000000000000055511151231257827


@pytest.mark.parametrize("body", [b'{"qty": NaN}', b'{"qty": Infinity}', b'{"qty": -Infinity}'])
def test_non_finite_constants_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        decode_json(body)


def _api_routes(routes: list) -> list[APIRoute]:
    """Every APIRoute, also inside routers FastAPI keeps as included routers (newer versions)."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif (inner := getattr(r, "original_router", None)) is not None:
            out += _api_routes(inner.routes)
    return out


def test_every_endpoint_with_a_body_reads_it_through_the_bounded_route() -> None:
    app = create_app()
    with_body = [r for r in _api_routes(app.routes) if r.body_field is not None]
    assert {r.path for r in with_body} >= {"/v2/orders", "/v2/transfers", "/ops/halts"}
    assert all(isinstance(r, JsonBodyRoute) for r in with_body), [
        r.path for r in with_body if not isinstance(r, JsonBodyRoute)]
    spec = app.openapi()
    assert {"HaltIn", "RestrictionIn"} <= set(spec["components"]["schemas"])  # /docs still has them

    def body(path: str) -> dict:
        return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert {"symbol", "qty", "limit_price", "client_order_id"} <= set(body("/v2/orders")["properties"])
    assert body("/v2/orders")["additionalProperties"] is False
    # the legs of bracket / oco / oto orders are documented inline: every reference resolves
    assert "limit_price" in str(body("/v2/orders")["properties"]["take_profit"])
    assert "$defs" not in str(body("/v2/orders"))
    assert {"amount", "direction"} <= set(body("/v2/transfers")["required"])
