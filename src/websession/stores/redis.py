"""RedisStore and AsyncRedisStore: sessions in Redis, expiry by Redis' own TTL.

Record layout: one string value per session at ``<prefix><key>``: a fixed
46-byte header (format tag ``W2``, version, created, last seen, expires, and
the lengths of user id, IP and user agent), those three strings, then the
payload (``_network.HEADER``, the layout MemcachedStore shares). Chosen
over one HASH per session with a field per item because:

- ``load`` is one plain ``GET``: the header carries the absolute expiry
  (the store clock's now + the TTL, written by every save and touch), so
  nothing but the value is needed. ``EVALSHA`` of a ``GET`` + ``PTTL``
  script, the previous format's load, costs 1.14x-1.22x a raw ``GET``
  (measured), the whole margin a load is allowed; a hash needs ``HMGET``
  of eight fields, which costs more still;
- the save script compares the version (bytes 2-9, ``GETRANGE``) with the
  expected one and writes with one ``SET ... PX``; the new version is
  computed by the caller (it is always expected + 1), so the script builds
  no strings;
- ``touch`` overwrites last seen and expires in place: one ``SETRANGE`` of
  the 16 adjacent bytes;
- memory: a hash whose payload field passes 64 bytes leaves the compact
  listpack encoding and costs several hundred bytes more per session.

Records of the previous format, ``W1`` (the same header without expires:
38 bytes, the lengths at 26-37), are still read and written, so sessions
saved by earlier builds survive a rolling deploy. A ``GET`` that
finds one asks for its ``PTTL`` in one more round trip; ``save`` accepts
the expected version whatever the tag and always writes ``W2``; ``touch``
keeps it ``W1`` (it sets last seen at the same offset, the expiry is the
TTL it sets); ``revoke`` reads the user at either offset. The previous
release cannot read ``W2``: a request it serves after this one saved the
session starts a new session.

Every operation is one round trip: ``load`` is one ``GET``, ``save`` and
``touch`` are Lua scripts called by ``EVALSHA`` (one ``EVAL`` after the
server lost its script cache, which also re-caches them), ``delete`` is
one ``DEL``. Each command touches exactly one key, so the same calls work
on Redis Cluster, where the client routes them by key (a node that never
saw a script answers NOSCRIPT and gets the ``EVAL``). The client is
injected or built from a URL (``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://``, ``redis+sentinel://``), so Cluster and Sentinel need
no other store class.

Expiry is native: every write sets the TTL in the same script (``SET PX``,
``PEXPIRE``) and Redis drops the key when it ends. The header's expires is
what ``Entry.expires`` shows, and a record whose expires the store clock
has reached loads as expired even if Redis still holds it for a moment.
Both come from one TTL, so they agree as long as the application's clock
agrees with the Redis server's; a TTL changed by hand (``PEXPIRE``,
``PERSIST``) is not seen by the header.

The per-user index is one SET per user at ``<prefix>user:<sha256 of the user
id>`` holding the keys of that user's sessions. On a standalone server (and
behind Sentinel) the save script also adds the key to it, in the same atomic
script and round trip (both keys are passed as ``KEYS``). On Cluster the two
keys live in different slots, so the script cannot touch the index: it
reports when the session's user changed, and only then (a login, or the first
save of a signed-in session) the store updates the index with one more,
pipelined round trip. An anonymous session, or an update that keeps its
user, costs nothing extra anywhere. Index sets have no TTL (a touch extends a
session without knowing its user, so a TTL could end the index before the
session); members whose session ended or now belongs to someone else are
pruned whenever the index is read (``sessions_for``, ``revoke_user``). Reads
check every member against its record, so the index never shows another
user's session; on Cluster it is eventually consistent: a crash between the
save and the index update leaves that session out of the index.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import math
import struct
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import Conflict, Gone, SessionConfigError, StoreError, StoreUnavailable
from ..urls import mask_url
from ._network import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._network import entry_from, host_port, pack, seconds, unpack
from ._redis_lane import lane_for
from .base import Clock, Entry, Meta, check_limit, default_clock

__all__ = ["AsyncRedisStore", "RedisStore"]

#: Redis' largest string value (proto-max-bulk-len's default).
MAX_PAYLOAD_SIZE = 512 * 1024 * 1024
CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379

#: The record's format tag (the layout is ``_network.HEADER``); the scripts below hard-code
#: its offsets.
_TAG = b"W2"
#: The earlier format: the same without expires, which came from ``PTTL``.
_W1_HEADER = struct.Struct(">2sQddIII")
_W1_HEADER_SIZE = _W1_HEADER.size
_W1_TAG = b"W1"
_VERSION = struct.Struct(">Q")
#: Last seen and expires: adjacent (bytes 18-33), so a touch writes both with one SETRANGE.
_TIMES = struct.Struct(">dd")
_CONFLICT = -1
_GONE = -2
_EXISTS = -3
# Errors that mean "cannot serve right now" rather than "bad request" (BusyLoadingError,
# "LOADING", is a ConnectionError).
_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    MasterDownError,
    ClusterDownError,
    TryAgainError,
    # Raised by the cluster client when no node answers or a slot has no node.
    RedisClusterException,
)
#: What a failing command raises: server and client errors, and the cluster client's own.
_FAILURES = (RedisError, RedisClusterException)

#: One round trip an operation asks for: the name of the store's I/O method
#: (``_command``, ``_pipelined`` or ``_eval``) and its arguments. The sync store
#: runs it as it is, the async one awaits it (``_run``); the reply is sent back.
_Step = tuple[str, tuple[Any, ...]]
_Steps = Generator[_Step, Any, Any]


class _Script:
    """A Lua script and its SHA1, the name ``EVALSHA`` knows it by."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body.strip().encode()
        # Bytes, like every other argument: redis-py then sends them without re-encoding.
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()


# Where the scripts find the user id in a record's first 46 bytes (GETRANGE
# 0 45, '' for a missing key): W2 has the user id's length + 1 at bytes 34-37
# and the user id from byte 46, W1 at 26-29 and from 38. Lua counts from 1:
# `at` is the length's position, the user id spans bytes at + 11 to at + 9 +
# length (0-based, as GETRANGE takes them). 0 when `head` is no session record.
_USER_AT = """
local function user_at(head)
  local tag = string.sub(head, 1, 2)
  if tag == 'W2' and #head == 46 then return 35 end
  if tag == 'W1' and #head >= 38 then return 27 end
  return 0
end
local function user_of(key, head, at)
  local lu = struct.unpack('>I4', head, at)
  if lu == 0 then return '' end
  return '=' .. redis.call('GETRANGE', key, at + 11, at + 9 + lu)
end
"""

# KEYS[2], only on a single server and only with a user: that user's index,
# which gets ARGV[5], the key without the prefix.
# ARGV: expected version (8 bytes; '' = create), TTL in ms ('0' = delete),
# the new value, the new user as '=' .. id ('' = none). Replies -1 (stale
# version, or a value that is no session record), -2 (gone), -3 (exists on
# create); on success 1 when the session's user did not change, else the
# previous user as '=' .. id ('' = none), so the caller can fix the index.
# The version sits at bytes 2-9 in both formats: a W1 record of the previous
# release is updated like a W2 one, and the new value is always W2.
_SAVE = _Script(
    _USER_AT
    + """
local key = KEYS[1]
local head = redis.call('GETRANGE', key, 0, 45)
local at = user_at(head)
if ARGV[1] == '' then
  if head ~= '' then return -3 end
elseif head == '' then
  return -2
elseif at == 0 or string.sub(head, 3, 10) ~= ARGV[1] then
  return -1
end
local previous = ''
if at > 0 then previous = user_of(key, head, at) end
if ARGV[2] == '0' then
  if head ~= '' then redis.call('DEL', key) end
  if previous == '' then return 1 end
  return previous
end
redis.call('SET', key, ARGV[3], 'PX', ARGV[2])
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[5]) end
if previous == ARGV[4] then return 1 end
return previous
"""
)

# ARGV[1]: the user the session must belong to, as '=' .. id ('' = anyone).
# Deletes it and replies its user as '=' .. id ('' = none); nil when there is
# no such session. One key per call, so it runs on Cluster too.
_REVOKE = _Script(
    _USER_AT
    + """
local head = redis.call('GETRANGE', KEYS[1], 0, 45)
local at = user_at(head)
if at == 0 then return false end
local user = user_of(KEYS[1], head, at)
if ARGV[1] ~= '' and user ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return user
"""
)

# ARGV: TTL in ms, last seen and expires (16 bytes). A W2 record gets both at
# bytes 18-33; a W1 record (earlier builds) only last seen at 18-25, its
# expiry being the TTL. A missing key, or a value that is no session record,
# answers 0 and is left alone, so a gone session is never re-created.
_TOUCH = _Script("""
local key = KEYS[1]
local tag = redis.call('GETRANGE', key, 0, 1)
local times = ARGV[2]
if tag == 'W1' then
  times = string.sub(times, 1, 8)
elseif tag ~= 'W2' then
  return 0
end
redis.call('PEXPIRE', key, ARGV[1])
redis.call('SETRANGE', key, 18, times)
return 1
""")


def _ttl_ms(ttl: float) -> bytes:
    """``ttl`` seconds as whole milliseconds, rounded up so a TTL is never shortened."""
    if ttl <= 0:
        return b"0"
    return str(max(1, math.ceil(ttl * 1000))).encode()


def _user_mark(user_id: str | None) -> bytes:
    """How the scripts name a user: ``=`` + the id, or empty for none."""
    return b"" if user_id is None else b"=" + user_id.encode()


def _marked_user(mark: bytes) -> str | None:
    return mark[1:].decode(errors="replace") if mark else None


def _unpack_w1(value: bytes, expires: float) -> Entry | None:
    """A record of the previous format, whose expiry the caller read with ``PTTL``.

    (A ``W2`` record is read by ``unpack(_TAG, value)``.)
    """
    if value[:2] != _W1_TAG or len(value) < _W1_HEADER_SIZE:
        return None
    _tag, version, created, last_seen, lu, li, la = _W1_HEADER.unpack_from(value)
    return entry_from(value, _W1_HEADER_SIZE, version, created, last_seen, expires, lu, li, la)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _describe_client(client: Any) -> str:
    """A password-free URL-like name for a client the user built, for error messages."""
    startup = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if isinstance(startup, Mapping):  # a RedisCluster client, keyed by "host:port"
        return f"{CLUSTER_SCHEME}://{','.join(startup)}"
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if isinstance(service, str):  # a Sentinel master client
        sentinels = getattr(getattr(pool, "sentinel_manager", None), "sentinels", [])
        hosts = ",".join(_describe_client(sentinel).split("/")[2] for sentinel in sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{service}"
    kwargs: Mapping[str, Any] | None = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, Mapping):
        return f"<{type(client).__name__}>"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


class _MultiHostURL:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL taken apart.

    redis-py has no URL form for either, and ``urlsplit`` cannot read a
    comma-separated host list, so the network location is read here.
    """

    def __init__(self, url: str, kind: str, default_port: int) -> None:
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        self.username: str | None = None
        self.password: str | None = None
        if userinfo:
            user, colon, password = userinfo.partition(":")
            self.username = unquote(user) or None
            self.password = unquote(password) if colon else None
        self.nodes = [host_port(kind, url, item, default_port) for item in hosts.split(",")]
        self.path = [unquote(piece) for piece in parts.path.split("/") if piece]
        self.options: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in ("socket_timeout", "socket_connect_timeout"):
                raise SessionConfigError(
                    f"{kind}: unknown option {name!r} in {mask_url(url)!r}; the URL takes "
                    "prefix, socket_timeout and socket_connect_timeout, other client options "
                    "go in as keyword arguments"
                )
            try:
                self.options[name] = seconds(kind, name, float(value))
            except ValueError:
                raise SessionConfigError(
                    f"{kind} option {name}={value!r} must be seconds > 0"
                ) from None

    def auth(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}


class _RedisCommon(abc.ABC):
    """What the sync and async stores share: configuration, encoding and decoding of replies.

    The I/O methods live in the two subclasses and differ only by ``await``.
    ``load``, ``save`` and ``touch`` (every request) are written out in each;
    the per-user index operations are written once, as generators of
    :data:`_Step` that each form's ``_run`` carries out.
    """

    inline = False
    #: Redis expires keys itself: `websession gc` has nothing to do.
    native_ttl = True
    max_payload_size: int | None = MAX_PAYLOAD_SIZE
    #: The redis-py flavour (sync or asyncio) of clients built from a URL.
    _client_module: Any = redis
    _retry_module: Any = redis.retry
    _cluster_module: Any = redis.cluster
    _sentinel_module: Any = redis.sentinel

    def __init__(
        self,
        client_or_url: Any,
        *,
        prefix: str = "websession:",
        clock: Clock = default_clock,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        **client_options: Any,
    ) -> None:
        kind = type(self).__name__
        #: The Sentinel manager behind a master client the store built (closed with it).
        self._sentinel: Any = None
        if isinstance(client_or_url, str):
            url, query_prefix = _split_prefix(client_or_url)
            if query_prefix is not None:
                prefix = query_prefix
            self.url = mask_url(url)
            timeouts = {
                "socket_timeout": seconds(kind, "socket_timeout", socket_timeout),
                "socket_connect_timeout": seconds(
                    kind, "socket_connect_timeout", socket_connect_timeout
                ),
            }
            if client_options.get("decode_responses"):
                raise SessionConfigError(f"{kind} needs decode_responses=False: payloads are bytes")
            scheme = urlsplit(url).scheme.lower()
            try:
                if scheme == CLUSTER_SCHEME:
                    self.client = self._cluster_client(kind, url, timeouts, client_options)
                elif scheme == SENTINEL_SCHEME:
                    self.client = self._sentinel_client(kind, url, timeouts, client_options)
                else:
                    options = {**timeouts, "retry": self._connection_retry(), **client_options}
                    self.client = self._client_module.Redis.from_url(url, **options)
            except SessionConfigError:
                raise
            except ValueError as exc:
                raise SessionConfigError(f"{kind}: bad Redis URL {self.url!r}: {exc}") from None
            self._owned = True
        else:
            if socket_timeout is not None or socket_connect_timeout is not None or client_options:
                raise SessionConfigError(
                    f"{kind}: timeouts and client options apply only to a client built from a "
                    "URL; set them on the client you pass"
                )
            self._check_client(client_or_url)
            self.client = client_or_url
            self.url = _describe_client(client_or_url)
            self._owned = False
        if not isinstance(prefix, str):
            raise SessionConfigError(f"{kind} option prefix={prefix!r} must be a string")
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._clock = clock
        #: On Cluster the index cannot be updated inside the save script (another slot).
        self._cluster = isinstance(self.client, _PendingCluster) or hasattr(
            self.client, "nodes_manager"
        )
        #: Connections of its own for GET and EVALSHA (plain clients only; see _redis_lane).
        self._lane: Any = lane_for(self.client, asynchronous=isinstance(self, AsyncRedisStore))
        #: Sends the per-request commands (GET, EVALSHA): on the lane, else through the
        #: client (a cluster stand-in forwards to the client that replaces it).
        self._send: Callable[..., Any] = (
            self._lane.execute if self._lane is not None else self.client.execute_command
        )

    @abc.abstractmethod
    def _check_client(self, client: Any) -> None:
        """Done differently by the sync and the async form."""

    def _connection_retry(self) -> Any:
        # One immediate retry on a broken connection (e.g. a server restart);
        # never on a timeout, and never the library's default of several with
        # back-off, which would hold a request for seconds.
        return self._retry_module.Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))

    def _cluster_options(
        self, kind: str, url: str, timeouts: dict[str, float], client_options: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Startup nodes and keyword arguments for a ``RedisCluster`` from a cluster URL."""
        parsed = _MultiHostURL(url, kind, 6379)
        if parsed.path not in ([], ["0"]):
            raise SessionConfigError(
                f"{kind}: Redis Cluster has only database 0; remove the path from {self.url!r}"
            )
        options = {
            **timeouts,
            **parsed.options,
            # The cluster client retries once itself (after re-reading the slot
            # map); its node connections retry nothing.
            "retry": self._retry_module.Retry(NoBackoff(), 1),
            **parsed.auth(),
            **client_options,
        }
        nodes = [self._cluster_module.ClusterNode(host, port) for host, port in parsed.nodes]
        return nodes, options

    def _cluster_client(
        self, kind: str, url: str, timeouts: dict[str, float], client_options: dict[str, Any]
    ) -> Any:
        nodes, options = self._cluster_options(kind, url, timeouts, client_options)
        return self._cluster_module.RedisCluster(startup_nodes=nodes, **options)

    def _sentinel_client(
        self, kind: str, url: str, timeouts: dict[str, float], client_options: dict[str, Any]
    ) -> Any:
        """A master client that asks the Sentinels where the master is, on every new connection."""
        parsed = _MultiHostURL(url, kind, DEFAULT_SENTINEL_PORT)
        if not 1 <= len(parsed.path) <= 2 or (
            len(parsed.path) == 2 and not parsed.path[1].isdigit()
        ):
            raise SessionConfigError(
                f"{kind}: {self.url!r} must name the service, and may name a database: "
                "redis+sentinel://host:26379[,host:26379]/service_name[/db]"
            )
        service = parsed.path[0]
        db = int(parsed.path[1]) if len(parsed.path) == 2 else 0
        client_options = dict(client_options)
        # The Sentinels themselves get the timeouts; their password (if any)
        # comes through sentinel_kwargs, the URL's belongs to the master.
        sentinel_kwargs = {
            **timeouts,
            **parsed.options,
            **client_options.pop("sentinel_kwargs", {}),
        }
        options = {
            **timeouts,
            **parsed.options,
            "retry": self._connection_retry(),
            "db": db,
            **parsed.auth(),
            **client_options,
        }
        self._sentinel = self._sentinel_module.Sentinel(
            parsed.nodes, sentinel_kwargs=sentinel_kwargs, **options
        )
        return self._sentinel.master_for(service)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _index_key(self, user_id: str) -> bytes:
        # Hashed: a user id's length is unbounded, and braces in it would act as
        # a Cluster hash tag.
        digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self._prefix + b"user:" + digest.encode()

    def _save_call(
        self, key: str, ttl: float, meta: Meta, args: tuple[bytes, ...]
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The save script's keys and arguments: with the user's index on a single server."""
        if meta.user_id is None or ttl <= 0 or self._cluster:
            return (self._key(key),), args
        return (self._key(key), self._index_key(meta.user_id)), (*args, key.encode())

    def _index_fixes(
        self, key: str, reply: Any, ttl: float, meta: Meta
    ) -> list[tuple[str | bytes, ...]]:
        """Index commands a successful save still needs: none unless the user changed."""
        if reply == 1:
            return []
        member = key.encode()
        fixes: list[tuple[str | bytes, ...]] = []
        previous = _marked_user(bytes(reply))
        if previous is not None:
            fixes.append(("SREM", self._index_key(previous), member))
        if self._cluster and ttl > 0 and meta.user_id is not None:
            fixes.append(("SADD", self._index_key(meta.user_id), member))
        return fixes

    def _error(self, exc: RedisError | RedisClusterException) -> StoreError:
        if isinstance(exc, _UNAVAILABLE) or (
            isinstance(exc, ResponseError) and str(exc).startswith("BUSY ")
        ):
            return StoreUnavailable(f"Redis at {self.url} is unavailable: {exc}")
        return StoreError(f"Redis at {self.url} refused a session command: {exc}")

    def _save_args(
        self, payload: bytes, expected_version: int | None, ttl: float, meta: Meta
    ) -> tuple[int, tuple[bytes, bytes, bytes, bytes]]:
        """The version a successful save gives, and the save script's arguments."""
        if expected_version is None:
            version, expected = 1, b""
        else:
            version, expected = expected_version + 1, _VERSION.pack(expected_version)
        ttl_ms = _ttl_ms(ttl)
        expires = self._clock() + ttl
        value = b"" if ttl_ms == b"0" else pack(_TAG, version, payload, meta, expires)
        return version, (expected, ttl_ms, value, _user_mark(meta.user_id))

    def _touch_args(self, ttl: float) -> tuple[bytes, bytes]:
        """The touch script's arguments: the TTL in ms, then last seen and expires."""
        now = self._clock()
        return _ttl_ms(ttl), _TIMES.pack(now, now + ttl)

    @staticmethod
    def _saved(reply: Any, version: int) -> int:
        if reply == 1 or isinstance(reply, bytes):
            return version
        if reply == _GONE:
            raise Gone("the session was deleted meanwhile")
        if reply == _EXISTS:
            raise Conflict("a session with this key already exists")
        if reply == _CONFLICT:
            raise Conflict("the session was saved by another request")
        raise StoreError(f"the save script answered {reply!r}, which this version cannot read")

    def _live(self, entry: Entry | None) -> Entry | None:
        """``entry`` unless the store clock has reached its expiry."""
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def _legacy_entry(self, value: bytes, pttl: Any) -> Entry | None:
        """A ``W1`` record (the earlier format) and the ``PTTL`` read after it."""
        if not isinstance(pttl, int) or pttl == -2:
            return None  # gone meanwhile (or the read failed)
        # -1: someone removed the TTL by hand; the session lives until deleted.
        expires = math.inf if pttl < 0 else self._clock() + pttl / 1000
        return self._live(_unpack_w1(value, expires))

    def _parse_batch(
        self, names: list[bytes], values: list[Any], user_id: str | None
    ) -> tuple[list[tuple[str, Entry]], list[tuple[bytes, bytes]]]:
        """Pipelined ``GET`` replies read: the live entries, and the ``W1`` records found.

        The ``W1`` ones still need their ``PTTL`` (:meth:`_legacy_batch`).
        """
        skip = len(self._prefix)
        found: list[tuple[str, Entry]] = []
        legacy: list[tuple[bytes, bytes]] = []
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, bytes):
                continue  # gone meanwhile, or not a string (a foreign key under the prefix)
            if value[:2] == _W1_TAG:
                legacy.append((name, value))
                continue
            entry = self._live(unpack(_TAG, value))
            if entry is not None and (user_id is None or entry.user_id == user_id):
                found.append((name[skip:].decode(errors="replace"), entry))
        return found, legacy

    def _legacy_batch(
        self, legacy: list[tuple[bytes, bytes]], pttls: list[Any], user_id: str | None
    ) -> list[tuple[str, Entry]]:
        skip = len(self._prefix)
        found: list[tuple[str, Entry]] = []
        for (name, value), pttl in zip(legacy, pttls, strict=True):
            entry = self._legacy_entry(value, pttl)
            if entry is not None and (user_id is None or entry.user_id == user_id):
                found.append((name[skip:].decode(errors="replace"), entry))
        return found

    def _current(self, value: bytes | None) -> Entry | None:
        """The live entry a ``GET`` found; None for none, an expired or a foreign value.

        A ``W1`` record is the caller's to read: it needs its ``PTTL``.
        """
        if value is None:
            return None
        entry = unpack(_TAG, value)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    # -- operations written once, as round trips each form's ``_run`` carries out -----

    def _read_batch(self, names: list[bytes], user_id: str | None) -> _Steps:
        """The live sessions among ``names`` (of ``user_id``): one pipelined ``GET`` each.

        ``W1`` records (the earlier format) need their ``PTTL``: one
        more pipelined round trip, only when there are some.
        """
        if not names:
            return []
        values = yield "_pipelined", ([("GET", name) for name in names], False)
        found, legacy = self._parse_batch(names, values, user_id)
        if legacy:
            pttls = yield "_pipelined", ([("PTTL", name) for name, _ in legacy], False)
            found.extend(self._legacy_batch(legacy, pttls, user_id))
        return found

    def _sessions_for(self, user_id: str) -> _Steps:
        index = self._index_key(user_id)
        members = [bytes(m) for m in (yield "_command", ("SMEMBERS", index))]
        found = yield from self._read_batch([self._prefix + m for m in members], user_id)
        stale = self._stale(members, found)
        if stale:
            yield "_command", ("SREM", index, *stale)
        return _by_last_seen(found)

    def _revoke(self, key: str) -> _Steps:
        mark = yield "_eval", (_REVOKE, (self._key(key),), b"")
        if mark is None:
            return False
        user_id = _marked_user(bytes(mark))
        if user_id is not None:
            yield "_pipelined", ([("SREM", self._index_key(user_id), key.encode())],)
        return True

    def _revoke_user(self, user_id: str, keep: Collection[str]) -> _Steps:
        index = self._index_key(user_id)
        kept = {k.encode() for k in keep}
        members = [bytes(m) for m in (yield "_command", ("SMEMBERS", index))]
        doomed = [member for member in members if member not in kept]
        if not doomed:
            return 0
        mark = _user_mark(user_id)
        evals = [("EVAL", _REVOKE.body, b"1", self._prefix + member, mark) for member in doomed]
        replies = yield "_pipelined", (evals,)
        yield "_pipelined", ([("SREM", index, *doomed)],)
        return _revoked(replies)

    def _matches(self, prefix: str) -> str:
        return _glob_escape(self.prefix + prefix) + "*"

    def _stale(self, members: list[bytes], found: list[tuple[str, Entry]]) -> list[bytes]:
        live = {key.encode() for key, _ in found}
        return [member for member in members if member not in live]


def _by_last_seen(found: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
    found.sort(key=lambda item: item[1].last_seen, reverse=True)
    return found


def _revoked(replies: list[Any]) -> int:
    """How many revoke scripts deleted a session (the others found none of the user's)."""
    return sum(reply is not None for reply in replies)


def _split_prefix(url: str) -> tuple[str, str | None]:
    """Take websession's own ``prefix`` query parameter out of a Redis URL."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = None
    kept = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            kept.append((name, value))
    if prefix is None:
        return url, None
    return parts._replace(query=urlencode(kept)).geturl(), prefix


class RedisStore(_RedisCommon):
    """Sessions in Redis: a standalone server, a Cluster, or a master found through Sentinel.

    ``client_or_url`` is a URL, from which the store builds its own client:
    ``redis://`` / ``rediss://`` / ``unix://`` (``redis.Redis``),
    ``redis+cluster://host:port[,host:port...]`` (``redis.cluster.RedisCluster``)
    or ``redis+sentinel://host:port[,host:port]/service_name[/db]`` (a Sentinel
    master client). ``socket_timeout`` and ``socket_connect_timeout`` default
    to 2 s; other keyword arguments go to the redis-py client. Or it is a
    client you built (``redis.Redis``, ``RedisCluster``, ``Sentinel.master_for``),
    which the store uses as it is and never closes. Keys are ``prefix`` + the
    hashed session id. Connection failures and timeouts raise
    :class:`~websession.errors.StoreUnavailable` naming the server (password
    masked).
    """

    #: The redis-py client (``redis.Redis``, ``RedisCluster`` or a compatible one).
    client: Any

    def _cluster_client(
        self, kind: str, url: str, timeouts: dict[str, float], client_options: dict[str, Any]
    ) -> Any:
        nodes, options = self._cluster_options(kind, url, timeouts, client_options)

        def build() -> Any:
            return redis.cluster.RedisCluster(startup_nodes=nodes, **options)

        try:
            return build()
        except _FAILURES:
            # The synchronous client reads the slot map as it is built; with the
            # cluster down, the store starts anyway and builds it on first use.
            return _PendingCluster(self, build)

    def _check_client(self, client: Any) -> None:
        execute = getattr(client, "execute_command", None)
        if (
            not callable(execute)
            or inspect.iscoroutinefunction(execute)
            or isinstance(client, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster)
        ):
            raise SessionConfigError(
                f"RedisStore needs a synchronous redis client or a URL, not {client!r}; "
                "use AsyncRedisStore for redis.asyncio clients"
            )
        _refuse_decoding(client, "RedisStore")

    def _eval(self, script: _Script, keys: tuple[bytes, ...], *args: bytes) -> Any:
        execute = self._send
        count = str(len(keys)).encode()
        try:
            try:
                return execute("EVALSHA", script.sha, count, *keys, *args)
            except NoScriptError:
                # The server lost its script cache (restart, SCRIPT FLUSH): EVAL
                # runs the script and caches it again.
                return execute("EVAL", script.body, count, *keys, *args)
        except _FAILURES as exc:
            raise self._error(exc) from exc

    def _command(self, *args: Any) -> Any:
        try:
            return self.client.execute_command(*args)
        except _FAILURES as exc:
            raise self._error(exc) from exc

    def _run(self, steps: _Steps) -> Any:
        """Carry out the round trips of an operation written once (see ``_RedisCommon``)."""
        reply: Any = None
        while True:
            try:
                method, args = steps.send(reply)
            except StopIteration as done:
                return done.value
            reply = getattr(self, method)(*args)

    def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One ``GET``.

        A record of the earlier format (``W1``) costs one more
        round trip, a ``PTTL``, for its expiry.
        """
        name = self._prefix + key.encode()
        try:
            value = self._send("GET", name)
            if value is None or value[:2] != _W1_TAG:
                return self._current(value)
            pttl = self.client.execute_command("PTTL", name)
        except _FAILURES as exc:
            raise self._error(exc) from exc
        return self._legacy_entry(value, pttl)

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Version-checked write, new TTL and version bump in one atomic script.

        One round trip, index included, except when the session's user changed
        on Cluster or left a session that is deleted (see the module docstring).
        """
        version, args = self._save_args(payload, expected_version, ttl, meta)
        keys, call_args = self._save_call(key, ttl, meta, args)
        reply = self._eval(_SAVE, keys, *call_args)
        version = self._saved(reply, version)
        fixes = self._index_fixes(key, reply, ttl, meta)
        if fixes:
            self._pipelined(fixes)
        return version

    def _pipelined(
        self, commands: Sequence[tuple[str | bytes, ...]], raise_on_error: bool = True
    ) -> list[Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = pipe.execute(raise_on_error=raise_on_error)
        except _FAILURES as exc:
            raise self._error(exc) from exc
        return replies

    def touch(self, key: str, ttl: float) -> bool:
        """Set the TTL to ``ttl``, last seen to now, expires to now + ``ttl``; False if gone."""
        if ttl <= 0:
            self.delete(key)
            return False
        return bool(self._eval(_TOUCH, (self._key(key),), *self._touch_args(ttl)))

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent). One ``DEL``."""
        self._command("DEL", self._key(key))

    def delete_expired(self, limit: int = 1000) -> int:
        """Return 0: Redis removes expired sessions itself (native TTL), so there is nothing to do.

        ``websession gc`` may still call it; the limit is checked like everywhere.
        """
        check_limit(limit)
        return 0

    def entries(
        self, *, prefix: str = "", user_id: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """Live entries whose key starts with ``prefix`` (and belong to ``user_id``).

        Newest ``last_seen`` first. An administrative scan (``websession ls``):
        it walks the whole keyspace with ``SCAN`` and reads the matches in
        pipelined batches, so its cost grows with the number of keys in the
        database, not with the result.
        """
        found: list[tuple[str, Entry]] = []
        try:
            batch: list[bytes] = []
            for name in self.client.scan_iter(match=self._matches(prefix), count=1000):
                batch.append(bytes(name))
                if len(batch) >= 500:
                    found.extend(self._run(self._read_batch(batch, user_id)))
                    batch = []
            found.extend(self._run(self._read_batch(batch, user_id)))
        except _FAILURES as exc:
            raise self._error(exc) from exc
        found.sort(key=lambda item: item[1].last_seen, reverse=True)
        yield from found if limit is None else found[:limit]

    # -- the per-user index ----------------------------------------------------

    def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first.

        Two round trips: ``SMEMBERS`` of the user's index, then one pipelined
        read of those sessions; members whose session ended (or changed user)
        are removed from the index with one more.
        """
        found: list[tuple[str, Entry]] = self._run(self._sessions_for(user_id))
        return found

    def revoke(self, key: str) -> bool:
        """Delete one session and drop it from its user's index; False if it was not there."""
        return bool(self._run(self._revoke(key)))

    def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every session of ``user_id`` except the keys in ``keep``; return how many.

        Each delete checks, inside a script, that the session still belongs to
        ``user_id``. Three round trips, whatever the number of sessions.
        """
        return int(self._run(self._revoke_user(user_id, keep)))

    def close(self) -> None:
        """Close the idle connections of a client the store built (a client you passed stays open).

        Safe while other threads still use the store: their connections are left
        alone, and the next call opens a new one. The connections the store
        opened for its per-request commands are closed in either case.
        """
        if self._lane is not None:
            self._lane.close()
        if not self._owned:
            return
        client = self.client
        pools: list[Any]
        if isinstance(client, _PendingCluster):
            pools = []
        elif hasattr(client, "nodes_manager"):  # a cluster: one pool per node
            nodes = [node.redis_connection for node in client.get_nodes()]
            pools = [node.connection_pool for node in nodes if node is not None]
        else:
            pools = [client.connection_pool]
        if self._sentinel is not None:
            pools.extend(sentinel.connection_pool for sentinel in self._sentinel.sentinels)
        for pool in pools:
            pool.disconnect(inuse_connections=False)


class _PendingCluster:
    """Stands in for a cluster client that reached no node when the store was built.

    Each call tries to build the client again, so it fails like any call to a
    cluster that is down (StoreUnavailable); the first build that succeeds
    replaces this stand-in for good. Two threads may both build one; the
    spare is dropped.
    """

    def __init__(self, store: RedisStore, build: Callable[[], Any]) -> None:
        self._store = store
        self._build = build

    def __repr__(self) -> str:
        return "<RedisCluster, not connected yet>"

    def _client(self) -> Any:
        client = self._store.client
        if client is self:
            client = self._store.client = self._build()
        return client

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self._client().execute_command(*args, **options)

    def scan_iter(self, *args: Any, **options: Any) -> Any:
        return self._client().scan_iter(*args, **options)

    def pipeline(self, *args: Any, **options: Any) -> Any:
        return self._client().pipeline(*args, **options)


def _refuse_decoding(client: Any, kind: str) -> None:
    get_encoder = getattr(client, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    if getattr(encoder, "decode_responses", False):
        raise SessionConfigError(
            f"{kind} needs a client with decode_responses=False: session payloads are bytes"
        )


class AsyncRedisStore(_RedisCommon):
    """The asyncio form of :class:`RedisStore` (``redis.asyncio``), for the ASGI middleware.

    Same arguments and URLs; a client you pass must be a ``redis.asyncio``
    one (``Redis``, ``cluster.RedisCluster``, ``sentinel.Sentinel.master_for``).
    ``await store.aclose()`` closes a client the store built.
    """

    #: The ``redis.asyncio`` client (``Redis``, ``RedisCluster`` or a compatible one).
    client: Any
    _client_module = redis.asyncio
    _retry_module = redis.asyncio.retry
    _cluster_module = redis.asyncio.cluster
    _sentinel_module = redis.asyncio.sentinel

    def _check_client(self, client: Any) -> None:
        execute = getattr(client, "execute_command", None)
        if not callable(execute) or not inspect.iscoroutinefunction(execute):
            raise SessionConfigError(
                f"AsyncRedisStore needs a redis.asyncio client or a URL, not {client!r}; "
                "use RedisStore for synchronous clients"
            )
        _refuse_decoding(client, "AsyncRedisStore")

    async def _eval(self, script: _Script, keys: tuple[bytes, ...], *args: bytes) -> Any:
        execute = self._send
        count = str(len(keys)).encode()
        try:
            try:
                return await execute("EVALSHA", script.sha, count, *keys, *args)
            except NoScriptError:
                return await execute("EVAL", script.body, count, *keys, *args)
        except _FAILURES as exc:
            raise self._error(exc) from exc

    async def _command(self, *args: Any) -> Any:
        try:
            return await self.client.execute_command(*args)
        except _FAILURES as exc:
            raise self._error(exc) from exc

    async def _run(self, steps: _Steps) -> Any:
        """Carry out the round trips of an operation written once (see ``_RedisCommon``)."""
        reply: Any = None
        while True:
            try:
                method, args = steps.send(reply)
            except StopIteration as done:
                return done.value
            reply = await getattr(self, method)(*args)

    async def load(self, key: str) -> Entry | None:
        """The live entry for ``key``; None when unknown or expired. One ``GET``.

        A record of the earlier format (``W1``) costs one more
        round trip, a ``PTTL``, for its expiry.
        """
        name = self._prefix + key.encode()
        try:
            value = await self._send("GET", name)
            if value is None or value[:2] != _W1_TAG:
                return self._current(value)
            pttl = await self.client.execute_command("PTTL", name)
        except _FAILURES as exc:
            raise self._error(exc) from exc
        return self._legacy_entry(value, pttl)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        """Version-checked write, new TTL and version bump in one atomic script.

        See :meth:`RedisStore.save` for when the index costs one more round trip.
        """
        version, args = self._save_args(payload, expected_version, ttl, meta)
        keys, call_args = self._save_call(key, ttl, meta, args)
        reply = await self._eval(_SAVE, keys, *call_args)
        version = self._saved(reply, version)
        fixes = self._index_fixes(key, reply, ttl, meta)
        if fixes:
            await self._pipelined(fixes)
        return version

    async def _pipelined(
        self, commands: Sequence[tuple[str | bytes, ...]], raise_on_error: bool = True
    ) -> list[Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        except _FAILURES as exc:
            raise self._error(exc) from exc
        return replies

    async def touch(self, key: str, ttl: float) -> bool:
        """Set the TTL to ``ttl``, last seen to now, expires to now + ``ttl``; False if gone."""
        if ttl <= 0:
            await self.delete(key)
            return False
        return bool(await self._eval(_TOUCH, (self._key(key),), *self._touch_args(ttl)))

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent). One ``DEL``."""
        await self._command("DEL", self._key(key))

    async def delete_expired(self, limit: int = 1000) -> int:
        """Return 0: Redis removes expired sessions itself (native TTL); nothing to do."""
        check_limit(limit)
        return 0

    async def sessions_for(self, user_id: str) -> list[tuple[str, Entry]]:
        """The live sessions of ``user_id``, most recently seen first (see the sync form)."""
        found: list[tuple[str, Entry]] = await self._run(self._sessions_for(user_id))
        return found

    async def revoke(self, key: str) -> bool:
        """Delete one session and drop it from its user's index; False if it was not there."""
        return bool(await self._run(self._revoke(key)))

    async def revoke_user(self, user_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete every session of ``user_id`` except the keys in ``keep``; return how many."""
        return int(await self._run(self._revoke_user(user_id, keep)))

    async def aclose(self) -> None:
        """Close a client the store built (a client you passed stays open), and the
        connections the store opened for its per-request commands."""
        if self._lane is not None:
            await self._lane.aclose()
        if self._owned:
            await self.client.aclose()
            if self._sentinel is not None:
                await self._sentinel.aclose()
