"""The order's fast path to the execution gateway: ``send_new_order`` over a direct TCP link.

Why it exists: sent through the gateway's Temporal activity, every order costs a second
workflow task and an activity's three history round trips (scheduled, started, completed), each
dispatched through the server's matching service. Measured on this machine's dev server (the
order's Temporal shape with no-op bodies, c=10): 24-30 ms of server CPU per order with the
activity, 15-17 ms with the same step as a local activity, and 40-50% more orders per second.
Over this link the shard worker calls the gateway's own ``send_new_order`` (the same code: a
ClOrdID is handed to a venue once, ever) from a local activity, so a market order is accepted,
sent, filled and booked in the order workflow's first workflow task.

What it deliberately does not do: it is not a second way in for anything else. Cancels, status
requests and every retry go through the gateway's activities; :meth:`GatewayLink.send_new_order`
answers ``None`` when the link is off, down, refused or slower than its timeout, and the
workflow then sends through the activity, which is safe because ``send_new_order`` is
idempotent per ClOrdID (an order the link did hand over comes back ``resent`` with every report
recorded for it). Only the gateway's non-retryable answers (a halted symbol, an invalid order)
travel back as errors.

Who may call it: only a holder of the link secret (``SHERWOOD_GATEWAY_LINK_SECRET``, the same
on the gateway and its shard workers; ``sherwood dev`` makes one in its data dir, production
refuses to start without one: ``sherwood.link_secret``). Each end proves it holds the secret on
every connection, challenge-response, and neither ever sends it: the gateway opens with a fresh
random nonce, the shard worker answers HMAC-SHA256(secret, its label, both nonces, stack), the
gateway checks it in constant time and answers its own HMAC under another label, which the
worker checks the same way (a fake gateway on the port learns nothing and is not used). A
missing, wrong or replayed proof (the nonce is new per connection) gets one generic
``link_refused`` error that says nothing of what was expected, is logged with its reason on the
gateway, and the connection is closed before any call line is read. A connection carries at
most ``max_in_flight`` calls at once: the worker waits for a slot (within its timeout), the
gateway answers any call beyond it with a retryable ``link_busy`` error without running it, and
stops reading while its answers are not being read. At most ``max_unauthenticated``
connections may still owe their hello (each for ``hello_timeout_s`` at most); more are closed
at once.

Why an authenticated link is no way around the order workflow: the secret is given only to the
processes that run the order workflows (the shard workers), and they call the link from one
place, the order workflow's ``send_new_order_direct`` local activity, after the workflow's
``accept_order`` step has checked risk and posted the hold -- the same call, with the same
:class:`VenueOrder`, that the workflow otherwise makes as the gateway's Temporal activity. A
holder of the secret holds no more than that activity path gives any client of the gateway's
Temporal namespace, and a shard worker already holds the shard databases' credentials; the link
adds a faster path for that one call, not a new authority. The gateway's own rules hold on
both paths: a ClOrdID is sent once ever, an order its workflow abandoned is never sent, a halt
stops an order not yet handed over, and a venue report for an order it never sent is kept for
the audit and delivered to nobody (``workers.gateway``).

Wire format, one line per message, UTF-8, on one long-lived connection per shard-worker
process (requests are multiplexed, answered in any order)::

    0 challenge <gateway nonce, 64 hex>\\n         (gateway -> shard worker, on connect)
    0 hello <stack> <worker nonce, 64 hex> <proof, 64 hex>\\n   (shard worker -> gateway)
    0 ok <gateway proof, 64 hex>\\n | 0 error <error JSON>\\n   (gateway; after an error it hangs up)
    <id> send_new_order <VenueOrder JSON>\\n        (shard worker -> gateway)
    <id> ok <VenueAck JSON>\\n                      (gateway -> shard worker)
    <id> error <{"type","message","non_retryable"} JSON>\\n

JSON as Temporal payloads encode it (``sherwood.temporal.DATA_CONVERTER``): one line each,
since JSON escapes newlines. ``<stack>`` (``Settings.gateway_link_stack()``: Temporal namespace,
gateway task queue, database prefix) must be the gateway's own, and is inside both proofs: a
shard worker of another stack on the same machine (a test run next to ``sherwood dev``) is
turned away instead of having its orders sent by the wrong gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from domain.execution import VenueAck, VenueOrder
from sherwood.temporal import DATA_CONVERTER

log = logging.getLogger(__name__)

OP_SEND = "send_new_order"
_CONVERTER = DATA_CONVERTER.payload_converter
MAX_LINE = 1 << 20  # a VenueAck with a few thousand reports fits
NONCE_BYTES = 32
LINK_REFUSED = "link_refused"  # the hello: whatever was wrong with it, this and nothing more
LINK_BUSY = "link_busy"  # a call beyond max_in_flight on its connection: not run
_WORKER_LABEL = b"sherwood-gateway-link worker->gateway"
_GATEWAY_LABEL = b"sherwood-gateway-link gateway->worker"


def _mac(secret: str, label: bytes, gateway_nonce: str, worker_nonce: str, stack: str) -> str:
    msg = b"\n".join((label, gateway_nonce.encode(), worker_nonce.encode(), stack.encode()))
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def worker_proof(secret: str, gateway_nonce: str, worker_nonce: str, stack: str) -> str:
    """What the shard worker answers to the gateway's challenge (hex HMAC-SHA256)."""
    return _mac(secret, _WORKER_LABEL, gateway_nonce, worker_nonce, stack)


def gateway_proof(secret: str, gateway_nonce: str, worker_nonce: str, stack: str) -> str:
    """What the gateway answers to a good hello: its own proof, under another label."""
    return _mac(secret, _GATEWAY_LABEL, gateway_nonce, worker_nonce, stack)


def _is_nonce(value: bytes) -> bool:
    return len(value) == 2 * NONCE_BYTES and all(c in b"0123456789abcdef" for c in value)


class LinkError(Exception):
    """The link could not carry a call (connection refused or lost, timeout, garbled line).
    Never a business answer: the caller falls back to the gateway's activity."""


def _encode(value: object) -> bytes:
    return _CONVERTER.to_payloads([value])[0].data


def _decode(data: bytes, hint: type) -> Any:
    return _CONVERTER.from_payloads([Payload(metadata={"encoding": b"json/plain"}, data=data)],
                                    [hint])[0]


# ============================================================================ gateway side


class GatewayLinkServer:
    """Serves ``send_new_order`` on ``host:port`` for the shard workers that prove they hold
    ``secret`` (see module doc).

    ``send`` is the gateway's ``GatewayActivities.send_new_order``. Its ``ApplicationError``
    answers go back as ``error`` lines (type, message, non_retryable); any other exception as
    a retryable ``error``. :meth:`stop` stops accepting calls and waits for those in flight.
    ``refused`` counts the hellos turned away (each is logged with its reason). At most
    ``max_unauthenticated`` connections wait for their hello at once (each for
    ``hello_timeout_s`` at most); a connection beyond that is closed at once.
    """

    def __init__(self, send: Callable[[VenueOrder], Awaitable[VenueAck]], host: str, port: int,
                 stack: str, *, secret: str, hello_timeout_s: float = 5.0,
                 max_in_flight: int = 256, max_unauthenticated: int = 16) -> None:
        if not secret:
            raise ValueError("the gateway link is never served without a secret")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.send = send
        self.host = host
        self.port = port
        self.stack = stack
        self._secret = secret
        self.hello_timeout_s = hello_timeout_s
        self.max_in_flight = max_in_flight
        self.max_unauthenticated = max_unauthenticated
        self.refused = 0
        self.unauthenticated = 0  # connections that have not proved the secret yet
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0: the one the OS chose
        log.info("gateway link listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=5)
        for writer in list(self._conns):
            writer.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unauthenticated >= self.max_unauthenticated:
            log.warning("gateway link: closed %s at once: %d connections still owe their hello",
                        writer.get_extra_info("peername"), self.unauthenticated)
            writer.close()
            return
        self._conns.add(writer)
        in_flight: set[asyncio.Task[None]] = set()  # this connection's calls
        try:
            self.unauthenticated += 1
            try:
                if not await self._hello(reader, writer):
                    return
            finally:
                self.unauthenticated -= 1
            while self._server is not None and self._server.is_serving():
                try:
                    await writer.drain()  # answers not being read: stop reading calls
                    line = await reader.readline()
                except (ConnectionError, ValueError):  # reset, or a line over MAX_LINE
                    return
                if not line:
                    return
                if len(in_flight) >= self.max_in_flight:
                    call_id = line.partition(b" ")[0][:40]
                    writer.write(self._error(call_id, LINK_BUSY, f"more than {self.max_in_flight} "
                                             "calls in flight on this connection", False))
                    continue
                call = asyncio.create_task(self._call(line, writer))
                for calls in (self._calls, in_flight):
                    calls.add(call)
                    call.add_done_callback(calls.discard)
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _hello(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Challenge the peer; True when it proved it holds the secret for this stack (and was
        answered with the gateway's own proof), else refused, logged, and False."""
        peer = writer.get_extra_info("peername")
        nonce = secrets.token_hex(NONCE_BYTES)
        try:
            writer.write(b"0 challenge %s\n" % nonce.encode())
            line = await asyncio.wait_for(reader.readline(), self.hello_timeout_s)
        except (ConnectionError, ValueError, TimeoutError) as exc:
            log.warning("gateway link: refused %s: no hello (%r)", peer, exc)
            self.refused += 1
            return False
        reason = self._check_hello(line.rstrip(b"\n"), nonce)
        if reason is None:
            _, worker_nonce, _ = line.rstrip(b"\n")[len(b"0 hello "):].rsplit(b" ", 2)
            writer.write(b"0 ok %s\n" % gateway_proof(self._secret, nonce, worker_nonce.decode(),
                                                       self.stack).encode())
            return True
        log.warning("gateway link: refused %s: %s", peer, reason)
        self.refused += 1
        writer.write(self._error(b"0", LINK_REFUSED, "hello refused", True))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return False

    def _check_hello(self, line: bytes, nonce: str) -> str | None:
        """Why the hello ``line`` is refused (for the gateway's log only), or None."""
        if not line.startswith(b"0 hello "):
            return f"not a hello: {line[:80]!r}"
        parts = line[len(b"0 hello "):].rsplit(b" ", 2)
        if len(parts) != 3 or not _is_nonce(parts[1]) or not _is_nonce(parts[2]):
            return f"a hello without a proof: {line[:200]!r}"
        stack, worker_nonce, proof = (p.decode("ascii", "replace") for p in parts)
        expected = worker_proof(self._secret, nonce, worker_nonce, self.stack)
        if not hmac.compare_digest(proof.encode(), expected.encode()):
            if stack != self.stack:
                return f"a hello for another stack ({stack[:200]!r})"
            return "a wrong proof (another secret, or replayed from another connection)"
        return None

    async def _call(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        call_id, _, rest = line.partition(b" ")
        op, _, body = rest.partition(b" ")
        try:
            if op.decode() != OP_SEND:
                raise ApplicationError(f"unknown operation {op[:40]!r}", type="unknown_operation",
                                       non_retryable=True)
            ack = await self.send(_decode(body, VenueOrder))
            reply = b"%s ok %s\n" % (call_id, _encode(ack))
        except ApplicationError as exc:
            reply = self._error(call_id, exc.type, exc.message, exc.non_retryable)
        except Exception as exc:  # the caller falls back to the activity, which retries
            log.warning("gateway link call failed: %r", exc)
            reply = self._error(call_id, "internal", repr(exc), False)
        if not writer.is_closing():
            writer.write(reply)

    @staticmethod
    def _error(call_id: bytes, kind: str | None, message: str, non_retryable: bool) -> bytes:
        err = json.dumps({"type": kind, "message": message, "non_retryable": non_retryable})
        return b"%s error %s\n" % (call_id, err.encode())


# ============================================================================ shard worker side


class _Connection:
    """One connection to the gateway and the calls waiting for an answer on it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future[tuple[bytes, bytes]]] = {}


class GatewayLink:
    """The shard worker's end of the link: one connection, opened on first use and
    authenticated both ways with ``secret``, calls multiplexed over it, at most
    ``max_in_flight`` at once (more wait for a slot, within the call's timeout). After a failure
    to connect or to authenticate the link is not tried again for ``retry_after_s`` (orders take
    the activity path meanwhile), so a gateway that is down costs no order a connect timeout."""

    def __init__(self, address: str, stack: str, *, secret: str, timeout_s: float = 1.0,
                 retry_after_s: float = 1.0, max_in_flight: int = 256) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"gateway link address must be host:port, not {address!r}")
        if not secret:
            raise ValueError("the gateway link is never used without a secret")
        self.host, self.port = host, int(port)
        self.stack = stack
        self._secret = secret
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._conn: _Connection | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._down_until = 0.0
        self._connecting = asyncio.Lock()

    async def send_new_order(self, order: VenueOrder) -> VenueAck | None:
        """The gateway's ``send_new_order`` for ``order``: its ``VenueAck``; ``None`` when the
        link could not carry the call (the caller uses the activity). Raises the gateway's
        non-retryable ``ApplicationError`` (e.g. ``symbol_halted``) as it is."""
        try:
            kind, body = await asyncio.wait_for(self._call(_encode(order)), self.timeout_s)
        except (LinkError, OSError, TimeoutError) as exc:
            log.info("gateway link: %s not sent directly (%r): the activity sends it",
                     order.order_id, exc)
            return None
        if kind == b"ok":
            ack: VenueAck = _decode(body, VenueAck)
            return ack
        err = json.loads(body)
        if err.get("non_retryable"):
            raise ApplicationError(err.get("message") or "refused by the gateway",
                                   type=err.get("type"), non_retryable=True)
        log.info("gateway link: %s not sent directly (%s: %s): the activity sends it",
                 order.order_id, err.get("type"), err.get("message"))
        return None

    async def _call(self, body: bytes) -> tuple[bytes, bytes]:
        async with self._slots:
            conn = await self._connected()
            self._next_id += 1
            call_id = self._next_id
            fut: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()
            conn.pending[call_id] = fut
            try:
                conn.writer.write(b"%d %s %s\n" % (call_id, OP_SEND.encode(), body))
                return await fut
            finally:
                conn.pending.pop(call_id, None)

    def _open(self) -> _Connection | None:
        return self._conn if self._conn is not None and not self._conn.writer.is_closing() else None

    async def _connected(self) -> _Connection:
        if (conn := self._open()) is not None:
            return conn
        if time.monotonic() < self._down_until:
            raise LinkError("gateway link down (recent connect failure)")
        async with self._connecting:
            if (conn := self._open()) is not None:
                return conn
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
            except OSError as exc:
                self._down_until = time.monotonic() + self.retry_after_s
                raise LinkError(f"cannot connect to the gateway link {self.host}:{self.port}: {exc}") from exc
            try:
                refusal = await self._authenticate(reader, writer)
            except BaseException:  # the caller's timeout: no half-open connection left behind
                writer.close()
                raise
            if refusal is not None:
                writer.close()
                self._down_until = time.monotonic() + self.retry_after_s
                log.warning("gateway link %s:%d: not used: %s", self.host, self.port, refusal)
                raise LinkError(f"gateway link {self.host}:{self.port}: {refusal}")
            self._conn = conn = _Connection(writer)
            self._reader_task = asyncio.create_task(self._read(reader, conn), name="gateway-link")
            return conn

    async def _authenticate(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> str | None:
        """Answer the gateway's challenge and check its proof: None when both ends proved they
        hold the secret, else why this connection is not used."""
        try:
            challenge = (await reader.readline()).rstrip(b"\n")
            head, _, gateway_nonce = challenge.rpartition(b" ")
            if head != b"0 challenge" or not _is_nonce(gateway_nonce):
                return f"no challenge from the gateway: {challenge[:200]!r}"
            nonce, mine = gateway_nonce.decode(), secrets.token_hex(NONCE_BYTES)
            proof = worker_proof(self._secret, nonce, mine, self.stack)
            writer.write(b"0 hello %s %s %s\n" % (self.stack.encode(), mine.encode(), proof.encode()))
            answer = (await reader.readline()).rstrip(b"\n")
        except (ConnectionError, ValueError) as exc:
            return f"hello failed: {exc!r}"
        if not answer.startswith(b"0 ok "):
            return f"the gateway refused the hello: {answer[:300]!r}"
        expected = gateway_proof(self._secret, nonce, mine, self.stack)
        if not hmac.compare_digest(answer[len(b"0 ok "):], expected.encode()):
            return "the gateway did not prove it holds the link secret"
        return None

    async def _read(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        try:
            while line := await reader.readline():
                call_id, _, rest = line.rstrip(b"\n").partition(b" ")
                kind, _, body = rest.partition(b" ")
                fut = conn.pending.get(int(call_id)) if call_id.isdigit() else None
                if fut is not None and not fut.done():
                    fut.set_result((kind, body))
        except (ConnectionError, ValueError) as exc:
            log.info("gateway link lost: %r", exc)
        finally:
            if self._conn is conn:
                self._conn = None
            conn.writer.close()
            for fut in conn.pending.values():  # this connection's calls only
                if not fut.done():
                    fut.set_exception(LinkError("gateway link closed"))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
            self._reader_task = None
