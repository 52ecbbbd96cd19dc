"""``GET /healthz``: up or down for anyone (load balancers, `sherwood dev`), details for ops keys.

Anonymous callers get ``{"status": "ok"}`` (200) or ``{"status": "degraded"}`` (503), nothing
else: which dependency, shard or worker is down, versions and latencies are for operations. A
request with an ops key of scope ``read`` (``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``) gets every
dependency and shard; a customer key is a 403, wrong credentials a 401.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import OptionalOpsKeyDep, StateDep
from api.errors import ApiError
from api.schemas import HealthOut
from api.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut,
            responses={200: {"description": "the details for an ops key, the status alone otherwise"}})
async def healthz(state: StateDep, caller: OptionalOpsKeyDep, workers: bool = False) -> JSONResponse:
    """Every dependency and every shard; 200 when all are up, 503 otherwise. With
    ``?workers=true`` also the shard workers and the execution gateway (Temporal pollers).
    The details only for an ops key; anyone else gets the status alone."""
    if caller is not None and "read" not in caller.scopes:
        raise ApiError(403, "insufficient_scope", "health details need the read scope",
                       code=40310000)
    result = await health.check(state, include_workers=workers)
    body = result.model_dump() if caller is not None else {"status": result.status}
    return JSONResponse(body, status_code=200 if result.status == "ok" else 503)
