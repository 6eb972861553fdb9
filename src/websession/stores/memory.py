"""MemoryStore: sessions in a dict, for tests, development and single-process apps."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import Conflict, Gone
from .base import Clock, Entry, InlineAsyncStore, Meta, check_limit, default_clock

__all__ = ["AsyncMemoryStore", "MemoryStore"]


class MemoryStore:
    """In-process store. Sessions vanish with the process and are not shared between workers.

    Thread-safe; versioned saves like every server store.
    """

    inline = True
    max_payload_size: int | None = None

    def __init__(self, *, clock: Clock = default_clock) -> None:
        self._entries: dict[str, Entry] = {}
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
        return Entry(
            entry.payload,
            entry.version,
            entry.created,
            entry.last_seen,
            entry.expires,
            entry.user_id,
            entry.ip,
            entry.user_agent,
        )

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        now = self._clock()
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.expires <= now:
                del self._entries[key]
                current = None
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
                self._entries.pop(key, None)
                return version
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
                del self._entries[key]
                return False
            entry.expires = now + ttl
            entry.last_seen = now
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def delete_expired(self, limit: int = 1000) -> int:
        check_limit(limit)
        now = self._clock()
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.expires <= now][:limit]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

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


class AsyncMemoryStore(InlineAsyncStore):
    """Async form of :class:`MemoryStore` (runs inline on the event loop)."""

    def __init__(self, store: MemoryStore | None = None, *, clock: Clock = default_clock) -> None:
        super().__init__(store if store is not None else MemoryStore(clock=clock))
