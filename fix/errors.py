"""Exception hierarchy of the FIX session layer.

Everything the package raises on purpose derives from :class:`FixError`, so callers can catch one
type. Network errors (``OSError``) from the transport are not wrapped: the session handles them
itself by dropping the connection and (for an initiator) reconnecting.
"""

from __future__ import annotations


class FixError(Exception):
    """Base class of all FIX session layer errors."""


class GarbledMessageError(FixError):
    """Bytes on the wire that do not form a valid FIX 4.4 frame.

    Raised by :class:`fix.framing.FrameBuffer` after the offending bytes have been discarded, so
    the caller logs it and simply asks for the next frame. A garbled frame never consumes a
    sequence number; the resulting gap is repaired by a ResendRequest.
    """

    def __init__(self, reason: str, data: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


class SessionRejectError(FixError):
    """An inbound message violates a session rule and must be answered with a Reject(3).

    ``reason`` is the SessionRejectReason(373); ``ref_tag`` the RefTagID(371), if any;
    ``logout`` says whether the rule also requires a Logout and disconnect.
    """

    def __init__(
        self, reason: int, text: str, *, ref_tag: int | None = None, logout: bool = False
    ) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.ref_tag = ref_tag
        self.logout = logout


class SessionDisconnect(FixError):
    """Internal signal: the current TCP connection must be closed (the session lives on)."""


class UnknownSessionError(FixError, KeyError):
    """No session is configured for the requested CompID."""


class StoreError(FixError):
    """The durable session store is unusable (corrupt file, wrong schema)."""
