"""websession: server-side sessions for every Python web framework.

Fast, safe by default (hashed ids at rest, idle and absolute timeouts, id
rotation on login) and free of lost updates (versioned saves with replay).
"""

from .codecs import register_type
from .config import SessionConfig
from .errors import (
    Conflict,
    Gone,
    PayloadTooLarge,
    SessionConfigError,
    SessionError,
    SessionStateError,
    StoreError,
    StoreUnavailable,
    UnserializableValue,
)
from .identity import SessionInfo, TooManySessions, UserIndexMissing
from .session import Session
from .urls import store_from_url

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "Session",
    "SessionConfig",
    "SessionConfigError",
    "SessionError",
    "SessionInfo",
    "SessionStateError",
    "StoreError",
    "StoreUnavailable",
    "TooManySessions",
    "UnserializableValue",
    "UserIndexMissing",
    "__version__",
    "register_type",
    "store_from_url",
]
