"""``GET /stream``: the trade updates WebSocket (Alpaca's trading stream protocol, JSON text frames).

1. The client authenticates within :data:`AUTH_TIMEOUT_S`, with either
   ``{"action": "auth", "key": ..., "secret": ...}`` or
   ``{"action": "authenticate", "data": {"key_id": ..., "secret_key": ...}}``, and gets
   ``{"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}``
   (``"unauthorized"`` and the socket is closed with 1008 otherwise; silence too).
2. ``{"action": "listen", "data": {"streams": ["trade_updates"]}}`` ->
   ``{"stream": "listening", "data": {"streams": ["trade_updates"]}}`` (an empty list stops it).
   The acknowledgement is sent only once the Redis subscription is confirmed, so every event
   published after it arrives.
3. Every order event of THAT account: ``{"stream": "trade_updates", "data": {"event", "order",
   "timestamp"[, "price", "qty", "position_qty", "execution_id"]}}``.

Events come from the account's own Redis channel ``<prefix>:trade_updates:<account_id>`` (fed by
the shard outbox publisher); a payload naming another account is dropped anyway. The outbox
publishes at least once: an exact repeat of a recent payload is not forwarded twice. If the Redis
subscription breaks, the socket is closed (1011) rather than left silently deaf: a client then
reconnects and reconciles through ``GET /v2/orders``.

Errors: ``{"stream": "error", "data": {"code", "message", "reason"}}`` (the REST error shape); the
connection stays open except for authentication failures.

Limits: an API key holds at most ``stream_max_connections_per_key`` streams in one API process;
the next one, once authenticated, gets ``{"stream": "error", "data": {"code": 406, "message":
"connection limit exceeded", "reason": "connection_limit_exceeded"}}`` (Alpaca's stream code) and
is closed with 1008. Failed logins count against the source address as on REST
(``too_many_failed_logins``: unauthorized, closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections import deque
from typing import Any, NoReturn

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from api.deps import authenticate_from
from api.errors import ApiError, error_body
from api.services.activities import fill_uuid
from api.state import AppState
from sherwood.contracts import RedisKeys

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

AUTH_TIMEOUT_S = 10.0
SUBSCRIBE_TIMEOUT_S = 5.0
TRADE_UPDATES = "trade_updates"
DEDUP_WINDOW = 1024
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


class _Closed(Exception):
    """The session is over (the socket is closed or must be)."""


# events older outbox rows may carry that Alpaca does not know (the order machine now writes
# the Alpaca name, domain.order_machine.UPDATE_FOR)
LEGACY_EVENTS = {"failed": "rejected"}


def trade_update(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a trade_updates message from an outbox payload (account id left out;
    ``execution_id`` as a uuid, the same one the FILL activity id carries)."""
    event = payload["event"]
    data: dict[str, Any] = {"event": LEGACY_EVENTS.get(event, event), "order": payload["order"],
                            "timestamp": payload.get("timestamp")}
    for k in ("price", "qty", "position_qty"):
        if k in payload:
            data[k] = payload[k]
    if payload.get("execution_id"):
        # a fill by the firm names its own venue (``house``): the order's may be none or another
        venue = payload.get("execution_venue") or (payload.get("order") or {}).get("venue") or ""
        data["execution_id"] = str(fill_uuid(venue, str(payload["execution_id"])))
        data["venue_execution_id"] = payload["execution_id"]
    return data


class TradeStream:
    """One WebSocket session."""

    def __init__(self, ws: WebSocket, state: AppState) -> None:
        self.ws = ws
        self.state = state
        self.account_id: uuid.UUID | None = None
        self.key_id: str | None = None  # holds a slot in state.streams_per_key while set
        self.pubsub: PubSub | None = None
        self.pump: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._recent: deque[str] = deque(maxlen=DEDUP_WINDOW)
        self._recent_set: set[str] = set()

    # --- sending --------------------------------------------------------------------------

    async def send(self, msg: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(msg, separators=(",", ":")))

    async def error(self, status: int, reason: str, message: str) -> None:
        await self.send({"stream": "error", "data": error_body(status * 100000, reason, message)})

    async def close(self, code: int, reason: str) -> NoReturn:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason)
        raise _Closed(reason)

    # --- receiving ------------------------------------------------------------------------

    async def receive(self, wait_s: float | None = None) -> dict[str, Any] | None:
        """The next client message as a JSON object, None if it was not one (already answered)."""
        message = await asyncio.wait_for(self.ws.receive(), wait_s)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text")
        if raw is None and message.get("bytes") is not None:
            raw = message["bytes"].decode("utf-8", errors="replace")
        try:
            msg = json.loads(raw or "")
        except ValueError:
            await self.error(400, "invalid_json", "message is not valid JSON")
            return None
        if not isinstance(msg, dict):
            await self.error(400, "invalid_message", "message must be a JSON object")
            return None
        return msg

    async def run(self) -> None:
        try:
            await self._authenticate()
            while True:
                msg = await self.receive()
                if msg is not None:
                    await self._handle(msg)
        except (WebSocketDisconnect, _Closed):
            pass
        except Exception:
            log.exception("trade stream session failed")
            with contextlib.suppress(_Closed):
                await self.close(INTERNAL_ERROR, "internal error")
        finally:
            await self._unlisten()
            if self.key_id is not None:
                left = self.state.streams_per_key.get(self.key_id, 1) - 1
                if left > 0:
                    self.state.streams_per_key[self.key_id] = left
                else:
                    self.state.streams_per_key.pop(self.key_id, None)

    # --- authentication -------------------------------------------------------------------

    async def _authenticate(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AUTH_TIMEOUT_S
        while True:
            try:
                msg = await self.receive(max(0.0, deadline - loop.time()))
            except TimeoutError:
                await self.send(_authorization("unauthorized", "authentication timeout"))
                await self.close(POLICY_VIOLATION, "authentication timeout")
            if msg is None:
                continue
            action = msg.get("action")
            if action in ("auth", "authenticate"):
                data = msg.get("data")
                if not isinstance(data, dict):
                    data = {}
                key = msg.get("key") or data.get("key_id")
                secret = msg.get("secret") or data.get("secret_key")
                api_key = None
                if isinstance(key, str) and isinstance(secret, str) and key and secret:
                    source = self.ws.client.host if self.ws.client else ""
                    try:  # the failed-login limit of REST, per source address
                        api_key = await authenticate_from(self.state, source, key, secret)
                    except ApiError as exc:
                        await self.send(_authorization("unauthorized", exc.message))
                        await self.close(POLICY_VIOLATION, exc.reason)
                if api_key is None or api_key.account_id is None:
                    await self.send(_authorization("unauthorized"))
                    await self.close(POLICY_VIOLATION, "unauthorized")
                assert api_key is not None and api_key.account_id is not None
                held = self.state.streams_per_key.get(api_key.key_id, 0)
                if held >= self.state.settings.stream_max_connections_per_key:
                    await self.send({"stream": "error", "data": error_body(
                        406, "connection_limit_exceeded", "connection limit exceeded")})
                    await self.close(POLICY_VIOLATION, "406 connection limit exceeded")
                self.state.streams_per_key[api_key.key_id] = held + 1
                self.key_id = api_key.key_id
                self.account_id = api_key.account_id
                await self.send(_authorization("authorized"))
                return
            if action == "listen":
                await self.error(401, "unauthorized", "authenticate first")
            else:
                await self.error(400, "invalid_action", f"unknown action {action!r}")

    # --- after authentication -------------------------------------------------------------

    async def _handle(self, msg: dict[str, Any]) -> None:
        action = msg.get("action")
        if action == "listen":
            data = msg.get("data")
            streams = data.get("streams") if isinstance(data, dict) else None
            if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
                await self.error(400, "invalid_message", 'listen needs {"data": {"streams": [...]}}')
                return
            if TRADE_UPDATES in streams:
                if not await self._listen():
                    return
            else:
                await self._unlisten()
            await self.send({"stream": "listening",
                             "data": {"streams": [TRADE_UPDATES] if self.pump else []}})
        elif action in ("auth", "authenticate"):
            await self.error(400, "already_authenticated", "this connection is already authenticated")
        else:
            await self.error(400, "invalid_action", f"unknown action {action!r}")

    async def _listen(self) -> bool:
        if self.pump is not None:
            return True
        redis = self.state.redis
        if redis is None:
            await self.error(503, "stream_unavailable", "trade updates are not available (no Redis)")
            return False
        channel = RedisKeys(self.state.settings.redis_prefix).trade_updates(self.account_id)
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                while True:
                    m = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                    if m is not None and m["type"] == "subscribe":
                        break
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("trade updates subscription failed: %s", exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await self.error(503, "stream_unavailable", "trade updates are unavailable, retry later")
            return False
        self.pubsub = pubsub
        self.pump = asyncio.create_task(self._pump(pubsub), name=f"trade-updates:{self.account_id}")
        return True

    async def _unlisten(self) -> None:
        pump, pubsub = self.pump, self.pubsub
        self.pump = self.pubsub = None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _pump(self, pubsub: PubSub) -> None:
        try:
            while True:
                m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if m is not None and m["type"] == "message":
                    await self._forward(m["data"])
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            log.warning("trade updates subscription lost for %s: %s", self.account_id, exc)
            with contextlib.suppress(Exception):
                await self.error(503, "stream_unavailable", "trade updates interrupted, reconnect")
                await self.ws.close(code=INTERNAL_ERROR, reason="trade updates interrupted")
        except Exception:  # the socket went away while sending: the receive loop ends the session
            log.debug("trade updates pump ended", exc_info=True)

    async def _forward(self, raw: bytes | str) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in self._recent_set:
            return  # at-least-once publisher: an exact repeat
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(digest)
        self._recent_set.add(digest)
        try:
            payload = json.loads(text)
            if str(payload.get("account_id")) != str(self.account_id):
                log.error("trade update for account %s on the channel of %s dropped",
                          payload.get("account_id"), self.account_id)
                return
            data = trade_update(payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable trade update dropped: %r", text[:200])
            return
        await self.send({"stream": TRADE_UPDATES, "data": data})


def _authorization(status: str, message: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": status, "action": "authenticate"}
    if message:
        data["message"] = message
    return {"stream": "authorization", "data": data}


@router.websocket("/stream")
async def trade_updates_stream(ws: WebSocket) -> None:
    """Trade updates of the authenticated account (see module docstring for the protocol)."""
    state: AppState = ws.app.state.sherwood
    await ws.accept()
    await TradeStream(ws, state).run()
