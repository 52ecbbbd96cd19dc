"""Session-level conformance scenarios (fix44.md list), run against BOTH of our roles.

The ``env`` fixture gives our session logged on with a raw scripted counterparty ``env.p``; the
peer's first message after Logon is seq 2 and ours is seq 2 too.
"""

from __future__ import annotations

import asyncio

from conftest import Env
from fix_helpers import build, fields_bytes, ts, wrap

from fix.session import parse_utc_timestamp


async def test_seq_correct_delivers_and_advances(env: Env) -> None:
    assert env.session.store.next_target_seq() == 2
    await env.p.send_app("one")
    msg = await env.recorder.get()
    assert msg.get(58) == b"one"
    assert env.session.store.next_target_seq() == 3


async def test_seq_too_high_queues_and_requests_resend_once(env: Env) -> None:
    p = env.p
    await p.send_app("four", seq=4)
    rr = await p.expect("2")
    assert rr[7] == "2" and rr[16] == "0"
    await p.send_app("five", seq=5)
    await p.expect_nothing(0.1)  # one ResendRequest, not one per queued message
    await env.recorder.assert_empty()
    # gap filled by the resend: 2 and 3 (PossDup), then the queue (4, 5) is processed
    await p.send_app("two", seq=2, poss_dup=True, orig_sending_time=ts(-1))
    await p.send_app("three", seq=3, poss_dup=True, orig_sending_time=ts(-1))
    texts = [(await env.recorder.get()).get(58) for _ in range(4)]
    assert texts == [b"two", b"three", b"four", b"five"]
    assert env.session.store.next_target_seq() == 6


async def test_seq_too_low_without_possdup_logs_out(env: Env) -> None:
    await env.p.send_app("x", seq=1)
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["5"]
    assert got[0][58] == "MsgSeqNum too low, expecting 2 but received 1"
    await env.recorder.assert_empty(0)


async def test_possdup_already_received_is_ignored(env: Env) -> None:
    await env.p.send_app("two")
    await env.recorder.get()
    await env.p.send_app("two again", seq=2, poss_dup=True, orig_sending_time=ts(-1))
    await env.p.expect_nothing(0.1)
    await env.recorder.assert_empty(0)
    await env.p.send_app("three")
    assert (await env.recorder.get()).get(58) == b"three"


async def test_possdup_not_received_is_delivered(env: Env) -> None:
    await env.p.send_app("two", poss_dup=True, orig_sending_time=ts(-5))
    msg = await env.recorder.get()
    assert msg.get(43) == b"Y"
    assert env.session.store.next_target_seq() == 3


async def test_possdup_missing_orig_sending_time_is_rejected(env: Env) -> None:
    await env.p.send_app("two", poss_dup=True)
    rej = await env.p.expect("3")
    assert (rej[45], rej[373], rej[371]) == ("2", "1", "122")
    await env.recorder.assert_empty(0)
    # the rejected message consumed its number
    await env.p.send_app("three")
    assert (await env.recorder.get()).get(58) == b"three"


async def test_possdup_too_low_missing_orig_sending_time_is_rejected(env: Env) -> None:
    await env.p.send_app("two")
    await env.recorder.get()
    await env.p.send_app("dup", seq=2, poss_dup=True)
    rej = await env.p.expect("3")
    assert (rej[45], rej[373]) == ("2", "1")
    assert env.session.store.next_target_seq() == 3


async def test_possdup_orig_sending_time_too_high_rejects_and_logs_out(env: Env) -> None:
    await env.p.send_app("two", poss_dup=True, orig_sending_time=ts(+30))
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "10"
    await env.recorder.assert_empty(0)


async def test_compid_mismatch_rejects_and_logs_out(env: Env) -> None:
    await env.p.send_app("x", sender="SOMEONE")
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert got[0][373] == "9"


async def test_target_compid_mismatch_rejects_and_logs_out(env: Env) -> None:
    await env.p.send_app("x", target="NOTUS")
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert (got[0][373], got[0][371]) == ("9", "56")


async def test_sending_time_out_of_range_rejects_and_logs_out(env: Env) -> None:
    await env.p.send_app("x", sending_time=ts(-600))
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["3", "5"]
    assert (got[0][373], got[0][371]) == ("10", "52")


async def test_unexpected_begin_string_logs_out(env: Env) -> None:
    await env.p.send(build("8", 2, [(58, "x")], begin=b"FIX.4.2"))
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["5"]
    await env.recorder.assert_empty(0)


async def _assert_ignored_then_same_seq_works(env: Env, bad: bytes) -> None:
    await env.p.send(bad)
    await env.p.expect_nothing(0.1)
    await env.recorder.assert_empty(0)
    assert env.session.store.next_target_seq() == 2  # no seq consumed
    await env.p.send_app("good", seq=2)
    assert (await env.recorder.get()).get(58) == b"good"


async def test_invalid_checksum_is_ignored(env: Env) -> None:
    # corrupt the checksum of these very bytes (building the frame twice could straddle a
    # millisecond of SendingTime and land on a valid checksum by chance)
    good = build("8", 2, [(58, "bad")])
    cs = int(good[-4:-1])
    await _assert_ignored_then_same_seq_works(env, good[:-4] + b"%03d" % ((cs + 1) % 256) + good[-1:])


async def test_wrong_body_length_is_ignored(env: Env) -> None:
    body = fields_bytes([(35, "8"), (49, "PEER"), (56, "SHERWOOD"), (34, 2), (52, ts())])
    await _assert_ignored_then_same_seq_works(env, wrap(body, body_length=len(body) - 3))


async def test_body_length_too_long_does_not_stall(env: Env) -> None:
    body = fields_bytes([(35, "8"), (49, "PEER"), (56, "SHERWOOD"), (34, 2), (52, ts())])
    await _assert_ignored_then_same_seq_works(env, wrap(body, body_length=len(body) + 500))


async def test_garbled_message_is_ignored(env: Env) -> None:
    await _assert_ignored_then_same_seq_works(env, b"\x00garbage 8=FIX\x01abc\x0110=1\x01zz")


async def test_first_three_fields_out_of_order_is_ignored(env: Env) -> None:
    body = fields_bytes([(49, "PEER"), (35, "8"), (56, "SHERWOOD"), (34, 2), (52, ts())])
    await _assert_ignored_then_same_seq_works(env, wrap(body))


async def test_unparseable_field_is_ignored(env: Env) -> None:
    body = fields_bytes([(35, "8"), (49, "PEER"), (56, "SHERWOOD"), (34, 2), (52, ts())])
    await _assert_ignored_then_same_seq_works(env, wrap(body + b"abc=1\x01"))


async def test_test_request_received_answered_with_heartbeat(env: Env) -> None:
    await env.p.send_msg("1", [(112, "PING-42")])
    hb = await env.p.expect("0", skip_heartbeats=False)
    assert hb[112] == "PING-42"
    assert env.session.store.next_target_seq() == 3


async def test_reject_received_consumes_seq(env: Env) -> None:
    await env.p.send_msg("3", [(45, 1), (373, 99), (58, "whatever")])
    await env.p.send_app("after")
    assert (await env.recorder.get()).get(58) == b"after"
    await env.p.expect_nothing(0.05)  # no ResendRequest: the Reject used seq 2
    assert env.session.store.next_target_seq() == 4


async def test_admin_messages_never_reach_handler(env: Env) -> None:
    await env.p.send_msg("0")
    await env.p.send_msg("1", [(112, "x")])
    await env.p.expect("0", skip_heartbeats=False)
    await env.recorder.assert_empty(0.05)
    assert env.session.store.next_target_seq() == 4


# ------------------------------------------------------------------ resend (we answer)


async def _send_ours(env: Env, *texts: str) -> list[int]:
    return [await env.session.send(_app(t)) for t in texts]


def _app(text: str):
    from fix_helpers import app_msg

    return app_msg(text)


async def test_resend_application_only(env: Env) -> None:
    seqs = await _send_ours(env, "a", "b", "c")
    assert seqs == [2, 3, 4]
    originals = [await env.p.expect("D") for _ in seqs]
    await env.p.send_msg("2", [(7, 2), (16, 4)])
    for orig in originals:
        again = await env.p.expect("D")
        assert again.seq == orig.seq and again[11] == orig[11]
        assert again[43] == "Y" and again[122] == orig[52]
        assert parse_utc_timestamp(again[52].encode()) >= parse_utc_timestamp(orig[52].encode())
    await env.p.expect_nothing(0.05)


async def test_resend_admin_only_is_one_gap_fill(env: Env) -> None:
    # make us send three admin messages (Heartbeats answering TestRequests): our seqs 2..4
    for i in range(3):
        await env.p.send_msg("1", [(112, f"t{i}")])
        await env.p.expect("0", skip_heartbeats=False)
    await env.p.send_msg("2", [(7, 2), (16, 0)])
    gf = await env.p.expect("4")
    assert (gf.seq, gf[123], gf[36], gf[43]) == (2, "Y", "5", "Y")
    await env.p.expect_nothing(0.05)


async def test_resend_mixed_admin_and_application(env: Env) -> None:
    await _send_ours(env, "a")  # 2
    await env.p.expect("D")
    await env.p.send_msg("1", [(112, "t")])  # our Heartbeat = 3
    await env.p.expect("0", skip_heartbeats=False)
    await _send_ours(env, "b")  # 4
    await env.p.expect("D")
    await env.p.send_msg("2", [(7, 1), (16, 0)])
    got = [await env.p.recv() for _ in range(4)]
    assert [(m.type, m.seq) for m in got] == [("4", 1), ("D", 2), ("4", 3), ("D", 4)]
    assert got[0][36] == "2" and got[2][36] == "4"
    assert got[1][11] == "a" and got[3][11] == "b"


async def test_simultaneous_resend_requests(env: Env) -> None:
    await _send_ours(env, "a")  # ours 2
    await env.p.expect("D")
    # peer has a gap too: its ResendRequest arrives with seq 4 (we expect 2)
    await env.p.send_msg("2", [(7, 2), (16, 0)], seq=4)
    got = [await env.p.recv() for _ in range(2)]
    kinds = {(m.type, m.seq) for m in got}
    assert ("D", 2) in kinds  # the resend, answered despite our own gap
    rr = next(m for m in got if m.type == "2")
    assert (rr[7], rr[16]) == ("2", "0")
    assert got[[m.type for m in got].index("D")][43] == "Y"
    # peer fills our gap: 2, 3 gap-filled; its queued ResendRequest (4) is then consumed
    await env.p.send_msg("4", [(123, "Y"), (36, 4)], seq=2, poss_dup=True,
                         orig_sending_time=ts(-1))
    await env.p.send_app("five", seq=5)
    assert (await env.recorder.get()).get(58) == b"five"
    assert env.session.store.next_target_seq() == 6


async def test_message_sent_while_disconnected_reaches_peer_via_resend(env: Env) -> None:
    await env.p.send_msg("5", [(58, "bye")])
    await env.p.expect("5")
    await env.p.expect_eof()
    await asyncio.sleep(0.02)
    # (an initiator may already have re-dialled and sent its Logon: not logged on is enough)
    seq = await env.session.send(_app("offline"))
    assert seq >= 3  # our Logout was 2
    await env.p.close()
    peer, ours = await env.logon(peer_seq=3)
    assert ours.seq != seq
    await peer.send_msg("2", [(7, seq), (16, 0)])
    again = await peer.expect("D")
    assert again.seq == seq and again[11] == "offline" and again[43] == "Y"


# ------------------------------------------------------------------ gap fill / sequence reset


async def test_gap_fill_msgseqnum_equal_new_seq_greater(env: Env) -> None:
    await env.p.send_msg("4", [(123, "Y"), (36, 10)], poss_dup=True, orig_sending_time=ts(-1))
    env.p.next_seq = 10
    await env.p.send_app("ten")
    assert (await env.recorder.get()).get(58) == b"ten"
    await env.p.expect_nothing(0.05)


async def test_gap_fill_msgseqnum_greater_queues_and_requests_resend(env: Env) -> None:
    await env.p.send_msg("4", [(123, "Y"), (36, 10)], seq=5, poss_dup=True,
                         orig_sending_time=ts(-1))
    rr = await env.p.expect("2")
    assert rr[7] == "2"
    await env.p.send_msg("4", [(123, "Y"), (36, 5)], seq=2, poss_dup=True,
                         orig_sending_time=ts(-1))
    await asyncio.sleep(0.05)
    assert env.session.store.next_target_seq() == 10  # queued gap fill applied after the gap


async def test_gap_fill_msgseqnum_less_with_possdup_ignored(env: Env) -> None:
    await env.p.send_app("two")
    await env.recorder.get()
    await env.p.send_msg("4", [(123, "Y"), (36, 10)], seq=2, poss_dup=True,
                         orig_sending_time=ts(-1))
    await env.p.expect_nothing(0.05)
    assert env.session.store.next_target_seq() == 3


async def test_gap_fill_msgseqnum_less_without_possdup_logs_out(env: Env) -> None:
    await env.p.send_app("two")
    await env.recorder.get()
    await env.p.send_msg("4", [(123, "Y"), (36, 10)], seq=2)
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["5"] and "too low" in got[0][58]


async def test_gap_fill_new_seq_not_above_msgseqnum_rejected(env: Env) -> None:
    await env.p.send_msg("4", [(123, "Y"), (36, 2)], poss_dup=True, orig_sending_time=ts(-1))
    rej = await env.p.expect("3")
    assert (rej[373], rej[371]) == ("5", "36")


async def test_sequence_reset_greater(env: Env) -> None:
    # reset mode: no sequence check on the SequenceReset itself
    await env.p.send_msg("4", [(36, 20)], seq=99)
    await asyncio.sleep(0.05)
    assert env.session.store.next_target_seq() == 20
    await env.p.send_app("twenty", seq=20)
    assert (await env.recorder.get()).get(58) == b"twenty"


async def test_sequence_reset_equal_is_noop(env: Env) -> None:
    await env.p.send_msg("4", [(36, 2)], seq=2)
    await env.p.expect_nothing(0.05)
    assert env.session.store.next_target_seq() == 2


async def test_sequence_reset_less_rejected(env: Env) -> None:
    await env.p.send_app("two")
    await env.p.send_app("three")
    await env.recorder.get()
    await env.recorder.get()
    await env.p.send_msg("4", [(36, 2)], seq=4)
    rej = await env.p.expect("3")
    assert (rej[373], rej[45]) == ("5", "4")
    assert env.session.store.next_target_seq() == 4


async def test_sequence_reset_processes_queue(env: Env) -> None:
    await env.p.send_app("seven", seq=7)
    await env.p.expect("2")
    await env.p.send_msg("4", [(36, 7)], seq=2)
    assert (await env.recorder.get()).get(58) == b"seven"


# ------------------------------------------------------------------ logout / handler failure


async def test_unsolicited_logout_answered_and_disconnected(env: Env) -> None:
    await env.p.send_msg("5", [(58, "bye")])
    got = await env.p.expect_eof()
    assert [m.type for m in got] == ["5"]
    await asyncio.sleep(0.02)
    assert not env.session.logged_on.is_set()
    assert env.session.store.next_target_seq() == 3


async def test_our_logout_waits_for_reply(env: Env) -> None:
    task = asyncio.create_task(env.session.logout("done"))
    lo = await env.p.expect("5")
    assert lo[58] == "done"
    await env.p.send_msg("5")
    await asyncio.wait_for(task, 2)
    await env.p.expect_eof()
    assert not env.session.connected


async def test_handler_raises_message_redelivered_after_reconnect(env: Env) -> None:
    env.recorder.fail_next = 1
    await env.p.send_app("precious")
    await env.p.expect_eof()  # connection dropped, no Logout
    assert env.session.store.next_target_seq() == 2
    await env.p.close()
    peer, _ = await env.logon(peer_seq=3)
    rr = await peer.expect("2")
    assert rr[7] == "2"
    await peer.send_app("precious", seq=2, poss_dup=True, orig_sending_time=ts(-1))
    msg = await env.recorder.get()
    assert msg.get(58) == b"precious" and msg.get(43) == b"Y"
    assert env.session.store.next_target_seq() == 4  # 2 (app) + 3 (Logon) processed
