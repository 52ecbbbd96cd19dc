"""Group commit of a FIX session's outgoing messages (a :class:`fix.store.StagingStore`).

Every outgoing message is numbered and staged at once, in MsgSeqNum order, and queued here with
the connection it is for (None: not to be written, e.g. not logged on: the peer gets it through
a ResendRequest). A commit makes everything staged so far durable -- one fsync for all of them
-- and only then are the queued messages it covers released: written to their connection, in
order, if it is still the session's and open. So a message never reaches the wire before its
store write is durable, and the wire order is the MsgSeqNum order, whoever commits.

Application messages (:meth:`GroupCommit.send`) are committed off the event loop, in a thread:
while one commit runs, later messages are staged and go with the next one. Session messages
(Logon, Heartbeat, Reject, ...) are committed on the loop at once (:meth:`GroupCommit.commit_now`,
as before), taking with them whatever is staged. Deliberately no waiting to fill a group: a
commit starts as soon as there is something to commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fix.store import StagingStore
from fix.transport import Connection

log = logging.getLogger("fix.session")


@dataclass
class _Out:
    seq: int
    raw: bytes
    conn: Connection | None  # where to write it once durable (None: nowhere)
    done: asyncio.Future[int] | None  # set once durable (and written, if it was to be)


class GroupCommit:
    """The queue of staged, not yet released messages of one session (see the module doc)."""

    def __init__(self, store: StagingStore, write: Callable[[Connection, bytes], None],
                 current: Callable[[], Connection | None]) -> None:
        self.store = store
        self._write = write  # writes to a connection (the session counts it as sent)
        self._current = current  # the session's connection now
        self._queue: deque[_Out] = deque()
        # every message up to this number is durable and released (written or not)
        self.released = store.next_sender_seq() - 1
        self._epoch = 0  # a reset renumbers from 1: a commit begun before it says nothing
        self._flusher: asyncio.Task[None] | None = None

    def stage(self, seq: int, raw: bytes, conn: Connection | None, *, wait: bool) -> _Out:
        """Stage ``raw`` under ``seq`` (the next number) for ``conn``; ``wait``: with a future
        that :meth:`send` awaits."""
        self.store.stage_sent(seq, raw)
        out = _Out(seq, raw, conn, asyncio.get_running_loop().create_future() if wait else None)
        self._queue.append(out)
        return out

    async def send(self, out: _Out) -> int:
        """Until ``out`` (staged with ``wait``) is durable and written; its MsgSeqNum. Raises the
        store's error when its commit failed (nothing of it was written)."""
        assert out.done is not None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="fix-group-commit")
        # shielded: a cancelled sender does not unsend a message already numbered and staged
        return await asyncio.shield(out.done)

    def commit_now(self) -> None:
        """Commit everything staged, on the loop, and release it (session messages; before a
        resend or a reset). Waits for a commit in progress in the thread, if any."""
        self._released_upto(self._commit(self.store.commit_staged))

    def reset(self) -> None:
        """Before the store renumbers from 1: release what is staged (committed first)."""
        self.commit_now()
        self._epoch += 1
        self.released = 0

    async def _flush(self) -> None:
        while self._queue and self._queue[-1].seq > self.released:
            epoch = self._epoch
            try:
                upto = await asyncio.to_thread(self.store.commit_staged)
            except Exception as exc:
                self._fail(exc)
                return
            if epoch == self._epoch:
                self._released_upto(upto)

    def _commit(self, commit: Callable[[], int]) -> int:
        try:
            return commit()
        except Exception as exc:
            self._fail(exc)
            raise

    def _released_upto(self, upto: int) -> None:
        while self._queue and self._queue[0].seq <= upto:
            out = self._queue.popleft()
            conn = out.conn
            if conn is not None and conn is self._current() and not conn.closing:
                self._write(conn, out.raw)
            self.released = out.seq
            if out.done is not None and not out.done.done():
                out.done.set_result(out.seq)

    def _fail(self, exc: Exception) -> None:
        """The commit failed: every queued message is dropped (never written; the store gave
        their numbers back) and its sender gets the error."""
        log.error("FIX store commit failed, %d queued messages dropped: %s", len(self._queue), exc)
        while self._queue:
            out = self._queue.popleft()
            if out.done is not None and not out.done.done():
                out.done.set_exception(exc)
