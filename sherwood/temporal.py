"""Connecting to Temporal and registering the order search attributes."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

from sherwood.embedded import ORDER_SEARCH_ATTRIBUTES
from sherwood.settings import Settings

_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    if not settings.temporal_address:
        raise RuntimeError("no Temporal configured: set SHERWOOD_TEMPORAL_ADDRESS or run `sherwood dev`")
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                lazy=lazy)


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register OrderState, Symbol, AccountId, ShardId if the server lacks them (idempotent)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        k: _TYPES[v] for k, v in ORDER_SEARCH_ATTRIBUTES.items()
        if k not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
