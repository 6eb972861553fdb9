"""The store protocol: what every session store must do.

A store sees hashed keys and payload bytes, never cookies, requests or
:class:`~websession.Session` objects. Every server store saves with a version
check (compare-and-swap): ``save`` raises :class:`~websession.errors.Conflict`
when someone saved first and :class:`~websession.errors.Gone` when the record
was deleted meanwhile, so a logged-out session is never resurrected.

Sync stores implement :class:`Store`; stores that do network I/O also ship an
:class:`AsyncStore` form with the same method names.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterator
from typing import Protocol, runtime_checkable

from ..errors import Conflict, Gone, SessionConfigError

__all__ = [
    "AsyncStore",
    "AsyncUserIndex",
    "Clock",
    "Entry",
    "InspectableStore",
    "Meta",
    "Store",
    "UserIndex",
]

Clock = Callable[[], float]


@dataclasses.dataclass(slots=True)
class Meta:
    """Metadata a store keeps beside the payload, outside the user's data.

    Times are seconds since the epoch.
    """

    created: float
    last_seen: float
    user_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclasses.dataclass(slots=True)
class Entry:
    """One stored session: payload bytes, version and metadata."""

    payload: bytes
    version: int
    created: float
    last_seen: float
    expires: float
    user_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @property
    def meta(self) -> Meta:
        return Meta(self.created, self.last_seen, self.user_id, self.ip, self.user_agent)


@runtime_checkable
class Store(Protocol):
    """A synchronous session store.

    ``inline`` tells the ASGI middleware whether calls are cheap enough to run
    on the event loop (memory, file and SQLite: a thread hop costs more).
    """

    inline: bool
    #: Largest payload the store accepts, in bytes (None: no store-specific limit).
    max_payload_size: int | None

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired."""

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Store ``payload`` if the current version is ``expected_version``; return the new one.

        ``expected_version=None`` creates: Conflict if the key exists. Otherwise
        Conflict on a version mismatch, Gone when the key no longer exists. A
        ``ttl`` of zero or less deletes instead of storing.
        """

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl`` and set last seen; False if the key is gone."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""

    def delete_expired(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired entries; return how many went."""


@runtime_checkable
class AsyncStore(Protocol):
    """The async form of :class:`Store`: the same methods, awaited."""

    max_payload_size: int | None

    async def load(self, key: str) -> Entry | None: ...

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int: ...

    async def touch(self, key: str, ttl: float) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def delete_expired(self, limit: int = 1000) -> int: ...


@runtime_checkable
class InspectableStore(Protocol):
    """Stores the CLI can list (``websession ls``, ``show``, ``revoke``)."""

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``)."""


@runtime_checkable
class UserIndex(Protocol):
    """A store that keeps a per-user index of sessions ("your devices", "log out everywhere").

    The index is maintained by ``save`` (from ``meta.user_id``) and ``delete``;
    listing a user's sessions costs O(that user's sessions), never a scan of
    all sessions, and expired sessions never appear (they leave the index on
    read or by the store's own expiry).
    """

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id`` as ``(key, entry)``, most recently seen first."""

    def revoke(self, key: str) -> bool:
        """Delete one session and drop it from its user's index; False if it was not there."""

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every session of ``user_id`` except the keys in ``keep``; return how many went."""


@runtime_checkable
class AsyncUserIndex(Protocol):
    """The async form of :class:`UserIndex`: the same methods, awaited."""

    async def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]: ...

    async def revoke(self, key: str) -> bool: ...

    async def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int: ...


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SessionConfigError(f"limit must be a positive integer, got {limit!r}")
    return limit


#: The stores' clock unless one is given: ``time.time`` itself, so every store
#: call skips a Python-level wrapper around it.
default_clock: Clock = time.time


def next_version(current: int | None, expected_version: int | None) -> int:
    """The compare-and-swap of a store that reads the live version before it writes.

    ``current`` is the live record's version (None: no live record). Returns the
    version the save gives; raises Conflict (the key exists on a create, or someone
    saved first) or Gone (deleted meanwhile), as :meth:`Store.save` says.
    """
    if expected_version is None:
        if current is not None:
            raise Conflict("a session with this key already exists")
        return 1
    if current is None:
        raise Gone("the session was deleted meanwhile")
    if current != expected_version:
        raise Conflict("the session was saved by another request")
    return expected_version + 1


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``, if any.

    For a range scan of keys by prefix: SQL databases and SQLite compare TEXT
    as UTF-8 bytes (or code points), which order alike.
    """
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    following = last + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return prefix[:-1] + chr(following)


class InlineAsyncStore:
    """Async form of a store whose calls are cheap and safe to run on the event loop.

    Memory, file and SQLite calls take microseconds; hopping to a thread
    would cost more than the call, so the async form simply calls through.
    """

    inline = True

    def __init__(self, store: Store) -> None:
        self.sync = store
        self.max_payload_size = store.max_payload_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"

    async def load(self, key: str) -> Entry | None:
        return self.sync.load(key)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        return self.sync.save(key, payload, expected_version=expected_version, ttl=ttl, meta=meta)

    async def touch(self, key: str, ttl: float) -> bool:
        return self.sync.touch(key, ttl)

    async def delete(self, key: str) -> None:
        self.sync.delete(key)

    async def delete_expired(self, limit: int = 1000) -> int:
        return self.sync.delete_expired(limit)


class _IndexedStore(Store, UserIndex, Protocol):
    """A sync store that also keeps the per-user index."""


class InlineAsyncUserIndex(InlineAsyncStore):
    """:class:`InlineAsyncStore` of a store that keeps the per-user index: it calls through too."""

    sync: _IndexedStore

    async def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """See the sync store's ``sessions_for``."""
        return self.sync.sessions_for(user_id)

    async def revoke(self, key: str) -> bool:
        """See the sync store's ``revoke``."""
        return self.sync.revoke(key)

    async def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """See the sync store's ``revoke_user``."""
        return self.sync.revoke_user(user_id, keep=keep)
