"""The websession error family.

Every error websession raises on purpose is a :class:`SessionError`, so one
``except SessionError`` catches them all; the subclasses say what went wrong
and their messages say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "SessionConfigError",
    "SessionError",
    "SessionStateError",
    "StoreError",
    "StoreUnavailable",
    "UnserializableValue",
]


class SessionError(Exception):
    """Base class of every error websession raises."""


class SessionConfigError(SessionError, ValueError):
    """A setting is unknown, has the wrong type or an impossible value."""


class SessionStateError(SessionError, RuntimeError):
    """An operation is not possible in the session's current state.

    For example ``login()`` on a websocket after the handshake was accepted:
    the new cookie can no longer reach the browser.
    """


class UnserializableValue(SessionError, TypeError):
    """A value put into the session cannot be encoded by the payload codec."""

    def __init__(self, key: str, value: object, detail: str = "") -> None:
        self.key = key
        kind = type(value).__qualname__
        message = (
            f"session[{key!r}] holds a {kind}, which websession cannot store. "
            "Store plain data (str, int, float, bool, None, list, dict with str keys, "
            "tuple, set, bytes, datetime, date, time, timedelta, UUID, Decimal) "
            "or register the type with websession.codecs.register_type()."
        )
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class PayloadTooLarge(SessionError, ValueError):
    """The encoded session would exceed the store's size limit."""

    def __init__(self, size: int, limit: int, where: str, largest_key: str | None = None) -> None:
        self.size = size
        self.limit = limit
        self.largest_key = largest_key
        message = f"the encoded session is {size} bytes, over the {limit}-byte limit of {where}"
        if largest_key is not None:
            message += f"; its largest value is session[{largest_key!r}]"
        message += ". Keep less in the session, or use a server-side store."
        super().__init__(message)


class StoreError(SessionError):
    """Base class of errors a store raises."""


class Conflict(StoreError):
    """Another request saved this session first (the expected version is stale).

    The flow reloads, replays this request's own changes and saves again.
    """


class Gone(StoreError):
    """The session was deleted (logout, revocation, expiry) while a request used it.

    A save must never resurrect it, so the request's changes are dropped.
    """


class StoreUnavailable(StoreError):
    """The store cannot be reached. The message names the store (passwords masked)."""
