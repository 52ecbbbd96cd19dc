"""FIX 4.4 session layer (asyncio, simplefix for messages). See fix/session.py for the API.

Modules: ``session`` (FixSession: state, lifecycle, timer, what it sends; the public names are
imported from here), ``inbound`` (its rules for what it receives), ``resend`` (answering a
ResendRequest), ``validation`` (header checks, FIX field helpers), ``transport`` (TCP:
Connection, FixInitiator, FixAcceptor), ``framing``, ``store``, ``errors``.
"""

from fix.errors import FixError
from fix.session import FixAcceptor, FixInitiator, FixSession, MessageHandler, SessionConfig
from fix.store import MemorySessionStore, SessionStore, SqliteSessionStore

__all__ = [
    "FixAcceptor",
    "FixError",
    "FixInitiator",
    "FixSession",
    "MemorySessionStore",
    "MessageHandler",
    "SessionConfig",
    "SessionStore",
    "SqliteSessionStore",
]
