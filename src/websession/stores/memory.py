"""MemoryStore: sessions in a dict, for tests, development and single-process apps."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator

from ..errors import Conflict, Gone
from .base import Clock, Entry, InlineAsyncUserIndex, Meta, check_limit, default_clock

__all__ = ["AsyncMemoryStore", "MemoryStore"]


class MemoryStore:
    """In-process store. Sessions vanish with the process and are not shared between workers.

    Thread-safe; versioned saves like every server store. Keeps a per-user
    index (:class:`~websession.stores.UserIndex`): a dict from user id to that
    user's keys, kept in step by every write, so :meth:`sessions_for` costs
    O(that user's sessions).
    """

    inline = True
    max_payload_size: int | None = None

    def __init__(self, *, clock: Clock = default_clock) -> None:
        self._entries: dict[str, Entry] = {}
        self._users: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._entries)} entries>)"

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            return None
        return _copy(entry)

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        now = self._clock()
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.expires <= now:
                self._drop(key)
                current = None
            # Inline rather than base.next_version: a call costs this store ~3% of a save.
            if expected_version is None:
                if current is not None:
                    raise Conflict("a session with this key already exists")
                version = 1
            elif current is None:
                raise Gone("the session was deleted meanwhile")
            elif current.version != expected_version:
                raise Conflict("the session was saved by another request")
            else:
                version = expected_version + 1
            if ttl <= 0:
                self._drop(key)
                return version
            previous = current.user_id if current is not None else None
            if previous != meta.user_id:
                self._unindex(key, previous)
                if meta.user_id is not None:
                    self._users.setdefault(meta.user_id, set()).add(key)
            self._entries[key] = Entry(
                payload,
                version,
                meta.created,
                meta.last_seen,
                now + ttl,
                meta.user_id,
                meta.ip,
                meta.user_agent,
            )
            return version

    def touch(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.expires <= now:
                return False
            if ttl <= 0:
                self._drop(key)
                return False
            entry.expires = now + ttl
            entry.last_seen = now
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: str) -> Entry | None:
        """Remove ``key`` and its index entry; the caller holds the lock."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._unindex(key, entry.user_id)
        return entry

    def _unindex(self, key: str, user_id: str | None) -> None:
        if user_id is None:
            return
        keys = self._users.get(user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[user_id]

    def delete_expired(self, limit: int = 1000) -> int:
        check_limit(limit)
        now = self._clock()
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.expires <= now][:limit]
            for key in doomed:
                self._drop(key)
        return len(doomed)

    def pop_expired(self, limit: int = 1000) -> list[tuple[str, str | None]]:
        """Remove up to ``limit`` expired entries and say which: ``(key, user_id)`` pairs."""
        check_limit(limit)
        now = self._clock()
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.expires <= now][:limit]
            gone = []
            for key in doomed:
                entry = self._drop(key)
                gone.append((key, entry.user_id if entry is not None else None))
        return gone

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        now = self._clock()
        with self._lock:
            items = list(self._entries.items())
        count = 0
        for key, entry in sorted(items, key=lambda item: item[1].last_seen, reverse=True):
            if entry.expires <= now or not key.startswith(prefix):
                continue
            if user_id is not None and entry.user_id != user_id:
                continue
            yield key, entry
            count += 1
            if limit is not None and count >= limit:
                return

    # -- the per-user index ----------------------------------------------------

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first.

        Expired sessions met on the way are removed, index entry and all.
        """
        now = self._clock()
        found: list[tuple[str, Entry]] = []
        with self._lock:
            for key in list(self._users.get(user_id, ())):
                entry = self._entries.get(key)
                if entry is None or entry.user_id != user_id:
                    self._unindex(key, user_id)
                elif entry.expires <= now:
                    self._drop(key)
                else:
                    found.append((key, _copy(entry)))
        found.sort(key=lambda item: item[1].last_seen, reverse=True)
        return found

    def revoke(self, key: str) -> bool:
        """Delete one session; False if it was not there (or had expired)."""
        now = self._clock()
        with self._lock:
            entry = self._drop(key)
        return entry is not None and entry.expires > now

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every live session of ``user_id`` except the keys in ``keep``; return how many."""
        now = self._clock()
        kept = set(keep)
        revoked = 0
        with self._lock:
            for key in list(self._users.get(user_id, ())):
                if key in kept:
                    continue
                entry = self._drop(key)
                if entry is not None and entry.expires > now:
                    revoked += 1
        return revoked


def _copy(entry: Entry) -> Entry:
    # A copy, so a caller changing what it got cannot change the store.
    return Entry(
        entry.payload, entry.version, entry.created, entry.last_seen, entry.expires,
        entry.user_id, entry.ip, entry.user_agent,
    )  # fmt: skip


class AsyncMemoryStore(InlineAsyncUserIndex):
    """Async form of :class:`MemoryStore` (runs inline on the event loop)."""

    sync: MemoryStore

    def __init__(self, store: MemoryStore | None = None, *, clock: Clock = default_clock) -> None:
        super().__init__(store if store is not None else MemoryStore(clock=clock))
