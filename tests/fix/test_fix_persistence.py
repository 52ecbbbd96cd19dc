"""Stores, and persistence of a whole session (both sides ours) across restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import simplefix
from fix_helpers import Recorder, app_msg

from fix.session import FixAcceptor, FixInitiator, FixSession, SessionConfig
from fix.store import MemorySessionStore, SessionStore, SqliteSessionStore

StoreFactory = Callable[[], SessionStore]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "memory":
        return MemorySessionStore
    return lambda: SqliteSessionStore(tmp_path / "s.db")


def test_store_contract(new_store: StoreFactory) -> None:
    s = new_store()
    assert isinstance(s, SessionStore)
    assert (s.next_sender_seq(), s.next_target_seq()) == (1, 1)
    s.store_sent(1, b"one")
    s.store_sent(2, b"two")
    s.store_sent(5, b"five")
    assert s.next_sender_seq() == 6
    s.set_next_target_seq(9)
    assert s.next_target_seq() == 9
    assert s.get_sent(2, 5) == [(2, b"two"), (5, b"five")]
    assert s.get_sent(6, 10) == []
    s.reset()
    assert (s.next_sender_seq(), s.next_target_seq(), s.get_sent(1, 100)) == (1, 1, [])


def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    s = SqliteSessionStore(tmp_path / "a.db")
    s.store_sent(1, b"\x01binary\x00")
    s.set_next_target_seq(4)
    s.close()
    s2 = SqliteSessionStore(tmp_path / "a.db")
    assert (s2.next_sender_seq(), s2.next_target_seq()) == (2, 4)
    assert s2.get_sent(1, 1) == [(1, b"\x01binary\x00")]
    s2.close()


def test_sqlite_store_survives_process_kill(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    code = (
        "import os, signal; from pathlib import Path; from fix.store import SqliteSessionStore\n"
        f"s = SqliteSessionStore(Path({str(db)!r}))\n"
        "for i in range(1, 51): s.store_sent(i, b'm%d' % i)\n"
        "s.set_next_target_seq(7)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, timeout=30)
    assert proc.returncode == -9, proc.stderr
    s = SqliteSessionStore(db)
    assert (s.next_sender_seq(), s.next_target_seq()) == (51, 7)
    assert s.get_sent(50, 50) == [(50, b"m50")]
    s.close()


class Pair:
    """Our initiator ("GW") and our acceptor ("MM") on SQLite files that outlive the objects."""

    def __init__(self, tmp: Path, acc_handler: Recorder, ini_handler: Recorder) -> None:
        self.ini_store = SqliteSessionStore(tmp / "gw.db")
        self.acc_store = SqliteSessionStore(tmp / "mm.db")
        ini_cfg = SessionConfig("GW", "MM", heartbeat_interval=5, reconnect_min_delay=0.02,
                                reconnect_max_delay=0.1)
        acc_cfg = SessionConfig("MM", "GW", heartbeat_interval=5)
        self.acceptor = FixAcceptor("127.0.0.1", 0, {"GW": (acc_cfg, self.acc_store)},
                                    acc_handler)
        self.ini_cfg = ini_cfg
        self.ini_handler = ini_handler
        self.initiator: FixInitiator | None = None

    async def start_acceptor(self, port: int = 0) -> None:
        self.acceptor.port = port
        await self.acceptor.start()

    async def start_initiator(self) -> FixSession:
        self.initiator = FixInitiator(self.ini_cfg, self.ini_store, "127.0.0.1",
                                      self.acceptor.port, self.ini_handler)
        await self.initiator.start()
        return self.initiator.session

    async def stop(self) -> None:
        if self.initiator is not None:
            await self.initiator.stop()
        await self.acceptor.stop()
        self.ini_store.close()
        self.acc_store.close()


async def test_persistence_across_restart(tmp_path: Path) -> None:
    acc_rec, ini_rec = Recorder(), Recorder()
    pair = Pair(tmp_path, acc_rec, ini_rec)
    await pair.start_acceptor()
    port = pair.acceptor.port
    gw = await pair.start_initiator()
    await gw.wait_logged_on(2)
    for i in range(3):
        await gw.send(app_msg(f"order-{i}"))
    mm = pair.acceptor.session("GW")
    for i in range(3):
        assert (await acc_rec.get()).get(11) == f"order-{i}".encode()
        await mm.send(app_msg(f"exec-{i}", "8"))
        assert (await ini_rec.get()).get(11) == f"exec-{i}".encode()
    await pair.stop()
    before = (pair.ini_store.next_sender_seq(), pair.ini_store.next_target_seq(),
              pair.acc_store.next_sender_seq(), pair.acc_store.next_target_seq())
    # Logon + 3 + Logout each way (the acceptor's Logout answers ours)
    assert before == (6, 6, 6, 6)

    # --- restart: new objects over the same files; the gateway comes back first
    acc_rec2, ini_rec2 = Recorder(), Recorder()
    pair2 = Pair(tmp_path, acc_rec2, ini_rec2)
    assert (pair2.ini_store.next_sender_seq(), pair2.acc_store.next_target_seq()) == (6, 6)
    pair2.acceptor.port = port
    gw2 = await pair2.start_initiator()  # dials a closed port and backs off
    offline_seq = await gw2.send(app_msg("while-down"))
    assert offline_seq == 6
    await asyncio.sleep(0.1)
    await pair2.start_acceptor(port)
    try:
        got = await acc_rec2.get(timeout=5)
        # delivered through the acceptor's ResendRequest, as a PossDup retransmission
        assert got.get(11) == b"while-down" and got.get(43) == b"Y"
        assert got.get(34) == b"6"
        await gw2.send(app_msg("after"))
        assert (await acc_rec2.get()).get(11) == b"after"
        mm2 = pair2.acceptor.session("GW")
        await mm2.send(app_msg("exec-after", "8"))
        assert (await ini_rec2.get()).get(34) == b"8"  # 6: its Logon reply, 7: ResendRequest
    finally:
        await pair2.stop()


async def test_handler_failure_redelivers_after_reconnect(tmp_path: Path) -> None:
    acc_rec, ini_rec = Recorder(), Recorder()
    pair = Pair(tmp_path, acc_rec, ini_rec)
    await pair.start_acceptor()
    gw = await pair.start_initiator()
    await gw.wait_logged_on(2)
    acc_rec.fail_next = 1
    await gw.send(app_msg("precious"))
    got = await acc_rec.get(timeout=5)
    assert got.get(11) == b"precious" and got.get(43) == b"Y"
    assert [m.get(11) for m in acc_rec.seen] == [b"precious"]
    await gw.send(app_msg("next"))
    assert (await acc_rec.get()).get(11) == b"next"
    await pair.stop()


async def test_send_persists_before_write(tmp_path: Path) -> None:
    """The stored copy exists even when the write never happens (not connected)."""
    store = SqliteSessionStore(tmp_path / "x.db")

    async def on_message(s: FixSession, m: simplefix.FixMessage) -> None:
        return None

    session = FixSession(SessionConfig("A", "B"), store, on_message, initiator=True)
    seq = await session.send(app_msg("kept"))
    assert seq == 1 and store.next_sender_seq() == 2
    (_stored_seq, raw), = store.get_sent(1, 1)
    assert b"\x0111=kept\x01" in raw and b"\x0134=1\x01" in raw
    store.close()
