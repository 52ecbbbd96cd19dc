"""Ops keys, the append-only ``ops_audit`` and resolutions waiting for a second operator
(directory database).

What it does: issues, rotates, revokes and lists ops keys (only the secret's SHA-256 is stored;
the secret is shown once), each change audited in the same transaction; looks a key up for
every request with no cache, so a revocation or an expiry takes effect at once; appends audit
rows; records a resolution pending approval and hands it out once to an approver the rules
allow.

What it deliberately does not do: decide (domain/ops.py does: scopes, names, reasons, who may
approve), or carry an action out (api/services/ops.py does, for the API and the CLI alike).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.accounts import hash_secret, secret_matches
from db.engines import reading
from domain.ops import OpsKey, OpsRefusal, approval_refusal, key_refusal

_KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
KEY_PREFIX = "OK"


@dataclass(frozen=True)
class Actor:
    """Who acts: an operator name, and the ops key they used (None from the CLI)."""

    name: str
    key_id: str | None = None


@dataclass(frozen=True)
class OpsCredentials:
    key_id: str
    secret_key: str
    holder: str
    scopes: tuple[str, ...]
    expires_at: datetime


async def audit(conn: AsyncConnection, actor: Actor, action: str, target: str, reason: str,
                detail: dict[str, Any] | None = None) -> int:
    """Append one ``ops_audit`` row in the caller's transaction; its id."""
    return int((await conn.execute(text(
        "INSERT INTO ops_audit (actor, key_id, action, target, reason, detail) "
        "VALUES (:a, :k, :act, :t, :r, CAST(:d AS jsonb)) RETURNING id"),
        {"a": actor.name, "k": actor.key_id, "act": action, "t": target, "r": reason,
         "d": json.dumps(detail or {}, default=str)})).scalar_one())


async def record(directory: AsyncEngine, actor: Actor, action: str, target: str, reason: str,
                 detail: dict[str, Any] | None = None) -> int:
    async with directory.begin() as conn:
        return await audit(conn, actor, action, target, reason, detail)


async def audit_rows(directory: AsyncEngine, limit: int = 100) -> list[dict[str, Any]]:
    async with reading(directory) as conn:
        rows = (await conn.execute(text(
            "SELECT id, at, actor, key_id, action, target, reason, detail FROM ops_audit "
            "ORDER BY id DESC LIMIT :n"), {"n": limit})).mappings().all()
    return [dict(r) for r in rows]


def _new_key_id() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


async def _insert_key(conn: AsyncConnection, holder: str, scopes: tuple[str, ...], days: int,
                      rotated_from: str | None) -> OpsCredentials:
    creds = OpsCredentials(_new_key_id(), secrets.token_urlsafe(30), holder, scopes,
                           datetime.now(UTC) + timedelta(days=days))
    await conn.execute(text(
        "INSERT INTO ops_keys (key_id, secret_hash, holder, scopes, expires_at, rotated_from) "
        "VALUES (:k, :h, :who, :s, :e, :r)"),
        {"k": creds.key_id, "h": hash_secret(creds.secret_key), "who": holder,
         "s": list(scopes), "e": creds.expires_at, "r": rotated_from})
    return creds


async def create_key(directory: AsyncEngine, *, holder: str, scopes: tuple[str, ...], days: int,
                     actor: Actor, reason: str) -> OpsCredentials:
    """Issue a key to ``holder`` (validated by the caller), audited in the same transaction."""
    async with directory.begin() as conn:
        creds = await _insert_key(conn, holder, scopes, days, None)
        await audit(conn, actor, "keys.create", creds.key_id, reason,
                    {"holder": holder, "scopes": list(scopes),
                     "expires_at": creds.expires_at.isoformat()})
    return creds


async def _live_key(conn: AsyncConnection, key_id: str) -> Any:
    row = (await conn.execute(text(
        "SELECT key_id, holder, scopes, expires_at, revoked_at FROM ops_keys "
        "WHERE key_id = :k FOR UPDATE"), {"k": key_id})).one_or_none()
    if row is None:
        raise OpsRefusal("not_found", f"no ops key {key_id}", 404)
    if row.revoked_at is not None:
        raise OpsRefusal("already_revoked", f"ops key {key_id} is already revoked", 409)
    return row


async def revoke_key(directory: AsyncEngine, key_id: str, *, actor: Actor, reason: str) -> None:
    """Revoke a key: refused on its next request (there is no cache to outlive this)."""
    async with directory.begin() as conn:
        await _live_key(conn, key_id)
        await conn.execute(text("UPDATE ops_keys SET revoked_at = clock_timestamp() "
                                "WHERE key_id = :k"), {"k": key_id})
        await audit(conn, actor, "keys.revoke", key_id, reason)


async def rotate_key(directory: AsyncEngine, key_id: str, *, days: int, actor: Actor,
                     reason: str) -> OpsCredentials:
    """A new key for the same holder and scopes; the old one revoked in the same transaction."""
    async with directory.begin() as conn:
        old = await _live_key(conn, key_id)
        creds = await _insert_key(conn, old.holder, tuple(old.scopes), days, key_id)
        await conn.execute(text("UPDATE ops_keys SET revoked_at = clock_timestamp() "
                                "WHERE key_id = :k"), {"k": key_id})
        await audit(conn, actor, "keys.rotate", key_id, reason,
                    {"new_key_id": creds.key_id, "expires_at": creds.expires_at.isoformat()})
    return creds


async def list_keys(directory: AsyncEngine) -> list[dict[str, Any]]:
    async with reading(directory) as conn:
        rows = (await conn.execute(text(
            "SELECT key_id, holder, scopes, created_at, expires_at, revoked_at, rotated_from "
            "FROM ops_keys ORDER BY created_at"))).mappings().all()
    return [{**r, "scopes": list(r["scopes"])} for r in rows]


async def authenticate_ops(directory: AsyncEngine, key_id: str,
                           secret: str) -> tuple[OpsKey | None, str | None]:
    """``(key, None)`` for a usable key; ``(None, "unknown")`` when no ops key has this id and
    secret; ``(None, "revoked" | "expired")`` for one that may not be used any more. Asked of
    the database on every call: nothing outlives a revocation."""
    async with reading(directory) as conn:
        row = (await conn.execute(text(
            "SELECT key_id, secret_hash, holder, scopes, expires_at, revoked_at, "
            "clock_timestamp() AS now FROM ops_keys WHERE key_id = :k"),
            {"k": key_id})).one_or_none()
    if row is None or not secret_matches(secret, row.secret_hash):
        return None, "unknown"
    key = OpsKey(row.key_id, row.holder, tuple(row.scopes), row.expires_at, row.revoked_at)
    refusal = key_refusal(key, row.now)
    return (None, refusal) if refusal else (key, None)


async def request_resolution(directory: AsyncEngine, order_id: str, payload: dict[str, Any],
                             notional: Decimal, *, actor: Actor, reason: str) -> uuid.UUID:
    """Record a resolution pending a second operator's approval (audited); its id."""
    rid = uuid.uuid4()
    async with directory.begin() as conn:
        await conn.execute(text(
            "INSERT INTO ops_resolutions (id, order_id, payload, notional, requested_by) "
            "VALUES (:i, :o, CAST(:p AS jsonb), :n, :by)"),
            {"i": rid, "o": order_id, "p": json.dumps(payload), "n": notional, "by": actor.name})
        await audit(conn, actor, "resolve.request", order_id, reason,
                    {"request_id": str(rid), "notional": str(notional), "resolution": payload})
    return rid


async def approve_resolution(directory: AsyncEngine, request_id: uuid.UUID, *, actor: Actor,
                             reason: str) -> tuple[str, dict[str, Any]]:
    """Approve a pending resolution (once, and never by its requester): the order id and the
    resolution to send to the order workflow. Marked approved and audited in one transaction,
    so two approvers racing send it once."""
    async with directory.begin() as conn:
        row = (await conn.execute(text(
            "SELECT order_id, payload, requested_by, status FROM ops_resolutions "
            "WHERE id = :i FOR UPDATE"), {"i": request_id})).one_or_none()
        if row is None:
            raise OpsRefusal("not_found", f"no resolution request {request_id}", 404)
        refusal = approval_refusal(row.requested_by, actor.name, row.status)
        if refusal is not None:
            raise refusal
        await conn.execute(text(
            "UPDATE ops_resolutions SET status = 'approved', approved_by = :a, "
            "approved_at = clock_timestamp() WHERE id = :i"), {"a": actor.name, "i": request_id})
        await audit(conn, actor, "resolve.approve", row.order_id, reason,
                    {"request_id": str(request_id), "requested_by": row.requested_by})
    return row.order_id, dict(row.payload)


async def resolutions(directory: AsyncEngine, *, pending_only: bool = True) -> list[dict[str, Any]]:
    async with reading(directory) as conn:
        rows = (await conn.execute(text(
            "SELECT id, order_id, payload, notional, requested_by, requested_at, status, "
            "approved_by, approved_at FROM ops_resolutions "
            + ("WHERE status = 'pending' " if pending_only else "")
            + "ORDER BY requested_at"))).mappings().all()
    return [dict(r) for r in rows]
