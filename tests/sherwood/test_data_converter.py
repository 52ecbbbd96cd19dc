"""Sherwood's data converter encodes and decodes exactly what the SDK's default converter does."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from temporalio.converter import DataConverter

from activities.orders import ApplyReportsInput
from domain.execution import RouteFacts, VenueAck, VenueEvent, VenueEventKind, VenueStatus
from domain.orders import OrderSnapshot, OrderTimeouts, PlaceOrderInput
from fix.messages import ExecReport
from sherwood.temporal import DATA_CONVERTER


@dataclass
class _WithLateField:
    a: str
    nested: list[OrderSnapshot] = field(default_factory=list)
    late: str = field(default="x", init=False)


def _report(exec_id: str) -> VenueEvent:
    return VenueEvent(venue="v", exec_id=exec_id, order_id="o", kind=VenueEventKind.FILL,
                      status=VenueStatus.FILLED, cl_ord_id="c", last_qty="1", last_px="12.31")


ROUTE = RouteFacts(venue="v", route_order_id="o", order_type="limit", side="buy",
                   routed_at="2026-03-02T15:00:00+00:00", limit_price="12.40", bid="12.30",
                   ask="12.32", quote_age_ms=12, since_routed_ms=3)

SNAP = OrderSnapshot(order_id="o", account_id="a", client_order_id="c", state="FILLED",
                     symbol="F", side="buy", qty="10", filled_qty="10", filled_avg_price="12.31")
@dataclass
class _Plain:
    """Fields taken as JSON gives them (str, int, bool, optional ones) beside converted ones."""

    n: int
    flag: bool
    s: str | None
    f: float
    opt_n: int | None = None
    opt_flag: bool | None = None
    kind: VenueEventKind | None = None
    tags: list[str] = field(default_factory=list)


LATE = _WithLateField(a="1", nested=[SNAP])
LATE.late = "set"

CASES = [
    (SNAP, OrderSnapshot),
    (ApplyReportsInput(order_id="o", reports=[_report("1"), _report("2")], routed_venue="v"),
     ApplyReportsInput),
    (VenueAck(venue="v", cl_ord_id="o", reports=[_report("3")]), VenueAck),
    # a fill carrying its route (the gateway attaches it; the shard stores it)
    (VenueAck(venue="v", cl_ord_id="o", reports=[dataclasses.replace(_report("4"), route=ROUTE)]),
     VenueAck),
    (PlaceOrderInput(order_id="o", account_id="a", shard=1, request={"qty": "1"},
                     request_hash="h", timeouts=OrderTimeouts(ack_s=1.5), snapshot=SNAP), PlaceOrderInput),
    (LATE, _WithLateField),
    (_Plain(n=3, flag=True, s=None, f=1.0, opt_n=0, opt_flag=False, kind=VenueEventKind.FILL,
            tags=["a"]), _Plain),
    (_Plain(n=0, flag=False, s="x", f=2.5), _Plain),
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


def test_venue_events_recorded_before_they_existed_decode_to_what_they_mean() -> None:
    """A history or signal written when the payload was the FIX-coded ExecutionReportSignal:
    decoded as a VenueEvent, alone or inside another payload, it means the same."""
    legacy = ExecReport(venue="MM1", exec_id="E7", msg_type="8", cl_ord_id="o:X1", order_id="o",
                        exec_type="4", ord_status="4", cum_qty="2", leaves_qty="0",
                        transact_time="20261126-15:00:01.250", poss_dup=True)
    conv = DATA_CONVERTER.payload_converter
    event = conv.from_payloads(conv.to_payloads([legacy]), [VenueEvent])[0]
    assert event == VenueEvent(
        venue="MM1", exec_id="E7", order_id="o", kind=VenueEventKind.CANCELED,
        status=VenueStatus.CANCELED, cl_ord_id="o:X1", cum_qty="2", leaves_qty="0",
        transact_time="2026-11-26T15:00:01.250000+00:00", redelivered=True)
    assert event.at_close and event.final
    ack = conv.from_payloads(conv.to_payloads([{"venue": "MM1", "cl_ord_id": "o",
                                                 "reports": [legacy.__dict__]}]), [VenueAck])[0]
    assert ack.reports == [event]


def test_an_event_from_before_routes_decodes_without_one() -> None:
    conv = DATA_CONVERTER.payload_converter
    old = {k: v for k, v in _report("5").__dict__.items() if k != "route"}
    got = conv.from_payloads(conv.to_payloads([old]), [VenueEvent])[0]
    assert got == _report("5") and got.route is None


@dataclass
class _HintNotResolvable:
    """A field whose annotation names a type its module does not hold. Seen once in CI: a
    withdrawal's fail_unstarted_transfer input failed to encode with "name 'TransferInput' is
    not defined" (likely a workflow sandbox's half-imported copy of its module), and the
    transfer answered 504 instead of ending FAILED."""

    transfer: NotDefinedHere  # type: ignore[name-defined]  # noqa: F821
    reason: str = "r"


def test_encoding_needs_only_the_fields_not_their_type_hints() -> None:
    value = _HintNotResolvable(transfer={"id": "t"}, reason="a bug")
    sdk = DataConverter.default.payload_converter.to_payloads([value])
    assert DATA_CONVERTER.payload_converter.to_payloads([value]) == sdk
