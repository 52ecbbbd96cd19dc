from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from api.schemas import HealthOut
from api.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz(state: StateDep, workers: bool = False) -> JSONResponse:
    """Every dependency and every shard; 200 when all are up, 503 otherwise. With
    ``?workers=true`` also the shard workers and the execution gateway (Temporal pollers)."""
    result = await health.check(state, include_workers=workers)
    return JSONResponse(result.model_dump(), status_code=200 if result.status == "ok" else 503)
