"""Operations actions, one home for the API (``/ops/*``) and the CLI (``sherwood ops|keys``).

What it does: every action that changes something (symbol halts and restrictions, clearing a
shard's trading halt, resolving a STUCK order, approving a resolution, issuing, rotating and
revoking ops keys) checks its reason, records who/when/what/why in the append-only
``ops_audit`` BEFORE carrying it out (so nothing happens unrecorded; a failure is recorded as a
following ``<action>.failed`` row), then does it. A resolution booking more than
``ops_four_eyes_notional`` is only recorded, pending; it reaches the order workflow when a
second, different operator approves it.

What it deliberately does not do: authenticate (api/deps.py checks ops keys and scopes, the CLI
checks ``--operator`` against ``SHERWOOD_OPS_OPERATORS``), or decide business rules itself
(domain/ops.py; the order workflow validates the resolution against its books).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from db import ops as store
from db.controls import ControlsStore
from db.ops import Actor, OpsCredentials
from domain.ops import (
    OpsRefusal,
    check_lifetime_days,
    check_name,
    check_reason,
    needs_second_approval,
    parse_scopes,
    resolution_notional,
)
from domain.risk import SymbolControl

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from temporalio.client import Client

    from db.router import ShardRouter
    from domain.orders import ResolveInput
    from sherwood.settings import Settings

_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,11}$")


@dataclass(frozen=True)
class ResolveOutcome:
    """``resolved`` (sent to the order workflow: ``order`` is its snapshot) or ``pending``
    (waiting for a second operator: ``request_id``)."""

    status: str
    order_id: str
    notional: str
    request_id: str | None = None
    order: dict[str, Any] | None = None


def _symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise OpsRefusal("invalid_symbol", "symbol must be 1-12 letters, digits or dots")
    return symbol.upper()


class OpsService:
    def __init__(self, settings: Settings, router: ShardRouter, redis: Redis | None,
                 temporal: Client | None) -> None:
        self.settings = settings
        self.router = router
        self.redis = redis
        self.temporal = temporal

    @property
    def directory(self) -> Any:
        return self.router.directory

    async def _act(self, actor: Actor, action: str, target: str, reason: str,
                   detail: dict[str, Any] | None, run: Any) -> Any:
        await store.record(self.directory, actor, action, target, reason, detail)
        try:
            return await run()
        except Exception as exc:
            await store.record(self.directory, actor, action + ".failed", target, reason,
                               {"error": str(exc)[:500]})
            raise

    # --- symbol controls ---------------------------------------------------------------

    async def _controls(self, actor: Actor, action: str, symbol: str, reason: str,
                        **kwargs: Any) -> SymbolControl:
        sym, why = _symbol(symbol), check_reason(reason)
        controls = ControlsStore(self.directory, self.redis, self.settings.redis_prefix)
        label = f"ops:{actor.key_id}" if actor.key_id else f"operator:{actor.name}"
        detail = {k: v for k, v in kwargs.items()}
        result: SymbolControl = await self._act(
            actor, action, sym, why, detail,
            lambda: controls.set(sym, actor=label, reason=why, **kwargs))
        return result

    async def halt(self, actor: Actor, symbol: str, reason: str) -> SymbolControl:
        return await self._controls(actor, "halt", symbol, reason, halted=True)

    async def resume(self, actor: Actor, symbol: str, reason: str) -> SymbolControl:
        return await self._controls(actor, "resume", symbol, reason, halted=False)

    async def restrict(self, actor: Actor, symbol: str, restriction: str | None,
                       reason: str) -> SymbolControl:
        if restriction not in ("close_only", "blocked", None):
            raise OpsRefusal("invalid_restriction", "restriction must be close_only, blocked or null")
        return await self._controls(actor, "restrict", symbol, reason, restriction=restriction)

    # --- shard halts -------------------------------------------------------------------

    async def clear_shard_halt(self, actor: Actor, shard: int, reason: str) -> int:
        from db.shard_status import clear_halts

        why = check_reason(reason)
        if not 0 <= shard < self.router.shard_count:
            raise OpsRefusal("not_found", f"no shard {shard}", 404)
        label = f"ops:{actor.key_id}" if actor.key_id else actor.name
        cleared: int = await self._act(
            actor, "shard.clear_halt", str(shard), why, None,
            lambda: clear_halts(self.router.engine(shard), operator=label, note=why))
        return cleared

    # --- STUCK orders ------------------------------------------------------------------

    async def resolve(self, actor: Actor, res: ResolveInput, reason: str) -> ResolveOutcome:
        """Resolve a STUCK order, or record it pending a second operator above the threshold."""
        why = check_reason(reason)
        if res.outcome not in ("filled", "canceled"):
            raise OpsRefusal("invalid_resolution", "outcome must be filled or canceled")
        notional = resolution_notional(res.filled_qty, res.avg_price,
                                       [(f.qty, f.price) for f in res.fills or []])
        res = dataclasses.replace(res, operator=actor.name, note=res.note or why)
        payload = dataclasses.asdict(res)
        if needs_second_approval(notional, self.settings.ops_four_eyes_notional):
            rid = await store.request_resolution(self.directory, res.order_id, payload, notional,
                                                 actor=actor, reason=why)
            return ResolveOutcome("pending", res.order_id, str(notional), request_id=str(rid))
        snap = await self._act(actor, "resolve", res.order_id, why,
                               {"notional": str(notional), "resolution": payload},
                               lambda: self._send(res))
        return ResolveOutcome("resolved", res.order_id, str(notional), order=snap)

    async def approve(self, actor: Actor, request_id: str, reason: str) -> ResolveOutcome:
        """A second operator approves a pending resolution: it is sent to the order workflow."""
        from domain.orders import ResolveFill, ResolveInput

        why = check_reason(reason)
        try:
            rid = uuid.UUID(str(request_id))
        except ValueError:
            raise OpsRefusal("not_found", f"no resolution request {request_id}", 404) from None
        order_id, payload = await store.approve_resolution(self.directory, rid, actor=actor,
                                                           reason=why)
        fills = payload.pop("fills", None)
        res = ResolveInput(**{**payload, "operator": f"{payload['operator']}+{actor.name}"},
                           fills=[ResolveFill(**f) for f in fills] if fills else None)
        notional = resolution_notional(res.filled_qty, res.avg_price,
                                       [(f.qty, f.price) for f in res.fills or []])
        try:
            snap = await self._send(res)
        except Exception as exc:
            await store.record(self.directory, actor, "resolve.approve.failed", order_id, why,
                               {"request_id": str(rid), "error": str(exc)[:500]})
            raise
        return ResolveOutcome("resolved", order_id, str(notional), request_id=str(rid), order=snap)

    async def _send(self, res: ResolveInput) -> dict[str, Any]:
        from workflows.order import OrderWorkflow

        if self.temporal is None:
            raise OpsRefusal("temporal_unavailable", "Temporal is not connected", 503)
        snap = await self.temporal.get_workflow_handle(res.order_id).execute_update(
            OrderWorkflow.resolve, res)
        return dataclasses.asdict(snap)

    # --- ops keys ----------------------------------------------------------------------

    async def create_key(self, actor: Actor, holder: str, scopes: list[str], days: int | None,
                         reason: str) -> OpsCredentials:
        why = check_reason(reason)
        return await store.create_key(
            self.directory, holder=check_name(holder, "holder"), scopes=parse_scopes(scopes),
            days=check_lifetime_days(days or self.settings.ops_key_days), actor=actor, reason=why)

    async def revoke_key(self, actor: Actor, key_id: str, reason: str) -> None:
        await store.revoke_key(self.directory, key_id, actor=actor, reason=check_reason(reason))

    async def rotate_key(self, actor: Actor, key_id: str, days: int | None,
                         reason: str) -> OpsCredentials:
        why = check_reason(reason)
        return await store.rotate_key(self.directory, key_id,
                                      days=check_lifetime_days(days or self.settings.ops_key_days),
                                      actor=actor, reason=why)
