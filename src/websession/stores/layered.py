"""LayeredStore and AsyncLayeredStore: a fast cache in front of a durable store.

Django's ``cached_db`` idea with websession's contract: reads try the cache
(Redis, memory) and fall back to the durable store (SQL, SQLite, files),
filling the cache; writes go to the durable store first, whose
compare-and-swap is the only one that decides (a version found in the cache is
never trusted for it), then to the cache. A cache that fails degrades the
store to durable-only with a logged warning; a durable store that fails is an
error.

No stale read after a write or a delete
---------------------------------------
The danger is a cache write that arrives late: request A saves version 2 to
the durable store, request B saves version 3 and puts it in the cache, then
A's cache write of version 2 lands and every later read sees version 2. The
same happens to a reader that filled the cache from an old read, and to any
writer racing a delete (which would bring a logged-out session back). So:

- A cache record carries the durable version it copies (a small header before
  the payload, inside the cache's own payload). A cache write is "put if
  newer": load the record, and write only if it is absent, expired or holds an
  older durable version, with the cache's own compare-and-swap on the cache's
  version; a Conflict there means someone else wrote, so look again. Durable
  versions only grow while a session lives, so an older copy never replaces a
  newer one, whoever writes last.
- A delete (``delete``, ``revoke``, a save with a TTL of zero, Gone, a touch
  that finds nothing) writes a tombstone instead of removing the record. Put
  if newer never replaces a tombstone, and a read that meets one goes to the
  durable store and fills nothing, so a late copy cannot resurrect the
  session. Tombstones live ``tombstone_ttl`` seconds (default one hour).
- Versions restart at 1 when a key is created again after a delete, which the
  tombstone covers, or after expiry, which the cache record shares (its TTL
  is the durable expiry, never longer).
- A cache write that would start more than ``tombstone_ttl / 2`` seconds after
  its durable operation (a thread stalled that long) is dropped and the
  record removed instead, so it cannot outlive the tombstone it must respect.
- On a durable Conflict the cache may be the reason (an earlier cache write
  failed), so the current durable entry is put in it before the Conflict is
  raised: the flow's reload then sees the version that won.

When the cache cannot be reached during a write, that write cannot correct
it; the cache may then serve the previous version until the next write or the
record's expiry. ``max_cache_ttl`` bounds how long that can be.

Cost: a cache hit is one cache call; a save is one durable save plus two cache
calls (load, save); a miss adds a durable load and two cache calls.
"""

from __future__ import annotations

import inspect
import logging
import struct
import time
from collections.abc import AsyncIterator, Collection, Generator, Iterator
from typing import Any, NamedTuple

from ..errors import Conflict, Gone, SessionConfigError, StoreError
from .base import AsyncStore, Clock, Entry, Meta, Store, default_clock

__all__ = ["AsyncLayeredStore", "LayeredStore"]

log = logging.getLogger("websession")

DEFAULT_TOMBSTONE_TTL = 3600.0
#: Seconds between two warnings about a failing cache.
WARNING_INTERVAL = 30.0
#: Cache compare-and-swap attempts before a cache write gives up and removes the record.
_ATTEMPTS = 8
_HEADER = struct.Struct(">2scQ")
_TAG = b"WL"
_DATA = b"D"
_TOMBSTONE = b"T"
_CACHE = 0
_DURABLE = 1


class _Call(NamedTuple):
    """One call the logic asks a driver to make on the cache or the durable store."""

    target: int
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


_Steps = Generator[_Call, Any, Any]
#: "The cache record is not known yet: load it."
_UNKNOWN: Any = object()


def _call(target: int, method: str, *args: Any, **kwargs: Any) -> _Call:
    return _Call(target, method, args, kwargs)


def _record(kind: bytes, version: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(_TAG, kind, version) + payload


def _read(value: bytes) -> tuple[bytes, int] | None:
    """The kind and durable version of a cache record; None for anything else."""
    if len(value) < _HEADER.size or value[:2] != _TAG:
        return None
    _tag, kind, version = _HEADER.unpack_from(value)
    return kind, version


def _outranks(value: bytes, version: int) -> bool:
    """Whether a cache record must stay rather than give way to a copy of ``version``."""
    found = _read(value)
    return found is not None and (found[0] == _TOMBSTONE or found[1] >= version)


class _Layers:
    """The decisions of every operation, as calls a sync or async driver carries out."""

    def __init__(
        self,
        cache: Any,
        durable: Any,
        *,
        clock: Clock,
        tombstone_ttl: float,
        max_cache_ttl: float | None,
    ) -> None:
        kind = type(self).__name__
        for name, value in (("tombstone_ttl", tombstone_ttl), ("max_cache_ttl", max_cache_ttl)):
            if value is None and name == "max_cache_ttl":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise SessionConfigError(f"{kind} option {name}={value!r} must be seconds > 0")
        if cache is durable:
            raise SessionConfigError(f"{kind} needs two different stores, got {cache!r} twice")
        self.cache = cache
        self.durable = durable
        self.max_payload_size: int | None = durable.max_payload_size
        self._clock = clock
        self._tombstone_ttl = float(tombstone_ttl)
        self._stall = self._tombstone_ttl / 2
        self._max_cache_ttl = max_cache_ttl
        limit = cache.max_payload_size
        self._cache_limit = None if limit is None else limit - _HEADER.size
        self._warned = -WARNING_INTERVAL

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cache={self.cache!r}, durable={self.durable!r})"

    # -- the cache, failures absorbed -------------------------------------------------------

    def _cached(self, method: str, *args: Any, **kwargs: Any) -> _Steps:
        """Call the cache; ``(True, result)``, or ``(False, None)`` when it failed.

        Conflict and Gone are the cache's answers, not failures: they reach the caller.
        """
        try:
            return True, (yield _call(_CACHE, method, *args, **kwargs))
        except (Conflict, Gone):
            raise
        except StoreError as exc:
            now = time.monotonic()
            if now - self._warned >= WARNING_INTERVAL:
                self._warned = now
                log.warning(
                    "the session cache %r failed (%s); using %r alone until it is back",
                    self.cache,
                    exc,
                    self.durable,
                )
            return False, None

    def _put(self, key: str, entry: Entry, started: float, current: Any) -> _Steps:
        """Put ``entry`` (durable form) in the cache unless the cache holds something newer."""
        ttl = entry.expires - self._clock()
        if self._max_cache_ttl is not None:
            ttl = min(ttl, self._max_cache_ttl)
        if ttl <= 0:
            return
        if self._cache_limit is not None and len(entry.payload) > self._cache_limit:
            # Too big for the cache: this session is served by the durable store alone.
            yield from self._bury(key)
            return
        value = _record(_DATA, entry.version, entry.payload)
        for _attempt in range(_ATTEMPTS):
            if current is _UNKNOWN:
                ok, current = yield from self._cached("load", key)
                if not ok:
                    return
            expected = None
            if current is not None:
                if current.expires > self._clock() and _outranks(current.payload, entry.version):
                    return
                expected = current.version
            if time.monotonic() - started > self._stall:
                break  # too late to be sure no tombstone came and went meanwhile
            try:
                yield from self._cached(
                    "save", key, value, expected_version=expected, ttl=ttl, meta=entry.meta
                )
                return
            except (Conflict, Gone):
                current = _UNKNOWN
        # In doubt, no copy at all: the next read fills from the durable store.
        yield from self._cached("delete", key)

    def _bury(self, key: str) -> _Steps:
        """Replace whatever the cache holds for ``key`` with a tombstone."""
        now = self._clock()
        value = _record(_TOMBSTONE, 0)
        current: Any = _UNKNOWN
        for _attempt in range(_ATTEMPTS):
            if current is _UNKNOWN:
                ok, current = yield from self._cached("load", key)
                if not ok:
                    return
            expected = None if current is None else current.version
            try:
                yield from self._cached(
                    "save",
                    key,
                    value,
                    expected_version=expected,
                    ttl=self._tombstone_ttl,
                    meta=Meta(now, now),
                )
                return
            except (Conflict, Gone):
                current = _UNKNOWN
        yield from self._cached("delete", key)

    def _refresh(self, key: str) -> _Steps:
        entry = yield _call(_DURABLE, "load", key)
        if entry is None:
            yield from self._bury(key)
        else:
            yield from self._put(key, entry, time.monotonic(), _UNKNOWN)

    # -- the operations ---------------------------------------------------------------------

    def _load(self, key: str) -> _Steps:
        ok, cached = yield from self._cached("load", key)
        fill = ok
        if cached is not None:
            found = _read(cached.payload)
            if found is not None and found[0] == _TOMBSTONE:
                fill = False
            elif found is not None and cached.expires > self._clock():
                return Entry(
                    cached.payload[_HEADER.size :], found[1], cached.created, cached.last_seen,
                    cached.expires, cached.user_id, cached.ip, cached.user_agent,
                )  # fmt: skip
        entry = yield _call(_DURABLE, "load", key)
        if entry is not None and fill:
            yield from self._put(key, entry, time.monotonic(), cached)
        return entry

    def _save(
        self, key: str, payload: bytes, expected_version: int | None, ttl: float, meta: Meta
    ) -> _Steps:
        # Read before the durable store reads its own clock, so the cache copy never
        # outlives the durable record.
        expires = self._clock() + ttl
        try:
            version = yield _call(
                _DURABLE, "save", key, payload,
                expected_version=expected_version, ttl=ttl, meta=meta,
            )  # fmt: skip
        except Gone:
            yield from self._bury(key)
            raise
        except Conflict:
            yield from self._refresh(key)
            raise
        started = time.monotonic()
        if ttl <= 0:
            yield from self._bury(key)
        else:
            entry = Entry(
                payload, version, meta.created, meta.last_seen, expires,
                meta.user_id, meta.ip, meta.user_agent,
            )  # fmt: skip
            yield from self._put(key, entry, started, _UNKNOWN)
        return version

    def _touch(self, key: str, ttl: float) -> _Steps:
        alive = yield _call(_DURABLE, "touch", key, ttl)
        if not alive or ttl <= 0:
            yield from self._bury(key)
            return False
        if self._max_cache_ttl is not None:
            ttl = min(ttl, self._max_cache_ttl)
        # Extends the copy (or a tombstone, which then keeps reads on the durable store).
        yield from self._cached("touch", key, ttl)
        return True

    def _delete(self, key: str) -> _Steps:
        yield _call(_DURABLE, "delete", key)
        yield from self._bury(key)

    def _delete_expired(self, limit: int) -> _Steps:
        removed = yield _call(_DURABLE, "delete_expired", limit)
        yield from self._cached("delete_expired", limit)
        return removed

    def _sessions_for(self, user_id: str) -> _Steps:
        self._need("sessions_for")
        return (yield _call(_DURABLE, "sessions_for", user_id))

    def _revoke(self, key: str) -> _Steps:
        self._need("revoke")
        revoked = yield _call(_DURABLE, "revoke", key)
        yield from self._bury(key)
        return revoked

    def _revoke_user(self, user_id: str, keep: Collection[str]) -> _Steps:
        # One key at a time, each buried after it went: a bulk delete could remove
        # a session created after the listing, whose cache copy would then live on.
        self._need("revoke_user")
        if isinstance(keep, str):
            raise SessionConfigError("keep= takes a collection of keys, not one key as a string")
        kept = set(keep)
        revoked = 0
        for key, _entry in (yield _call(_DURABLE, "sessions_for", user_id)):
            if key in kept:
                continue
            if (yield _call(_DURABLE, "revoke", key)):
                revoked += 1
            yield from self._bury(key)
        return revoked

    def _need(self, method: str) -> None:
        if not callable(getattr(self.durable, method, None)):
            raise StoreError(
                f"{type(self).__name__}: the durable store {self.durable!r} keeps no per-user "
                f"index ({method})"
            )


class LayeredStore(_Layers):
    """A cache store in front of a durable store, with no stale reads (see the module docs).

    ``LayeredStore(RedisStore("redis://cache"), SQLStore("postgresql://db/app"))``:
    both are ordinary stores, built and owned by you (``close()`` closes
    neither). Versions are the durable store's. ``tombstone_ttl`` is how long
    a deleted session stays marked in the cache; ``max_cache_ttl`` caps how
    long any copy lives there.
    """

    def __init__(
        self,
        cache: Store,
        durable: Store,
        *,
        clock: Clock = default_clock,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        max_cache_ttl: float | None = None,
    ) -> None:
        for role, store in (("cache", cache), ("durable", durable)):
            if not isinstance(store, Store) or inspect.iscoroutinefunction(store.load):
                raise SessionConfigError(f"LayeredStore: the {role} store {store!r} is not a Store")
        super().__init__(
            cache, durable, clock=clock, tombstone_ttl=tombstone_ttl, max_cache_ttl=max_cache_ttl
        )
        self.inline = bool(cache.inline and durable.inline)

    def _run(self, steps: _Steps) -> Any:
        send: Any = None
        throw: StoreError | None = None
        while True:
            try:
                call = steps.throw(throw) if throw is not None else steps.send(send)
            except StopIteration as done:
                return done.value
            throw = None
            store = self.cache if call.target == _CACHE else self.durable
            try:
                send = getattr(store, call.method)(*call.args, **call.kwargs)
            except StoreError as exc:  # handed to the logic, which decides
                send = None
                throw = exc

    def load(self, key: str) -> Entry | None:
        """The cache's copy, or the durable store's entry (which then fills the cache)."""
        result: Entry | None = self._run(self._load(key))
        return result

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Version-checked save on the durable store, then put in the cache if newer."""
        return int(self._run(self._save(key, payload, expected_version, ttl, meta)))

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the durable entry, then the cache's copy; False if the session is gone."""
        return bool(self._run(self._touch(key, ttl)))

    def delete(self, key: str) -> None:
        """Delete from the durable store, then leave a tombstone in the cache."""
        self._run(self._delete(key))

    def delete_expired(self, limit: int = 1000) -> int:
        """The durable store's clean-up (the cache's own runs too); the durable count."""
        return int(self._run(self._delete_expired(limit)))

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """The durable store's entries (``websession ls``); the cache is not consulted."""
        entries = getattr(self.durable, "entries", None)
        if not callable(entries):
            raise StoreError(f"LayeredStore: the durable store {self.durable!r} cannot list")
        yield from entries(prefix=prefix, user_id=user_id, limit=limit)

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The durable store's per-user index."""
        return list(self._run(self._sessions_for(user_id)))

    def revoke(self, key: str) -> bool:
        """Revoke on the durable store, then leave a tombstone in the cache."""
        return bool(self._run(self._revoke(key)))

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Revoke each of the user's sessions but ``keep`` on the durable store, burying each."""
        return int(self._run(self._revoke_user(user_id, keep)))


class AsyncLayeredStore(_Layers):
    """The asyncio form of :class:`LayeredStore`: two async stores, the same rules."""

    inline = False

    def __init__(
        self,
        cache: AsyncStore,
        durable: AsyncStore,
        *,
        clock: Clock = default_clock,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        max_cache_ttl: float | None = None,
    ) -> None:
        for role, store in (("cache", cache), ("durable", durable)):
            if not isinstance(store, AsyncStore) or not inspect.iscoroutinefunction(store.load):
                raise SessionConfigError(
                    f"AsyncLayeredStore: the {role} store {store!r} is not an AsyncStore"
                )
        super().__init__(
            cache, durable, clock=clock, tombstone_ttl=tombstone_ttl, max_cache_ttl=max_cache_ttl
        )

    async def _run(self, steps: _Steps) -> Any:
        send: Any = None
        throw: StoreError | None = None
        while True:
            try:
                call = steps.throw(throw) if throw is not None else steps.send(send)
            except StopIteration as done:
                return done.value
            throw = None
            store = self.cache if call.target == _CACHE else self.durable
            try:
                send = await getattr(store, call.method)(*call.args, **call.kwargs)
            except StoreError as exc:  # handed to the logic, which decides
                send = None
                throw = exc

    async def load(self, key: str) -> Entry | None:
        """The cache's copy, or the durable store's entry (which then fills the cache)."""
        result: Entry | None = await self._run(self._load(key))
        return result

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Version-checked save on the durable store, then put in the cache if newer."""
        return int(await self._run(self._save(key, payload, expected_version, ttl, meta)))

    async def touch(self, key: str, ttl: float) -> bool:
        """Extend the durable entry, then the cache's copy; False if the session is gone."""
        return bool(await self._run(self._touch(key, ttl)))

    async def delete(self, key: str) -> None:
        """Delete from the durable store, then leave a tombstone in the cache."""
        await self._run(self._delete(key))

    async def delete_expired(self, limit: int = 1000) -> int:
        """The durable store's clean-up (the cache's own runs too); the durable count."""
        return int(await self._run(self._delete_expired(limit)))

    async def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, Entry]]:
        """The durable store's entries; the cache is not consulted."""
        entries = getattr(self.durable, "entries", None)
        if not callable(entries):
            raise StoreError(f"AsyncLayeredStore: the durable store {self.durable!r} cannot list")
        async for item in entries(prefix=prefix, user_id=user_id, limit=limit):
            yield item

    async def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The durable store's per-user index."""
        return list(await self._run(self._sessions_for(user_id)))

    async def revoke(self, key: str) -> bool:
        """Revoke on the durable store, then leave a tombstone in the cache."""
        return bool(await self._run(self._revoke(key)))

    async def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Revoke each of the user's sessions but ``keep`` on the durable store, burying each."""
        return int(await self._run(self._revoke_user(user_id, keep)))
