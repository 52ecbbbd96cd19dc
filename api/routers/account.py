from __future__ import annotations

from fastapi import APIRouter

from api.deps import QuotesDep, RouterDep, StateDep, TraderDep
from api.schemas import AccountOut
from api.services import accounts

router = APIRouter(prefix="/v2", tags=["account"])


@router.get("/account", response_model=AccountOut)
async def get_account(key: TraderDep, router_: RouterDep, quotes: QuotesDep,
                      state: StateDep) -> AccountOut:
    """The authenticated account, read from its shard."""
    assert key.account_id is not None
    return await accounts.get_account(router_, key.account_id, quotes, state.settings.risk_limits())
