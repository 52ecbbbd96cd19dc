"""FIX 4.4 session layer (asyncio, simplefix for messages). See fix/session.py for the API."""

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
