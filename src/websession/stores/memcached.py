"""MemcachedStore and AsyncMemcachedStore: sessions in memcached, versioned with its CAS.

Record layout: one value per session at ``<prefix><key>``: a fixed 46-byte
header (format tag ``M1``, version, created, last seen, expires, and the
lengths of user id, IP and user agent), those three strings, then the
payload. memcached cannot report an item's remaining lifetime, so the
expiry is kept in the header, and an entry whose header says it expired is
treated as gone even while memcached (whose clock ticks in whole seconds)
still holds it.

Concurrency: a create is one ``add`` (which fails when the key exists); an
update or a touch reads the item with ``gets`` and writes with ``cas`` and
the token it got, so a write that landed in between makes the ``cas`` fail
instead of being overwritten. A ttl of zero or less writes an immediately
expired tombstone through the same ``cas``, so a stale request cannot delete
a newer save. A load is one ``gets``.

Sessions on several servers are spread by rendezvous hashing of the key,
without failover: while a server is down, the sessions on it are
unavailable (503) rather than silently moved, which could later bring back
a stale copy of a session, or one that was logged out.

No per-user index (``sessions_for``, ``revoke_user``): memcached has no sets
and no multi-key atomicity, and it evicts items on its own when memory runs
short, so an index kept in it could silently lose a session that it should
list. "Log out everywhere" that quietly misses a device is worse than none;
the store says so instead (:class:`UserIndexUnsupported`). Use Redis or an
SQL store when you need the index.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.client.hash import HashClient  # type: ignore[import-untyped]
from pymemcache.client.rendezvous import RendezvousHash  # type: ignore[import-untyped]
from pymemcache.exceptions import (  # type: ignore[import-untyped]
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from ..errors import Conflict, Gone, SessionConfigError, StoreError, StoreUnavailable
from ..urls import mask_url
from ._network import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._network import HEADER_SIZE, host_port, pack, seconds, unpack
from .base import Clock, Entry, Meta, check_limit, default_clock

__all__ = ["AsyncMemcachedStore", "MemcachedStore", "UserIndexUnsupported"]

DEFAULT_PORT = 11211
#: memcached's default largest item (``-I 1m``).
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024
#: Room kept in an item for the key, the header and the metadata strings.
ITEM_OVERHEAD = 8 * 1024
#: memcached reads an expiry above this many seconds as an absolute Unix time.
RELATIVE_LIMIT = 30 * 24 * 3600
#: cas attempts of one update or touch while only touches change the item.
ATTEMPTS = 5

#: The record's format tag (the layout is :mod:`._network`'s, shared with RedisStore).
_TAG = b"M1"
_SEEN_AND_EXPIRES = struct.Struct(">dd")
_SEEN_OFFSET = 18
_SEEN_END = _SEEN_OFFSET + _SEEN_AND_EXPIRES.size
_EXPIRES = struct.Struct(">d")
_EXPIRES_OFFSET = 26
#: What a tombstone write sends: memcached drops an item with a negative expiry at once.
_EXPIRED_NOW = -1


class UserIndexUnsupported(StoreError, AttributeError):
    """The store keeps no per-user index, so it cannot list or revoke a user's sessions.

    Also an :class:`AttributeError`, so ``hasattr(store, "sessions_for")`` is
    False and ``isinstance(store, UserIndex)`` tells the truth.
    """


_NO_INDEX = (
    "{kind} keeps no per-user index, so it cannot list or revoke a user's sessions: "
    "memcached has no sets or multi-key updates and evicts items on its own, so an index "
    "could silently miss a session. Use RedisStore or SQLStore for 'log out everywhere', "
    "or revoke single sessions with delete(key)"
)


class _NoUserIndex:
    """Answers ``sessions_for``, ``revoke`` and ``revoke_user`` with the reason they are missing.

    Through ``__getattr__``, not methods or properties: ``isinstance(store,
    UserIndex)`` looks the names up on the class and must not find them.
    Hidden from type checkers, which would otherwise accept any attribute.
    """

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> NoReturn:
            if name in ("sessions_for", "revoke", "revoke_user"):
                raise UserIndexUnsupported(_NO_INDEX.format(kind=type(self).__name__))
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def exptime(ttl: float, now: float | None = None) -> int:
    """``ttl`` seconds as a memcached expiry, never shorter than ``ttl``.

    memcached's clock ticks in whole seconds, so an item set to live ``n``
    seconds may go up to a second early: one second more keeps the TTL
    whole. Above 30 days memcached reads the number as an absolute Unix time
    (``now`` is the real time, as the server's clock knows it).
    """
    seconds = math.ceil(ttl) + 1
    if seconds <= RELATIVE_LIMIT:
        return seconds
    return math.ceil(time.time() if now is None else now) + seconds


def _is_session(value: Any) -> bool:
    return isinstance(value, bytes) and value[:2] == _TAG and len(value) >= HEADER_SIZE


def _expired(value: bytes, now: float) -> bool:
    expires: float = _EXPIRES.unpack_from(value, _EXPIRES_OFFSET)[0]
    return expires <= now


class _Pool:
    """Idle single-connection clients for one server, handed to one thread at a time.

    pymemcache's ``Client`` is one socket and not thread-safe; its
    ``PooledClient.close`` also closes clients other threads are using.
    This pool closes only idle ones.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._build()

    def release(self, client: Any) -> None:
        # A client whose call failed has closed its socket and reconnects on its next call.
        with self._lock:
            self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()


class _Shared:
    """A client the user passed: used as it is, one call at a time if it is not thread-safe."""

    def __init__(self, client: Any) -> None:
        self.client = client
        single = isinstance(client, Client) or (
            isinstance(client, HashClient) and not client.use_pooling
        )
        self._lock = threading.Lock() if single else None

    def acquire(self) -> Any:
        if self._lock is not None:
            self._lock.acquire()
        return self.client

    def release(self, client: Any) -> None:
        if self._lock is not None:
            self._lock.release()

    def close(self) -> None:
        """A client the user passed is theirs to close."""


def _parse_url(url: str, kind: str) -> tuple[list[tuple[str, int]], str | None, dict[str, float]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "memcached" or not parts.netloc or "@" in parts.netloc:
        raise SessionConfigError(
            f"{kind}: {mask_url(url)!r} is not a memcached URL such as memcached://127.0.0.1:11211 "
            "(memcached has no passwords in its text protocol)"
        )
    if parts.path not in ("", "/"):
        raise SessionConfigError(
            f"{kind}: memcached has no databases; remove the path from {url!r}"
        )
    servers = []
    for item in parts.netloc.split(","):
        host, port = host_port(kind, url, item, DEFAULT_PORT)
        servers.append((unquote(host), port))
    prefix = None
    timeouts: dict[str, float] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name in ("socket_timeout", "socket_connect_timeout"):
            try:
                timeouts[name] = float(value)
            except ValueError:
                raise SessionConfigError(
                    f"{kind} option {name}={value!r} must be seconds > 0"
                ) from None
        else:
            raise SessionConfigError(
                f"{kind}: unknown option {name!r} in {url!r}; the URL takes prefix, "
                "socket_timeout and socket_connect_timeout, other client options go in as "
                "keyword arguments"
            )
    return servers, prefix, timeouts


def _connector(server: tuple[str, int], options: dict[str, Any]) -> Callable[[], Any]:
    def connect() -> Any:
        return Client(server, **options)

    return connect


class MemcachedStore(_NoUserIndex):
    """Sessions in memcached: fast and shared by every worker, but a cache, not a database.

    ``client_or_url`` is ``memcached://host:port[,host:port...]`` (keys are
    spread over several servers by rendezvous hashing, with no failover), from
    which the store builds its own connections (``socket_timeout`` and
    ``socket_connect_timeout`` default to 2 s; other keyword arguments go to
    ``pymemcache.Client``), or a pymemcache ``Client``, ``PooledClient`` or
    ``HashClient`` you built, used as it is and never closed. Keys are
    ``prefix`` + the hashed session id. memcached may evict any session when
    it runs short of memory, which logs that user out.
    ``max_item_size`` is the server's ``-I`` setting. It keeps no per-user
    index: ``sessions_for`` and the revoke methods raise
    :class:`UserIndexUnsupported` (see the module docstring).
    """

    inline = False
    #: memcached expires items itself: `websession gc` has nothing to do.
    native_ttl = True

    def __init__(
        self,
        client_or_url: Any,
        *,
        prefix: str = "websession:",
        clock: Clock = default_clock,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
        **client_options: Any,
    ) -> None:
        kind = type(self).__name__
        self._pools: dict[str, _Pool | _Shared]
        self._hasher: Any
        self._single: _Pool | _Shared | None
        if isinstance(client_or_url, str):
            servers, query_prefix, query_timeouts = _parse_url(client_or_url, kind)
            if query_prefix is not None:
                prefix = query_prefix
            options = {
                "timeout": seconds(
                    kind, "socket_timeout", query_timeouts.get("socket_timeout", socket_timeout)
                ),
                "connect_timeout": seconds(
                    kind,
                    "socket_connect_timeout",
                    query_timeouts.get("socket_connect_timeout", socket_connect_timeout),
                ),
                "no_delay": True,
                **client_options,
            }
            for name in ("serde", "serializer", "deserializer", "key_prefix"):
                if name in options:
                    raise SessionConfigError(
                        f"{kind} writes bytes with its own key prefix; drop {name}="
                    )
            names = [f"{host}:{port}" for host, port in servers]
            self._pools = {
                name: _Pool(_connector(server, options))
                for name, server in zip(names, servers, strict=True)
            }
            self._hasher = RendezvousHash(nodes=names) if len(names) > 1 else None
            self._single = None if self._hasher else self._pools[names[0]]
            self.url = "memcached://" + ",".join(names)
        else:
            if socket_timeout is not None or socket_connect_timeout is not None or client_options:
                raise SessionConfigError(
                    f"{kind}: timeouts and client options apply only to a client built from a "
                    "URL; set them on the client you pass"
                )
            needed = ("gets", "cas", "add", "delete")
            if not all(callable(getattr(client_or_url, name, None)) for name in needed):
                raise SessionConfigError(
                    f"{kind} needs a memcached:// URL or a pymemcache client, not {client_or_url!r}"
                )
            shared = _Shared(client_or_url)
            self._pools = {"client": shared}
            self._hasher = None
            self._single = shared
            self.url = f"<{type(client_or_url).__name__} {getattr(client_or_url, 'server', '')}>"
        if not isinstance(prefix, str) or not prefix.isascii() or not prefix.isprintable():
            raise SessionConfigError(f"{kind} option prefix={prefix!r} must be printable ASCII")
        if " " in prefix or len(prefix) > 150:
            raise SessionConfigError(
                f"{kind} option prefix={prefix!r} must have no spaces and at most 150 characters "
                "(memcached keys are at most 250 bytes)"
            )
        if isinstance(max_item_size, bool) or not isinstance(max_item_size, int):
            raise SessionConfigError(f"{kind} option max_item_size must be an int of bytes")
        if max_item_size <= 2 * ITEM_OVERHEAD:
            raise SessionConfigError(f"{kind} option max_item_size={max_item_size} is too small")
        #: Largest payload that fits in one item beside the key and the metadata.
        self.max_payload_size: int | None = max_item_size - ITEM_OVERHEAD
        self.prefix = prefix
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"

    def _call(self, key: str, command: str, *args: Any, **options: Any) -> Any:
        """The pymemcache ``command`` for ``key`` on the server that holds it, errors translated.

        The writes (``add``, ``cas``, ``delete``) are called with ``noreply=False``, so they
        wait for their reply whatever the client's default (``gets`` always does).
        """
        full = self.prefix + key
        pool = self._single
        if pool is None:
            pool = self._pools[self._hasher.get_node(full)]
        client = pool.acquire()
        try:
            return getattr(client, command)(full, *args, **options)
        except (OSError, MemcacheError) as exc:
            raise self._error(exc) from exc
        finally:
            pool.release(client)

    def _error(self, exc: OSError | MemcacheError) -> StoreError:
        message = str(exc)
        if (
            isinstance(exc, OSError | MemcacheUnexpectedCloseError)
            or (isinstance(exc, MemcacheServerError) and "out of memory" in message.lower())
            # A HashClient whose servers are all marked dead.
            or (type(exc) is MemcacheError and "down" in message)
        ):
            return StoreUnavailable(f"memcached at {self.url} is unavailable: {exc}")
        return StoreError(f"memcached at {self.url} refused a session command: {exc}")

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One ``gets``."""
        value, _ = self._call(key, "gets")
        if not _is_session(value):
            return None
        entry = unpack(_TAG, value)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Create with ``add``, or update with ``gets`` + ``cas``; a ttl <= 0 deletes."""
        now = self._clock()
        if expected_version is None:
            self._create(key, payload, ttl, meta, now)
            return 1
        version = expected_version + 1
        if ttl <= 0:
            value, expire = b"", _EXPIRED_NOW
        else:
            value, expire = pack(_TAG, version, payload, meta, now + ttl), exptime(ttl)
        for _ in range(ATTEMPTS):
            current, token = self._call(key, "gets")
            if current is None or (_is_session(current) and _expired(current, now)):
                raise Gone("the session was deleted meanwhile")
            if not _is_session(current) or _unpack_version(current) != expected_version:
                raise Conflict("the session was saved by another request")
            stored = self._call(key, "cas", value, token, expire=expire, noreply=False)
            if stored:
                return version
            if stored is None:
                raise Gone("the session was deleted meanwhile")
            # Changed since the gets: a touch (same version: try again) or a save.
        raise Conflict("the session kept changing while this request saved it")

    def _create(self, key: str, payload: bytes, ttl: float, meta: Meta, now: float) -> None:
        value = pack(_TAG, 1, payload, meta, now + ttl) if ttl > 0 else b""
        expire = exptime(ttl) if ttl > 0 else _EXPIRED_NOW
        if ttl > 0 and self._call(key, "add", value, expire=expire, noreply=False):
            return
        # The key is taken (or nothing is to be stored): by a live session, a
        # foreign value, or a session whose expiry passed by our clock but not
        # yet by memcached's whole seconds, which may be replaced.
        for _ in range(ATTEMPTS):
            current, token = self._call(key, "gets")
            if current is not None and not (_is_session(current) and _expired(current, now)):
                raise Conflict("a session with this key already exists")
            if ttl <= 0:
                return
            if current is None:
                if self._call(key, "add", value, expire=expire, noreply=False):
                    return
                continue
            if self._call(key, "cas", value, token, expire=expire, noreply=False):
                return
        raise Conflict("a session with this key already exists")

    def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry to now + ``ttl`` and set last seen; False if the key is gone.

        ``gets`` + ``cas``: the header holds the expiry and last seen, so the
        item is rewritten (memcached's own ``touch`` changes only its TTL).
        """
        if ttl <= 0:
            self.delete(key)
            return False
        now = self._clock()
        times = _SEEN_AND_EXPIRES.pack(now, now + ttl)
        expire = exptime(ttl)
        for _ in range(ATTEMPTS):
            current, token = self._call(key, "gets")
            if not _is_session(current) or _expired(current, now):
                return False
            value = b"".join((current[:_SEEN_OFFSET], times, current[_SEEN_END:]))
            stored = self._call(key, "cas", value, token, expire=expire, noreply=False)
            if stored:
                return True
            if stored is None:
                return False
        return True  # saved again and again meanwhile: each save set a fresh expiry

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent). One ``delete``."""
        self._call(key, "delete", noreply=False)

    def delete_expired(self, limit: int = 1000) -> int:
        """Return 0: memcached drops expired items itself (native TTL); nothing to do."""
        check_limit(limit)
        return 0

    def close(self) -> None:
        """Close the idle connections the store opened (a client you passed stays open).

        Safe while other threads still use the store: their connections are
        left alone, and the next call opens a new one.
        """
        for pool in self._pools.values():
            pool.close()


def _unpack_version(value: bytes) -> int:
    version: int = struct.unpack_from(">Q", value, 2)[0]
    return version


class AsyncMemcachedStore(_NoUserIndex):
    """The asyncio form of :class:`MemcachedStore`, for the ASGI middleware.

    Same arguments. pymemcache has no asyncio client, so each call runs the
    synchronous store in a worker thread (``asyncio.to_thread``); the store's
    own connection pool gives each thread its own connection.
    """

    inline = False
    native_ttl = True

    def __init__(self, client_or_url: Any, **options: Any) -> None:
        #: The synchronous store every call runs in a thread.
        self.sync = MemcachedStore(client_or_url, **options)
        self.max_payload_size = self.sync.max_payload_size
        self.prefix = self.sync.prefix
        self.url = self.sync.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"

    async def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired."""
        return await asyncio.to_thread(self.sync.load, key)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Version-checked write; see :meth:`MemcachedStore.save`."""
        return await asyncio.to_thread(
            lambda: self.sync.save(
                key, payload, expected_version=expected_version, ttl=ttl, meta=meta
            )
        )

    async def touch(self, key: str, ttl: float) -> bool:
        """Extend the expiry and set last seen; False if the key is gone."""
        return await asyncio.to_thread(self.sync.touch, key, ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        await asyncio.to_thread(self.sync.delete, key)

    async def delete_expired(self, limit: int = 1000) -> int:
        """Return 0: memcached drops expired items itself."""
        check_limit(limit)
        return 0

    async def aclose(self) -> None:
        """Close the idle connections the store opened."""
        self.sync.close()
