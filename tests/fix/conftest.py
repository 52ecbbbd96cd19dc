"""Fixtures: our session in either role, logged on against a raw scripted counterparty."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fix_helpers import OURS, PEER, RawPeer, Recorder, ScriptedServer

from fix.session import FixAcceptor, FixInitiator, FixSession, SessionConfig
from fix.store import MemorySessionStore, SessionStore


@dataclass
class Env:
    """Our session (``role`` says which side) and the scripted counterparty talking to it."""

    role: str
    session: FixSession
    recorder: Recorder
    port: int
    server: ScriptedServer | None = None  # initiator role: where our initiator connects
    peer: RawPeer | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def p(self) -> RawPeer:
        assert self.peer is not None
        return self.peer

    async def connect(self) -> RawPeer:
        """Open a new TCP connection (acceptor role: dial; initiator role: wait for a dial)."""
        if self.server is not None:
            self.peer = await self.server.accept(timeout=3.0)
        else:
            self.peer = await RawPeer.connect(self.port)
        return self.peer

    async def logon(
        self, *, peer_seq: int | None = None, hb: int = 30, extra: tuple = ()
    ) -> tuple[RawPeer, object]:
        """Connect and complete the Logon handshake; return (peer, our Logon)."""
        peer = await self.connect()
        if peer_seq is not None:
            peer.next_seq = peer_seq
        if self.role == "acceptor":
            await peer.send_msg("A", [(98, 0), (108, hb), *extra])
            ours = await peer.expect("A")
        else:
            ours = await peer.expect("A")
            await peer.send_msg("A", [(98, 0), (108, ours[108]), *extra])
        await self.session.wait_logged_on(2.0)
        return peer, ours


@pytest.fixture
def fix_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records from the fix loggers that are not the injected handler failure."""
    records: list[logging.LogRecord] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR and "handler failed" not in record.getMessage():
                records.append(record)

    h = _H()
    logger = logging.getLogger("fix")
    logger.addHandler(h)
    yield records
    logger.removeHandler(h)


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env() -> AsyncIterator[EnvFactory]:
    """Factory: ``await make_env(role, store=..., hb=..., **config)`` → Env (not yet connected)."""
    envs: list[Env] = []

    async def factory(
        role: str, store: SessionStore | None = None, hb: float = 30.0, **cfg: object
    ) -> Env:
        store = store if store is not None else MemorySessionStore()
        recorder = Recorder()
        config = SessionConfig(OURS, PEER, heartbeat_interval=hb,
                               reconnect_min_delay=0.01, reconnect_max_delay=0.05,
                               **cfg)  # type: ignore[arg-type]
        if role == "acceptor":
            acceptor = FixAcceptor("127.0.0.1", 0, {PEER: (config, store)}, recorder)
            await acceptor.start()
            env = Env(role, acceptor.session(PEER), recorder, acceptor.port)
            env.closers.append(acceptor.stop)
        else:
            server = ScriptedServer()
            await server.start()
            initiator = FixInitiator(config, store, "127.0.0.1", server.port, recorder)
            await initiator.start()
            env = Env(role, initiator.session, recorder, server.port, server=server)
            env.closers += [server.stop, initiator.stop]
        envs.append(env)
        return env

    yield factory
    for env in envs:
        if env.peer is not None:
            await env.peer.close()
        for close in reversed(env.closers):
            with contextlib.suppress(Exception):
                await close()


@pytest.fixture(params=["acceptor", "initiator"])
async def env(request: pytest.FixtureRequest, make_env: EnvFactory) -> Env:
    """Our session in each role, logged on with a scripted peer (HeartBtInt 30 s: quiet)."""
    e = await make_env(request.param)
    await e.logon()
    return e


@pytest.fixture
async def env_acceptor(make_env: EnvFactory) -> Env:
    """Our acceptor, logged on with a scripted client."""
    e = await make_env("acceptor")
    await e.logon()
    return e
