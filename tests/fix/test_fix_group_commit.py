"""Group commit of sent messages (fix/outbound.py, SqliteSessionStore staging): a message reaches
the wire only after a commit covering it returned; messages sent while a commit runs share the
next one; the wire order stays the MsgSeqNum order when a session message is sent meanwhile."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from fix_helpers import Recorder, app_msg

from fix.errors import StoreError
from fix.session import FixAcceptor, FixInitiator, FixSession, SessionConfig
from fix.store import SqliteSessionStore, StagingStore


class GatedStore(SqliteSessionStore):
    """Commits wait for ``gate``; what became durable is logged in ``events``."""

    def __init__(self, path: Path, events: list[tuple[str, int]]) -> None:
        super().__init__(path)
        self.events = events
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[int] = []  # messages per commit that stored any

    def commit_staged(self) -> int:
        assert self.gate.wait(10)
        before = self._durable
        upto = super().commit_staged()
        if upto > before:
            self.batches.append(upto - before)
            self.events.append(("durable", upto))
        return upto


class Logged(Recorder):
    def __init__(self, events: list[tuple[str, int]]) -> None:
        super().__init__()
        self.events = events

    async def __call__(self, session: FixSession, msg) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("received", int(msg.get(34))))
        await super().__call__(session, msg)


@pytest.fixture
async def pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    events: list[tuple[str, int]] = []
    store = GatedStore(tmp_path / "gw.db", events)
    acc_store = SqliteSessionStore(tmp_path / "mm.db")
    received = Logged(events)
    acceptor = FixAcceptor("127.0.0.1", 0, {"GW": (SessionConfig("MM", "GW", heartbeat_interval=30),
                                                   acc_store)}, received)
    await acceptor.start()
    initiator = FixInitiator(SessionConfig("GW", "MM", heartbeat_interval=30), store, "127.0.0.1",
                             acceptor.port, Recorder())
    await initiator.start()
    await initiator.session.wait_logged_on(5)
    try:
        yield initiator.session, store, acc_store, received, events
    finally:
        store.gate.set()
        await initiator.stop()
        await acceptor.stop()
        store.close()
        acc_store.close()


async def test_messages_sent_during_a_commit_share_the_next_and_none_is_written_before_it(
    pair,  # type: ignore[no-untyped-def]
) -> None:
    gw, store, _acc_store, received, events = pair
    assert isinstance(store, StagingStore)
    first = store.next_sender_seq()
    store.gate.clear()  # the commit in the thread waits
    sends = [asyncio.create_task(gw.send(app_msg(f"order-{i}"))) for i in range(5)]
    while store.next_sender_seq() < first + 5:  # all five numbered and staged
        await asyncio.sleep(0)
    # nothing of them is durable, so nothing was released to the wire
    assert store.get_sent(first, first + 4) == []
    assert gw._group is not None and gw._group.released < first
    assert not any(t.done() for t in sends)
    n_batches = len(store.batches)
    store.gate.set()
    assert sorted(await asyncio.gather(*sends)) == list(range(first, first + 5))
    assert store.batches[n_batches:] == [5]  # one commit (one fsync) for the five
    for _ in range(5):
        await received.get(timeout=5)
    # every message the peer got had been made durable before
    for i, (what, seq) in enumerate(events):
        if what == "received":
            assert any(w == "durable" and upto >= seq for w, upto in events[:i]), events


async def test_a_session_message_during_a_commit_keeps_the_wire_in_order(pair) -> None:  # type: ignore[no-untyped-def]
    gw, store, acc_store, received, _events = pair
    first = store.next_sender_seq()
    store.gate.clear()
    order = asyncio.create_task(gw.send(app_msg("order")))
    while store.next_sender_seq() == first:
        await asyncio.sleep(0)
    # a Heartbeat now: committed on the loop, which waits for the gate (opened from a thread)
    threading.Timer(0.2, store.gate.set).start()
    hb = gw._send_admin(b"0", [])
    assert (await order, hb) == (first, first + 1)
    assert (await received.get(timeout=5)).get(11) == b"order"

    async def caught_up() -> bool:
        return acc_store.next_target_seq() == first + 2

    for _ in range(200):
        if await caught_up():
            break
        await asyncio.sleep(0.01)
    assert await caught_up()
    # the peer saw no gap: it never asked for a resend
    sent_types = [raw.split(b"\x0135=", 1)[1][:1] for _, raw in acc_store.get_sent(1, 10_000)]
    assert b"2" not in sent_types


def test_a_failed_commit_gives_the_numbers_back(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    store.stage_sent(1, b"one")
    store.stage_sent(2, b"two")
    assert store.next_sender_seq() == 3 and store.get_sent(1, 2) == []
    assert store.commit_staged() == 2 and store.commit_staged() == 2
    assert store.get_sent(1, 2) == [(1, b"one"), (2, b"two")]
    store.stage_sent(3, b"three")
    store.stage_sent(4, b"four")
    store._db.close()  # the disk goes away
    with pytest.raises(StoreError):
        store.commit_staged()
    assert store.next_sender_seq() == 3  # never on the wire: the numbers are handed out again
