"""A user's sessions: listing ("your devices"), revocation, and the per-user cap.

The middlewares expose these as ``sessions_for``, ``revoke`` and
``revoke_user`` (awaitable on the ASGI middleware); they need a store with a
per-user index (:class:`~websession.stores.UserIndex`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import SessionError
from .events import SessionEvent, fire, settle
from .ids import handle_of
from .stores.base import Entry

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SessionInfo", "TooManySessions", "UserIndexMissing"]

log = logging.getLogger("websession")


class UserIndexMissing(SessionError, TypeError):
    """The store keeps no per-user index, so a user's sessions cannot be listed or revoked."""


class TooManySessions(SessionError):
    """``login()`` refused: the user already has ``max_sessions_per_user`` sessions."""

    def __init__(self, user_id: str, limit: int) -> None:
        self.user_id = user_id
        self.limit = limit
        super().__init__(
            f"user {user_id!r} already has {limit} sessions (max_sessions_per_user); "
            "sign out elsewhere first, or configure session_limit='evict_oldest'"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SessionInfo:
    """One of a user's sessions, as a "your devices" page shows it (never the id)."""

    handle: str
    user_id: str | None
    created: float
    last_seen: float
    expires: float
    ip: str | None
    user_agent: str | None
    #: True for the session of the request that asked.
    current: bool = False

    @classmethod
    def of(cls, key: str, entry: Entry, current_key: str | None) -> SessionInfo:
        return cls(
            handle_of(key),
            entry.user_id,
            entry.created,
            entry.last_seen,
            entry.expires,
            entry.ip,
            entry.user_agent,
            key == current_key,
        )


def index_of(store: Any) -> Any:
    """The store's per-user index methods, or raise :class:`UserIndexMissing`."""
    if not all(callable(getattr(store, name, None)) for name in ("sessions_for", "revoke_user")):
        raise UserIndexMissing(
            f"{type(store).__name__} keeps no per-user index; use a store that does "
            "(memory, file, SQLite, SQL, Redis) to list or revoke a user's sessions"
        )
    return store


def keys_to_keep(
    found: Iterable[tuple[str, Entry]], keep: Iterable[str] | None
) -> tuple[list[str], list[tuple[str, Entry]]]:
    """Split a user's sessions into the keys to keep (by handle or key) and those to revoke."""
    wanted = [k for k in (keep or ()) if k]
    kept: list[str] = []
    doomed: list[tuple[str, Entry]] = []
    for key, entry in found:
        if any(key.startswith(w) for w in wanted):
            kept.append(key)
        else:
            doomed.append((key, entry))
    return kept, doomed


def revoke_events(doomed: Iterable[tuple[str, Entry]], at: float) -> list[SessionEvent]:
    return [SessionEvent("revoke", handle_of(key), entry.user_id, at) for key, entry in doomed]


def report(
    hooks: Mapping[str, Any], events: Iterable[SessionEvent]
) -> list[tuple[SessionEvent, Any]]:
    pending = []
    for event in events:
        result = fire(hooks, event)
        if result is not None:
            pending.append((event, result))
    return pending


async def settle_all(pending: Iterable[tuple[SessionEvent, Any]]) -> None:
    for event, awaitable in pending:
        await settle(awaitable, event)


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def current_key(session: Session | None) -> str | None:
    if session is None:
        return None
    session._use()  # the app may not have touched it yet
    return session._key
