"""A simulated ACH bank: an implementation of the :class:`domain.ports.Bank` port (checked by
mypy below), plugged into the back-office worker by :func:`sherwood.wiring.outside_world`.

Transfers are submitted and later asked for their outcome. Decisions, in order of precedence:

1. an explicit instruction for the transfer or for the account, stored in Redis
   (``<prefix>:bank:instr:<transfer id | account id>`` = ``settle`` | ``return`` | ``hold``) --
   tests and operators set them with :meth:`AchBank.instruct`; ``hold`` keeps the transfer
   pending (the ACH has not come back yet) until the instruction changes;
2. amount patterns: an amount whose cents are ``.13`` is returned (R01 insufficient funds for
   a deposit, a failed send for a withdrawal);
3. otherwise it settles.

The bank never decides before the transfer's settle time (the workflow waits N business days
first). Without Redis the instructions live in this object's memory.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from domain.ports import HOLD, RETURN, SETTLE, Bank
from sherwood.contracts import RedisKeys


class AchBank:
    def __init__(self, redis: Redis | None = None, prefix: str = "sherwood") -> None:
        self.redis = redis
        self.prefix = prefix
        self._memory: dict[str, str] = {}

    def _key(self, subject: str) -> str:
        return RedisKeys(self.prefix).bank_instruction(subject)

    async def instruct(self, subject: str, decision: str) -> None:
        """Decide the outcome for a transfer id or an account id (``settle``/``return``/``hold``)."""
        if decision not in (SETTLE, RETURN, HOLD):
            raise ValueError(f"unknown bank decision {decision!r}")
        if self.redis is None:
            self._memory[subject] = decision
        else:
            await self.redis.set(self._key(subject), decision, ex=7 * 86400)

    async def _instruction(self, subject: str) -> str | None:
        if self.redis is None:
            return self._memory.get(subject)
        raw = await self.redis.get(self._key(subject))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def submit(self, transfer_id: str, account_id: str, direction: str, amount: str) -> str:
        """Accept an ACH entry (a real bank gives a trace number)."""
        return f"ACH{transfer_id.replace('-', '')[:15].upper()}"

    async def outcome(self, transfer_id: str, account_id: str, amount: str) -> str:
        """``settle`` | ``return`` | ``hold`` (still pending) for a submitted transfer."""
        for subject in (transfer_id, account_id):
            decided = await self._instruction(subject)
            if decided:
                return decided
        cents = (Decimal(amount) * 100) % 100
        if cents == 13:
            return RETURN
        return SETTLE


if TYPE_CHECKING:
    _is_a_bank: type[Bank] = AchBank
