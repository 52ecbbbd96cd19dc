"""API errors: every error body is ``{"code": <int>, "message": str, "reason": str}``.

``code`` follows Alpaca's integer convention (clients read it); ``reason`` is our stable
machine-readable string. Validation errors and unknown routes use the same shape. Some errors
add Alpaca's own keys (a refused position close: ``available``, ``existing_qty``,
``held_for_orders``, ``symbol``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.engines import DB_ERRORS, is_db_timeout
from db.errors import DbError, InsufficientFunds, ShardUnavailable, UnknownAccount
from domain.errors import DomainError
from domain.ops import OpsRefusal
from sherwood.faults import is_transient

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by services and routes; rendered as the common error body."""

    def __init__(self, status: int, reason: str, message: str, *, code: int | None = None,
                 headers: dict[str, str] | None = None,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.code = code if code is not None else status * 100000
        self.headers = headers
        self.details = details or {}  # extra keys of the body (Alpaca's, e.g. ``available``)

    def body(self) -> dict[str, object]:
        return {**self.details, **error_body(self.code, self.reason, self.message)}


def error_body(code: int, reason: str, message: str) -> dict[str, object]:
    return {"code": code, "message": message, "reason": reason}


def _response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def from_exception(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InsufficientFunds):
        return ApiError(403, exc.code, exc.message, code=40310000)
    if isinstance(exc, UnknownAccount):
        return ApiError(404, exc.code, exc.message, code=40410000)
    if isinstance(exc, ShardUnavailable):
        return ApiError(503, exc.code, exc.message)
    if isinstance(exc, OpsRefusal):
        return ApiError(exc.status, exc.code, str(exc), code=exc.status * 100000)
    if isinstance(exc, DomainError | DbError):
        return ApiError(422, exc.code, exc.message, code=42210000)
    if is_db_timeout(exc):  # lock_timeout / statement_timeout on the request path
        return ApiError(503, "db_timeout", "the database is busy; retry shortly",
                        headers={"Retry-After": "1"})
    if is_transient(exc):  # the database is down or restarting, a connection was cut
        return ApiError(503, "service_unavailable", "a backing service is unavailable; retry shortly",
                        headers={"Retry-After": "1"})
    return ApiError(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _response(exc)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return _response(from_exception(exc))

    @app.exception_handler(OpsRefusal)
    async def _ops_refusal(_: Request, exc: OpsRefusal) -> JSONResponse:
        return _response(from_exception(exc))

    @app.exception_handler(DbError)
    async def _db_error(_: Request, exc: DbError) -> JSONResponse:
        return _response(from_exception(exc))

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        """A database error no service turned into a DbError: 503 ``db_timeout`` when the
        server canceled the statement (lock_timeout / statement_timeout), 503
        ``service_unavailable`` when it is unreachable or went away, else a 500."""
        if is_db_timeout(exc) or is_transient(exc):
            log.warning("database unavailable or busy on the request path: %s", exc)
        else:
            log.error("database error", exc_info=exc)
        return _response(from_exception(exc))

    for db_error in DB_ERRORS:
        app.add_exception_handler(db_error, _database)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _response(ApiError(422, "invalid_request", "; ".join(parts), code=42210000))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error")
        return _response(ApiError(exc.status_code, reason, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _response(ApiError(500, "internal_error", "internal error"))
