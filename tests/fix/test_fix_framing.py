"""Framing: whole verified frames out, garbage dropped, never stuck (unit + hypothesis)."""

from __future__ import annotations

import pytest
from fix_helpers import build, fields_bytes, ts, wrap
from hypothesis import given, settings
from hypothesis import strategies as st

from fix.errors import GarbledMessageError
from fix.framing import FrameBuffer, encode, parse_frame


def drain(fb: FrameBuffer) -> tuple[list[bytes], int]:
    frames: list[bytes] = []
    garbled = 0
    for _ in range(10_000):  # bounded: next_frame must make progress
        try:
            f = fb.next_frame()
        except GarbledMessageError:
            garbled += 1
            continue
        if f is None:
            return frames, garbled
        frames.append(f)
    raise AssertionError("FrameBuffer does not make progress")


F1 = build("0", 1, sending_time="20240101-00:00:00.000")
F2 = build("8", 2, [(58, "x" * 40)], sending_time="20240101-00:00:00.000")


def test_byte_by_byte() -> None:
    fb = FrameBuffer()
    out = []
    for b in F1 + F2:
        fb.feed(bytes([b]))
        out += drain(fb)[0]
    assert out == [F1, F2]


def test_encode_matches_independent_builder() -> None:
    pairs = [(b"35", b"0"), (b"49", b"PEER"), (b"56", b"SHERWOOD"), (b"34", b"1"),
             (b"52", b"20240101-00:00:00.000")]
    assert encode(pairs) == F1
    assert parse_frame(F1).get(34) == b"1"


@pytest.mark.parametrize(
    "bad",
    [
        build("0", 1, checksum=0),
        wrap(fields_bytes([(35, "0"), (34, 1)]), body_length=3),
        wrap(fields_bytes([(49, "X"), (35, "0")])),  # MsgType not third
        b"8=FIX.4.4\x01garbage\x01",
        b"8=FIX.4.4\x019=abc\x01",
        b"\x00\xff random \x01\x01",
        b"8=FIX",  # a torn BeginString glued to the next message
        b"8=FIX.4.4\x019=",
        wrap(fields_bytes([(35, "0"), (34, 1)]), body_length=999_999_999),
    ],
    # ids that do not hold the clock (the first case's SendingTime): every collection the same
    ids=["bad_checksum", "short_body_length", "msg_type_not_third", "garbage_field",
         "body_length_not_a_number", "binary", "torn_begin_string", "torn_body_length",
         "huge_body_length"],
)
def test_garbage_then_valid_frame(bad: bytes) -> None:
    fb = FrameBuffer()
    fb.feed(bad + F1)
    frames, garbled = drain(fb)
    assert frames == [F1] and garbled >= 1


def test_huge_body_length_followed_by_valid_frame_is_not_waited_for() -> None:
    body = fields_bytes([(35, "8"), (34, 2), (52, ts())])
    fb = FrameBuffer()
    fb.feed(wrap(body, body_length=5000) + F1)
    assert drain(fb)[0] == [F1]


FIXISH = st.sampled_from([
    b"8=FIX.4.4\x01", b"8=FIX.4.4\x019=", b"8=FIX8=FIX.4.4\x01", b"9=", b"10=", b"\x01",
    b"35=", b"8=FIX", b"=", b"0", b"9", b"123", b"10=000\x01", b"9=65\x01", F1, F1[:20], F1[20:],
])
JUNK = st.lists(st.one_of(st.binary(max_size=40), FIXISH), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(junk=JUNK, cuts=st.lists(st.integers(0, 400), max_size=5))
def test_fuzz_junk_never_sticks(junk: bytes, cuts: list[int]) -> None:
    data = junk + F1 + F2
    fb = FrameBuffer()
    frames: list[bytes] = []
    prev = 0
    for c in [*sorted(cuts), len(data)]:
        fb.feed(data[prev:c] if c > prev else b"")
        prev = max(prev, c)
        frames += drain(fb)[0]
    assert F2 in frames
    for f in frames:
        try:
            parse_frame(f)
        except GarbledMessageError:  # the only error a verified frame may still produce
            pass


FIELD = st.tuples(
    st.sampled_from([b"1", b"10", b"35", b"58", b"95", b"96", b"034", b"x", b""]),
    st.sampled_from([b"", b"=", b"v", b"1.5", b"a=b", b"\x02"]),
)


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(FIELD, max_size=6))
def test_fast_parse_agrees_with_simplefix(fields: list[tuple[bytes, bytes]]) -> None:
    from fix.framing import _simplefix_parse

    body = b"35=8\x01" + b"".join(t + b"=" + v + b"\x01" for t, v in fields)
    frame = wrap(body)
    try:
        expected = _simplefix_parse(frame)
    except GarbledMessageError:
        expected = None
    try:
        got = parse_frame(frame)
    except GarbledMessageError:
        got = None
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.pairs, got.begin_string, got.message_type) == (
            expected.pairs, expected.begin_string, expected.message_type)
