"""Failures injected into one account's calls of a real store or port, the others untouched: the
bounded-failure tests' way to make our own code fail (a bug, an outage, a hang) inside the real
stack. No tests here."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text


def failing(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, account_id: str,
            exc: BaseException | None, *, table: str, calls: list[int] | None = None) -> None:
    """``cls.<method>`` fails with ``exc`` (``None``: never returns) for one account's rows of
    ``table``; the others go through. Whose call it is: the first argument's ``account_id``, else
    a second argument that is a string (the bank's ``(transfer_id, account_id, ...)``), else the
    owner of the id in the first argument, read from ``table``."""
    real = getattr(cls, method)

    async def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        first = args[0]
        owner = getattr(first, "account_id", None)
        if owner is None and len(args) > 1 and isinstance(args[1], str):
            owner = args[1]
        if owner is None:
            async with self.engine.connect() as conn:
                owner = str((await conn.execute(text(f"SELECT account_id FROM {table} WHERE id = :i"),
                                                {"i": uuid.UUID(str(first))})).scalar())
        if str(owner) != account_id:
            return await real(self, *args, **kwargs)
        if calls is not None:
            calls.append(1)
        if exc is None:
            await asyncio.Event().wait()
        raise exc  # type: ignore[misc]

    monkeypatch.setattr(cls, method, broken)
