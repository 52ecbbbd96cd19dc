"""Connecting to Temporal (with Sherwood's data converter) and registering the order search
attributes."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.converter import (
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    value_to_type,
)
from temporalio.service import TLSConfig

from domain.execution import VenueEvent
from fix.messages import is_legacy_payload, legacy_venue_event
from sherwood.contracts import ORDER_SEARCH_ATTRIBUTES
from sherwood.settings import Settings

_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


_PLAIN = (str, int, bool)  # JSON gives these as the values themselves


def _plain_types(hint: Any) -> frozenset[type]:
    """The value types a field of ``hint`` takes as they come from JSON, unconverted: ``str``
    for ``str``, ``str`` and ``None`` for ``str | None`` (likewise int, bool). Anything else
    (Decimal, float, dates, containers, dataclasses, enums, ...) goes through the SDK's
    ``value_to_type``."""
    if hint in _PLAIN:
        return frozenset({hint})
    args = typing.get_args(hint)
    if args and type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _PLAIN:
            return frozenset({rest[0], type(None)})
    return frozenset()


@functools.lru_cache(maxsize=256)
def _decoders(cls: type) -> tuple[tuple[str, bool, Any, frozenset[type]], ...]:
    """Per field of ``cls``: name, init, type hint, the value types taken as they are."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, f.init, hints[f.name], _plain_types(hints[f.name]))
                 for f in dataclasses.fields(cls))


class CachedHintsDataclasses(JSONTypeConverter):
    """Decodes dataclass payloads with each class's type hints resolved once.

    temporalio's own decoder calls ``typing.get_type_hints`` for every dataclass value it
    decodes, which with postponed annotations evaluates every field's annotation string each
    time: about 5% of the shard worker's CPU under load. Same rules as the SDK's: unknown keys
    are ignored, a missing required field fails in the constructor, ``init=False`` fields are
    set afterwards.

    Payloads of an older shape are upgraded here, the one place that knows payload versions: a
    :class:`VenueEvent` recorded as a FIX-coded ``ExecutionReportSignal`` (histories and signals
    written before venue events existed) decodes to the event it means.
    """

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict)):
            return JSONTypeConverter.Unhandled
        if hint is VenueEvent and is_legacy_payload(value):
            return legacy_venue_event(value)
        init: dict[str, Any] = {}
        later: dict[str, Any] = {}
        for name, in_init, field_hint, plain in _decoders(hint):
            if name in value:
                v = value[name]
                # a str (int, bool, None) where the field takes one as it is: no conversion
                # (the SDK's generic walk costs several isinstance checks per field)
                (init if in_init else later)[name] = (
                    v if type(v) in plain else value_to_type(field_hint, v, [self]))
        obj = hint(**init)
        for name, v in later.items():
            object.__setattr__(obj, name, v)
        return obj


class ShallowDataclassEncoder(AdvancedJSONEncoder):
    """Encodes a dataclass field by field, without :func:`dataclasses.asdict`.

    ``asdict`` deep-copies every value and rebuilds nested containers before the encoder walks
    them again; here the encoder's own walk does it (nested dataclasses come back to
    :meth:`default`). The JSON is the same, byte for byte (keys are sorted), so payloads and
    replays are unchanged; it costs less per payload on every hop of an order.
    """

    def default(self, o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {name: getattr(o, name) for name in _field_names(type(o))}
        return super().default(o)


@functools.lru_cache(maxsize=256)
def _field_names(cls: type) -> tuple[str, ...]:
    # The fields only, not their type hints: encoding needs none, and resolving them failed
    # once in CI ("name 'TransferInput' is not defined", encoding a sandboxed workflow's
    # activity input; likely the sandbox's copy of the module, half imported at that moment)
    return tuple(f.name for f in dataclasses.fields(cls))


# built once: they hold no state, and the SDK builds a payload converter for every workflow
# activation (twice: ``DataConverter.with_context`` clones the data converter, whose
# ``__post_init__`` makes a new one it then replaces)
_CONVERTERS = tuple(
    JSONPlainPayloadConverter(encoder=ShallowDataclassEncoder,
                              custom_type_converters=[CachedHintsDataclasses()])
    if isinstance(c, JSONPlainPayloadConverter) else c
    for c in DefaultPayloadConverter.default_encoding_payload_converters)


class _PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(*_CONVERTERS)


DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=_PayloadConverter)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """The TLS of the Temporal connection from ``SHERWOOD_TEMPORAL_TLS*``: False (plaintext, the
    dev server) unless TLS is asked for or any certificate setting is given. The files are read
    here: a missing file fails the start, not the first call."""
    s = settings
    if not (s.temporal_tls or s.temporal_tls_client_cert or s.temporal_tls_client_key
            or s.temporal_tls_server_ca or s.temporal_tls_server_name):
        return False
    if (s.temporal_tls_client_cert is None) != (s.temporal_tls_client_key is None):
        raise ValueError("SHERWOOD_TEMPORAL_TLS_CLIENT_CERT and _CLIENT_KEY go together (mTLS)")
    return TLSConfig(
        server_root_ca_cert=s.temporal_tls_server_ca.read_bytes() if s.temporal_tls_server_ca else None,
        domain=s.temporal_tls_server_name,
        client_cert=s.temporal_tls_client_cert.read_bytes() if s.temporal_tls_client_cert else None,
        client_private_key=s.temporal_tls_client_key.read_bytes() if s.temporal_tls_client_key else None,
    )


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    if not settings.temporal_address:
        raise RuntimeError("no Temporal configured: set SHERWOOD_TEMPORAL_ADDRESS or run `sherwood dev`")
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                lazy=lazy, data_converter=DATA_CONVERTER, tls=tls_config(settings))


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
