"""Durable per-session state: the two sequence numbers and every message we sent.

One FIX session spans many TCP connections until a sequence reset, so both numbers and the sent
messages (needed to answer ResendRequests) must survive process restarts. The session calls
:meth:`SessionStore.store_sent` BEFORE the bytes are written to the socket: if we crash after the
write, the peer's view ("I received N") is never ahead of ours.

The store deliberately knows nothing about FIX: it keeps opaque raw bytes per sequence number.
It is synchronous: calls are short (one SQLite transaction) and running them on the event loop
keeps "allocate seq, persist, write" atomic with respect to other coroutines.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from fix.errors import StoreError


@runtime_checkable
class SessionStore(Protocol):
    """Durable state of one FIX session."""

    def next_sender_seq(self) -> int:
        """MsgSeqNum our next outgoing message will carry."""
        ...

    def next_target_seq(self) -> int:
        """MsgSeqNum we expect on the next inbound message."""
        ...

    def set_next_target_seq(self, n: int) -> None:
        """Durably record that inbound messages up to ``n - 1`` are processed."""
        ...

    def store_sent(self, seq: int, raw: bytes) -> None:
        """Durably keep ``raw`` under ``seq`` and advance next_sender_seq to ``seq + 1``.

        Both effects happen atomically.
        """
        ...

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored messages with ``begin <= seq <= end``, ascending. Missing numbers are skipped."""
        ...

    def reset(self) -> None:
        """Both sequence numbers back to 1; all stored messages dropped."""
        ...


@runtime_checkable
class StagingStore(SessionStore, Protocol):
    """A store that commits sent messages in groups (one fsync for all of them): the session
    stages each message as it is numbered, and a commit makes everything staged so far durable.
    The session writes a message to the wire only once a commit covering it returned
    (``fix.outbound.GroupCommit``)."""

    def stage_sent(self, seq: int, raw: bytes) -> None:
        """Keep ``raw`` under ``seq`` for the next commit and advance next_sender_seq to
        ``seq + 1`` (in memory: nothing is durable yet). Never blocks on a commit in progress."""
        ...

    def commit_staged(self) -> int:
        """Durably store every message staged so far, in one transaction; returns the highest
        MsgSeqNum durable (every staged one up to it). Callable from another thread. Raises
        StoreError when the commit fails: then every staged message is dropped and
        next_sender_seq goes back to the first of them."""
        ...


class MemorySessionStore:
    """In-process store for tests and benchmarks; loses everything with the process."""

    def __init__(self) -> None:
        self._next_sender = 1
        self._next_target = 1
        self._sent: dict[int, bytes] = {}

    def next_sender_seq(self) -> int:
        return self._next_sender

    def next_target_seq(self) -> int:
        return self._next_target

    def set_next_target_seq(self, n: int) -> None:
        self._next_target = n

    def store_sent(self, seq: int, raw: bytes) -> None:
        self._sent[seq] = raw
        self._next_sender = seq + 1

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return [(s, self._sent[s]) for s in range(begin, end + 1) if s in self._sent]

    def reset(self) -> None:
        self._next_sender = 1
        self._next_target = 1
        self._sent.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS fix_session (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_sender_seq INTEGER NOT NULL,
    next_target_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO fix_session (id, next_sender_seq, next_target_seq) VALUES (1, 1, 1);
CREATE TABLE IF NOT EXISTS fix_sent (
    seq INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);
"""


class SqliteSessionStore:
    """Store in one SQLite file (stdlib ``sqlite3``), WAL journal.

    Every mutating call is its own committed transaction, so a process kill at any point leaves
    either the old or the new state. Sent messages are committed with ``synchronous=FULL`` (an
    fsync per commit: a sequence number once on the wire is never handed out again, even after
    an OS crash); a commit takes every message staged before it (:class:`StagingStore`: the
    session's application messages are committed off the event loop, several per fsync when
    they come together). The inbound number is committed with ``synchronous=NORMAL`` on a second connection:
    it survives a process kill, and what an OS crash could lose is only that some messages
    already processed are expected again, which the peer resends as PossDup and the application
    drops by ExecID; it never skips a message. That saves an fsync per inbound message, which
    would otherwise block the event loop (~0.3 ms each here). Sequence numbers are cached in
    memory after opening (this object must be the only writer of the file). One file holds
    exactly one session.
    Not thread-safe beyond a coarse lock; meant to be used from one event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the database: one transaction at a time
        self._stage_lock = threading.Lock()  # the staged list and the sender number, held briefly
        self._staged: list[tuple[int, bytes]] = []
        try:
            # autocommit mode: we issue BEGIN/COMMIT ourselves so each call is one transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._relaxed = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._relaxed.execute("PRAGMA synchronous=NORMAL")
            row = self._db.execute(
                "SELECT next_sender_seq, next_target_seq FROM fix_session WHERE id = 1"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open FIX session store {self.path}: {exc}") from exc
        self._next_sender, self._next_target = int(row[0]), int(row[1])
        self._durable = self._next_sender - 1

    def next_sender_seq(self) -> int:
        return self._next_sender

    def next_target_seq(self) -> int:
        return self._next_target

    def set_next_target_seq(self, n: int) -> None:
        with self._lock:
            self._relaxed.execute("UPDATE fix_session SET next_target_seq = ? WHERE id = 1", (n,))
            self._next_target = n

    def store_sent(self, seq: int, raw: bytes) -> None:
        self.stage_sent(seq, raw)
        self.commit_staged()

    def stage_sent(self, seq: int, raw: bytes) -> None:
        with self._stage_lock:
            self._staged.append((seq, raw))
            self._next_sender = seq + 1

    def commit_staged(self) -> int:
        # The database lock first, then the batch: whoever commits takes everything staged
        # before it, so that commits are in MsgSeqNum order (a commit that returns N means
        # every message up to N is durable).
        with self._lock:
            with self._stage_lock:
                batch, self._staged = self._staged, []
            if not batch:
                return self._durable
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO fix_sent (seq, raw) VALUES (?, ?)", batch)
                    self._db.execute(
                        "UPDATE fix_session SET next_sender_seq = ? WHERE id = 1",
                        (batch[-1][0] + 1,))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                with self._stage_lock:  # nothing staged after them may go out either
                    self._staged.clear()
                    self._next_sender = batch[0][0]
                raise StoreError(f"cannot store sent messages in {self.path}: {exc}") from exc
            self._durable = batch[-1][0]
            return self._durable

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, raw FROM fix_sent WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (begin, end),
            ).fetchall()
        return [(int(s), bytes(r)) for s, r in rows]

    def reset(self) -> None:
        with self._lock:
            with self._stage_lock:
                self._staged.clear()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM fix_sent")
                self._db.execute(
                    "UPDATE fix_session SET next_sender_seq = 1, next_target_seq = 1 WHERE id = 1"
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next_sender = 1
            self._next_target = 1
            self._durable = 0

    def close(self) -> None:
        """Close the database file (addition to the protocol; safe to call twice)."""
        with self._lock:
            self._relaxed.close()
            self._db.close()
