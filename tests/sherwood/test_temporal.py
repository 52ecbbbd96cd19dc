"""The session's Temporal dev server has the order search attributes, and registering them again
is harmless (what `sherwood migrate` does against a configured cluster)."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from sherwood.contracts import ORDER_SEARCH_ATTRIBUTES
from sherwood.settings import Settings
from sherwood.temporal import ensure_search_attributes


async def test_order_search_attributes_registered(stack_settings: Settings) -> None:
    assert stack_settings.temporal_address
    client = await Client.connect(stack_settings.temporal_address)
    await ensure_search_attributes(client, "default")
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default"))
    assert set(ORDER_SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)
