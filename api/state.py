"""Process-wide resources of the API, built once in the app's lifespan from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from temporalio.client import Client

from api.admission import Admission
from api.ratelimit import RateLimiter
from db.gateway import GatewayStore
from db.router import ShardRouter
from sherwood.settings import Settings


@dataclass
class AppState:
    settings: Settings
    router: ShardRouter
    redis: Redis | None
    temporal: Client | None = None
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None, ""))
    # orders in transit per shard, counted in Redis (api/admission.py)
    admission: Admission = field(default_factory=lambda: Admission(None))
    # the execution gateway's database, read by the execution-quality report (engine is lazy)
    gateway: GatewayStore | None = None
    # open trade streams (GET /stream) per API key id in this process (api/routers/stream.py)
    streams_per_key: dict[str, int] = field(default_factory=dict)
