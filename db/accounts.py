"""Opening accounts and issuing API credentials (directory + the account's shard).

Secrets are random, high-entropy and shown once; only their SHA-256 is stored (a slow password
hash buys nothing for 256-bit random secrets and would cost every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import text

from db.engines import reading
from db.router import ShardRouter

_KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


@dataclass(frozen=True)
class Credentials:
    key_id: str
    secret_key: str
    role: str
    account_id: uuid.UUID | None


@dataclass(frozen=True)
class OpenedAccount:
    account_id: uuid.UUID
    account_number: str
    shard: int
    account_type: str
    credentials: Credentials


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    account_id: uuid.UUID | None
    role: str


def _new_key_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


async def create_api_key(
    router: ShardRouter, account_id: uuid.UUID | None, *, role: str = "trader"
) -> Credentials:
    if role != "trader":  # operations keys are ops_keys (db/ops.py), never customer keys
        raise ValueError(f"customer keys have the trader role, not {role!r}")
    creds = Credentials(_new_key_id("PK" if role == "trader" else "OK"),
                        secrets.token_urlsafe(30), role, account_id)
    async with router.directory.begin() as conn:
        await conn.execute(
            text("INSERT INTO api_keys (key_id, account_id, secret_hash, role) "
                 "VALUES (:k, :a, :h, :r)"),
            {"k": creds.key_id, "a": account_id, "h": hash_secret(creds.secret_key), "r": role},
        )
    return creds


async def authenticate(router: ShardRouter, key_id: str, secret: str) -> ApiKey | None:
    """The key if ``secret`` matches and the key is not revoked, else None."""
    async with reading(router.directory) as conn:
        row = (await conn.execute(
            text("SELECT key_id, account_id, secret_hash, role FROM api_keys "
                 "WHERE key_id = :k AND revoked_at IS NULL"),
            {"k": key_id},
        )).one_or_none()
    if row is None or not secret_matches(secret, row.secret_hash):
        return None
    return ApiKey(row.key_id, row.account_id, row.role)


async def open_account(router: ShardRouter, *, account_type: str = "cash") -> OpenedAccount:
    """Open an account on the least-loaded shard and issue its first API key.

    The shard row is written first: until the directory row commits, nothing routes to it, so a
    crash in between leaves an unreachable row, never a routed account without its data.
    """
    if account_type not in ("cash", "instant"):
        raise ValueError(f"account type must be cash or instant, got {account_type!r}")
    account_id = uuid.uuid4()
    number = f"SW{account_id.int % 10**10:010d}"
    async with router.directory.connect() as conn:
        shard = (await conn.execute(
            text("SELECT id FROM shards WHERE status = 'active' "
                 "ORDER BY account_count, id LIMIT 1")
        )).scalar_one()
    async with router.engine(shard).begin() as conn:
        await conn.execute(
            text("INSERT INTO accounts (id, account_number, account_type) VALUES (:i, :n, :t)"),
            {"i": account_id, "n": number, "t": account_type},
        )
    async with router.directory.begin() as conn:
        await conn.execute(
            text("UPDATE shards SET account_count = account_count + 1 WHERE id = :s"), {"s": shard}
        )
        await conn.execute(
            text("INSERT INTO accounts (id, shard, account_number) VALUES (:i, :s, :n)"),
            {"i": account_id, "s": shard, "n": number},
        )
    await router.remember(account_id, shard)
    creds = await create_api_key(router, account_id)
    return OpenedAccount(account_id, number, shard, account_type, creds)
