"""Sherwood's data converter encodes and decodes exactly what the SDK's default converter does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from temporalio.converter import DataConverter

from activities.orders import ApplyReportsInput
from domain.execution import ExecutionReportSignal, VenueAck
from domain.orders import OrderSnapshot, OrderTimeouts, PlaceOrderInput
from sherwood.temporal import DATA_CONVERTER


@dataclass
class _WithLateField:
    a: str
    nested: list[OrderSnapshot] = field(default_factory=list)
    late: str = field(default="x", init=False)


def _report(exec_id: str) -> ExecutionReportSignal:
    return ExecutionReportSignal(venue="v", exec_id=exec_id, msg_type="8", cl_ord_id="c",
                                 order_id="o", exec_type="F", ord_status="2", last_qty="1",
                                 last_px="12.31")


SNAP = OrderSnapshot(order_id="o", account_id="a", client_order_id="c", state="FILLED",
                     symbol="F", side="buy", qty="10", filled_qty="10", filled_avg_price="12.31")
LATE = _WithLateField(a="1", nested=[SNAP])
LATE.late = "set"

CASES = [
    (SNAP, OrderSnapshot),
    (ApplyReportsInput(order_id="o", reports=[_report("1"), _report("2")], routed_venue="v"),
     ApplyReportsInput),
    (VenueAck(venue="v", cl_ord_id="o", reports=[_report("3")]), VenueAck),
    (PlaceOrderInput(order_id="o", account_id="a", shard=1, request={"qty": "1"},
                     request_hash="h", timeouts=OrderTimeouts(ack_s=1.5), snapshot=SNAP), PlaceOrderInput),
    (LATE, _WithLateField),
]


@pytest.mark.parametrize(("value", "hint"), CASES)
def test_decodes_like_the_sdk(value: object, hint: type) -> None:
    payloads = DataConverter.default.payload_converter.to_payloads([value])
    ours = DATA_CONVERTER.payload_converter.from_payloads(payloads, [hint])[0]
    sdk = DataConverter.default.payload_converter.from_payloads(payloads, [hint])[0]
    assert ours == sdk == value
    assert type(ours) is hint


def test_unknown_keys_are_ignored_and_missing_required_fields_fail() -> None:
    conv = DATA_CONVERTER.payload_converter
    extra = conv.to_payloads([{**SNAP.__dict__, "added_later": 1}])
    assert conv.from_payloads(extra, [OrderSnapshot])[0] == SNAP
    missing = conv.to_payloads([{"order_id": "o"}])
    with pytest.raises(TypeError):
        conv.from_payloads(missing, [OrderSnapshot])


@pytest.mark.parametrize(("value", "hint"), CASES)
def test_encodes_like_the_sdk(value: object, hint: type) -> None:
    """Byte for byte: workflows replay histories written by either."""
    assert (DATA_CONVERTER.payload_converter.to_payloads([value])
            == DataConverter.default.payload_converter.to_payloads([value]))
