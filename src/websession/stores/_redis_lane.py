"""The per-request Redis commands (``GET``, ``EVALSHA``) on connections kept ready for them.

redis-py's ``execute_command`` checks a connection out of the client's pool,
records metrics, wraps the call in the retry policy and checks the connection
back in: with redis-py 8 about 130,000 instructions for one ``GET``, where
sending the command and reading the reply take about 18,000. A session store
makes that call on every request, so :class:`Lane` keeps a few connections of
its own, built exactly as the client's pool builds them (its connection class
and keyword arguments: host, port, database, credentials, TLS, timeouts,
Sentinel master discovery), and sends on them directly.

Failure handling stays redis-py's: a connection that fails in the lane is
disconnected and dropped, and the command goes through ``execute_command``
(the client's pool and retry policy) once more only when the failure was a
broken connection that had been sitting idle (typically a server restart);
everything else (a timeout, a connection refused) is raised as the client
would raise it. Error replies (``NOSCRIPT``, ``BUSY``...) leave the
connection healthy and are raised as usual.

Used only for plain ``Redis`` clients: a Cluster client routes by slot, a
single-connection client owns its one connection, a client with client-side
caching answers from its cache, and a client whose ``execute_command`` is
overridden or wrapped (OpenTelemetry, a subclass that counts or traces)
expects to see every command; those keep ``execute_command``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["AsyncLane", "Lane", "lane_for"]

#: Where redis-py defines ``execute_command`` for plain clients (sync and asyncio).
_REDIS_CLIENT_MODULES = frozenset({"redis.client", "redis.asyncio.client"})
#: Every lane, so a forked child forgets the connections it inherited.
_lanes: weakref.WeakSet[Lane | AsyncLane] = weakref.WeakSet()


def _forget_after_fork() -> None:
    # The child must not talk on its parent's sockets. Dropping (not closing) them
    # is what redis-py does: a connection shuts its socket down only in the
    # process that opened it.
    for lane in list(_lanes):
        lane.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _pool_of(client: Any) -> Any | None:
    """The connection pool a lane can build from, or None when ``client`` needs its own path."""
    if hasattr(client, "nodes_manager") or getattr(client, "connection", None) is not None:
        return None  # a Cluster client, or a single-connection client
    execute = getattr(type(client), "execute_command", None)
    if (
        execute is None
        or "execute_command" in getattr(client, "__dict__", ())
        or hasattr(execute, "__wrapped__")
        or getattr(execute, "__module__", None) not in _REDIS_CLIENT_MODULES
    ):
        # Overridden or wrapped (tracing, metrics, a test's counter): every command
        # must keep going through it.
        return None
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(pool, "cache", None) is not None:
        return None
    if not hasattr(pool, "connection_class") or not isinstance(
        getattr(pool, "connection_kwargs", None), dict
    ):
        return None
    return pool


class _Count:
    """How many connections a lane has open, against the client pool's ``max_connections``.

    Counted only where a connection is opened or dropped, under a lock; taking
    an idle one and putting it back stay lock-free. At the limit the command
    goes through the client, whose pool enforces its own.
    """

    __slots__ = ("_limit", "_lock", "open")

    def __init__(self, pool: Any) -> None:
        self._limit: int = getattr(pool, "max_connections", None) or 2**31
        self._lock = threading.Lock()
        self.open = 0

    def admit(self) -> bool:
        """Count one more connection, or say False at the limit."""
        with self._lock:
            if self.open >= self._limit:
                return False
            self.open += 1
            return True

    def dropped(self, how_many: int = 1) -> None:
        with self._lock:
            self.open = max(0, self.open - how_many)


class Lane:
    """Ready connections for a synchronous ``redis.Redis`` client (thread-safe)."""

    __slots__ = ("__weakref__", "_count", "_execute", "_idle", "_pool")

    def __init__(self, client: Any, pool: Any) -> None:
        self._pool = pool
        self._execute: Callable[..., Any] = client.execute_command
        # list.pop() and list.append() are atomic: threads share the list without a lock.
        self._idle: list[Any] = []
        self._count = _Count(pool)
        _lanes.add(self)

    def execute(self, *args: Any) -> Any:
        """Send one command and return its reply, as ``client.execute_command(*args)``."""
        try:
            conn = self._idle.pop()
            reused = True
        except IndexError:
            if not self._count.admit():
                return self._execute(*args)  # max_connections of our own are busy
            pool = self._pool
            conn = pool.connection_class(**pool.connection_kwargs)
            reused = False
        try:
            if not reused:
                # As the pool does: a Sentinel-managed connection finds its master here.
                conn.connect()
            conn.send_packed_command(conn.pack_command(*args))
            reply = conn.read_response()
        except ResponseError:
            self._idle.append(conn)  # an error reply: the connection is fine
            raise
        except RedisConnectionError:
            conn.disconnect()
            self._count.dropped()
            if reused:
                return self._execute(*args)
            raise
        except BaseException:
            conn.disconnect()
            self._count.dropped()
            raise
        self._idle.append(conn)
        return reply

    def forget(self) -> None:
        self._idle = []
        self._count = _Count(self._pool)

    def close(self) -> None:
        """Disconnect the idle connections (one in use is dropped when its call ends)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
        self._count.dropped(len(idle))


class AsyncLane:
    """Ready connections for a ``redis.asyncio.Redis`` client.

    A connection belongs to the event loop that opened it; one found idle
    under another loop is dropped rather than used.
    """

    __slots__ = ("__weakref__", "_count", "_execute", "_idle", "_pool", "_timeout")

    def __init__(self, client: Any, pool: Any) -> None:
        self._pool = pool
        self._execute: Callable[..., Awaitable[Any]] = client.execute_command
        self._idle: list[tuple[asyncio.AbstractEventLoop, Any]] = []
        self._count = _Count(pool)
        #: The client's socket_timeout, which the lane applies to each command as a whole.
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        _lanes.add(self)

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply, as ``await client.execute_command(*args)``."""
        loop = asyncio.get_running_loop()
        idle = self._idle
        conn: Any = None
        while idle:
            owner, candidate = idle.pop()
            if owner is loop:
                conn = candidate
                break
            self._count.dropped()  # another loop's: dropped, as its loop may be gone
        reused = conn is not None
        if conn is None:
            if not self._count.admit():
                return await self._execute(*args)  # max_connections of our own are busy
            pool = self._pool
            conn = pool.connection_class(**pool.connection_kwargs)
        try:
            if not reused:
                # Opened as the pool opens it: redis-py's connect timeout for the socket,
                # its socket_timeout for the handshake (AUTH, SELECT, HELLO).
                await conn.connect()
                # From here on, with a socket_timeout, redis-py would bound every write
                # with asyncio.wait_for, which starts a Task and costs two more loop
                # iterations per command (~58,000 instructions of a ~330,000 read
                # request). The lane bounds each command as a whole instead, with one
                # asyncio.timeout, as the read's own timeout costs anyway. A connection
                # that fails is dropped, never reconnected with this setting.
                conn.socket_timeout = None
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(conn.pack_command(*args))
                # One turn of the loop before the read: other ready tasks run, and on
                # an idle loop that turn polls the socket without blocking, so a reply
                # back by then is read without the process going to sleep. A sleep
                # and its wake-up cost more than a loopback round trip on a virtual
                # machine (one per command without this turn, ~0.9 with it, here).
                await asyncio.sleep(0)
                reply = await conn.read_response()
        except ResponseError:
            self._idle.append((loop, conn))
            raise
        except RedisConnectionError:
            await conn.disconnect(nowait=True)
            self._count.dropped()
            if reused:
                return await self._execute(*args)
            raise
        except TimeoutError:
            # The lane's deadline (asyncio's TimeoutError): redis-py's own, as the client
            # would have raised; the connection may still get the late reply, so it goes.
            await conn.disconnect(nowait=True)
            self._count.dropped()
            raise RedisTimeoutError(
                f"Timeout reading from {getattr(conn, 'host', 'redis')}:{getattr(conn, 'port', '')}"
            ) from None
        except BaseException:
            # Cancelled or timed out mid-reply: the connection's state is unknown.
            await conn.disconnect(nowait=True)
            self._count.dropped()
            raise
        self._idle.append((loop, conn))
        return reply

    def forget(self) -> None:
        self._idle = []
        self._count = _Count(self._pool)

    async def aclose(self) -> None:
        """Disconnect the idle connections that belong to the running loop; drop the rest."""
        loop = asyncio.get_running_loop()
        idle, self._idle = self._idle, []
        for owner, conn in idle:
            if owner is loop:
                await conn.disconnect()
        self._count.dropped(len(idle))


def lane_for(client: Any, *, asynchronous: bool) -> Lane | AsyncLane | None:
    """A lane for ``client``, or None when its commands must go through ``execute_command``."""
    pool = _pool_of(client)
    if pool is None:
        return None
    return AsyncLane(client, pool) if asynchronous else Lane(client, pool)
