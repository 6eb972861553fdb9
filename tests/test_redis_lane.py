"""The Redis stores' own connections for GET and EVALSHA (``stores/_redis_lane.py``).

What a user relies on: a command that timed out or was cancelled never hands
its late reply to the next request; a forked worker never talks on its
parent's sockets; a client whose ``execute_command`` is wrapped (tracing) or
overridden still sees every command; closing the store leaves a client the
user passed working. Each runs on the real server (or one of the test's own).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from helpers import meta
from services import REDIS_URL, redis_scope, requires, run_prefix
from websession.errors import StoreUnavailable
from websession.testing import make_key

if TYPE_CHECKING:
    from redis_servers import KillableRedis, RedisSentinel

with requires("redis"):
    import redis
    import redis.asyncio

    from websession.stores.redis import AsyncRedisStore, RedisStore

pytest_plugins = ["redis_servers"]

RUN_PREFIX = run_prefix("redis-lane")
TTL = 600.0


def fresh_prefix() -> str:
    return f"{RUN_PREFIX}{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="module", autouse=True)
def server() -> Iterator[redis.Redis]:
    """The shared server; this module's keys are removed at the end."""
    with redis_scope(RUN_PREFIX) as client:
        yield client


def _pause_server(url: str, seconds: float) -> threading.Thread:
    """Make the server hold every client's commands for ``seconds`` (CLIENT PAUSE)."""
    admin = redis.Redis.from_url(url)
    admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    admin.close()
    waiter = threading.Thread(target=time.sleep, args=(seconds + 0.2,))
    waiter.start()
    return waiter


def _pausable(through: str, request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(store URL, URL of the server to pause, key prefix) for a plain or a Sentinel client."""
    if through == "plain":
        server: KillableRedis = request.getfixturevalue("killable_redis")
        return server.url, server.url, "websession:"
    sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
    return sentinel.url, f"redis://127.0.0.1:{sentinel.master_port}/0", fresh_prefix()


@pytest.mark.parametrize("through", ["plain", "sentinel"])
def test_a_timed_out_reply_never_answers_the_next_load(
    through: str, request: pytest.FixtureRequest
) -> None:
    # Sentinel-managed connections do not disconnect themselves when a read times out:
    # the store must drop them, or the late reply answers the next command.
    url, server_url, prefix = _pausable(through, request)
    store = RedisStore(url, prefix=prefix, socket_timeout=0.3, socket_connect_timeout=0.3)
    first, second = make_key("lane-first"), make_key("lane-second")
    store.save(first, b"first", expected_version=None, ttl=TTL, meta=meta())
    store.save(second, b"second", expected_version=None, ttl=TTL, meta=meta())
    entry = store.load(first)  # the store's connection is open and idle now
    assert entry is not None
    waiter = _pause_server(server_url, 1.0)
    with pytest.raises(StoreUnavailable, match="is unavailable"):
        store.load(second)  # its reply arrives after the timeout, on a dropped connection
    waiter.join()
    for key, payload in ((first, b"first"), (second, b"second"), (first, b"first")):
        entry = store.load(key)
        assert entry is not None
        assert entry.payload == payload
    store.delete(first)
    store.delete(second)
    store.close()


@pytest.mark.parametrize("through", ["plain", "sentinel"])
def test_an_async_load_times_out_and_its_late_reply_answers_nothing(
    through: str, request: pytest.FixtureRequest
) -> None:
    # The async lane applies socket_timeout to each command itself (redis-py would wrap
    # every write in asyncio.wait_for): a paused server is StoreUnavailable in time,
    # and the late reply, on a dropped connection, never answers a later load.
    url, server_url, prefix = _pausable(through, request)

    async def main() -> None:
        store = AsyncRedisStore(url, prefix=prefix, socket_timeout=0.3, socket_connect_timeout=2)
        first, second = make_key("atimeout-first"), make_key("atimeout-second")
        await store.save(first, b"first", expected_version=None, ttl=TTL, meta=meta())
        await store.save(second, b"second", expected_version=None, ttl=TTL, meta=meta())
        assert await store.load(first) is not None
        waiter = _pause_server(server_url, 1.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="is unavailable"):
            await store.load(second)
        assert time.monotonic() - started < 1.0  # the timeout, not the pause, ended it
        await asyncio.to_thread(waiter.join)
        for key, payload in ((first, b"first"), (second, b"second"), (first, b"first")):
            entry = await store.load(key)
            assert entry is not None
            assert entry.payload == payload
        await store.delete(first)
        await store.delete(second)
        await store.aclose()

    asyncio.run(main())


def test_a_cancelled_async_load_never_answers_the_next_one(killable_redis: KillableRedis) -> None:
    async def main() -> None:
        store = AsyncRedisStore(killable_redis.url)
        first, second = make_key("alane-first"), make_key("alane-second")
        await store.save(first, b"first", expected_version=None, ttl=TTL, meta=meta())
        await store.save(second, b"second", expected_version=None, ttl=TTL, meta=meta())
        assert await store.load(first) is not None
        waiter = _pause_server(killable_redis.url, 0.8)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.load(second), 0.2)  # cancelled mid-reply
        await asyncio.to_thread(waiter.join)
        for key, payload in ((first, b"first"), (second, b"second"), (first, b"first")):
            entry = await store.load(key)
            assert entry is not None
            assert entry.payload == payload
        await store.aclose()

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_forked_child_uses_connections_of_its_own() -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    mine, theirs = make_key("parent"), make_key("child")
    store.save(mine, b"parent", expected_version=None, ttl=TTL, meta=meta())
    store.save(theirs, b"child", expected_version=None, ttl=TTL, meta=meta())
    assert store.load(mine) is not None  # the parent's connection is open and idle
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many of its loads found the wrong payload
        os.close(read_end)
        wrong = 0
        try:
            for _ in range(300):
                entry = store.load(theirs)
                wrong += entry is None or entry.payload != b"child"
        except BaseException:
            wrong = -1
        os.write(write_end, str(wrong).encode())
        os._exit(0)
    os.close(write_end)
    # Both processes load at once: a shared socket would cross their replies.
    wrong_here = 0
    for _ in range(300):
        entry = store.load(mine)
        wrong_here += entry is None or entry.payload != b"parent"
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as report:
        assert report.read() == "0"
    assert wrong_here == 0
    store.close()


def _commands_a_request_sends(client: Any, seen: list[str]) -> list[str]:
    """What ``seen`` records for one load and one save of a store on ``client``."""
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("instrumented")
    store.load(key)  # may cache the scripts first
    version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
    seen.clear()
    store.load(key)
    store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta())
    store.close()
    return list(seen)


def test_a_wrapped_execute_command_sees_every_command() -> None:
    seen: list[str] = []

    class Traced(redis.Redis):
        pass

    original = Traced.execute_command

    @functools.wraps(original)
    def traced(self: Any, *args: Any, **options: Any) -> Any:  # as tracing libraries wrap it
        seen.append(str(args[0]))
        return original(self, *args, **options)

    Traced.execute_command = traced  # type: ignore[method-assign]
    client = Traced.from_url(REDIS_URL)
    assert _commands_a_request_sends(client, seen) == ["GET", "EVALSHA"]
    client.close()


def test_a_client_patched_before_the_store_is_built_sees_every_command() -> None:
    seen: list[str] = []
    client = redis.Redis.from_url(REDIS_URL)
    plain = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        seen.append(str(args[0]))
        return plain(*args, **options)

    client.execute_command = counting  # type: ignore[method-assign]
    assert _commands_a_request_sends(client, seen) == ["GET", "EVALSHA"]
    client.close()


def test_closing_the_store_leaves_a_passed_client_working() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("passed")
    store.save(key, b"kept", expected_version=None, ttl=TTL, meta=meta())
    assert store.load(key) is not None
    store.close()
    assert client.ping() is True
    entry = store.load(key)  # a closed store's next call opens a connection again
    assert entry is not None
    assert entry.payload == b"kept"
    store.close()
    client.close()


def test_close_disconnects_the_store_connections(killable_redis: KillableRedis) -> None:
    admin = redis.Redis.from_url(killable_redis.url)

    def others(expected: int) -> int:
        """Connected clients besides admin, once the count settles at ``expected``
        or 5 s have passed: the server notices a closed socket on its next turn, so
        a CLIENT LIST sent right after close() may still count it."""
        deadline = time.monotonic() + 5.0
        while True:
            count = len(admin.client_list()) - 1
            if count == expected or time.monotonic() > deadline:
                return count
            time.sleep(0.01)

    client = redis.Redis.from_url(killable_redis.url)
    store = RedisStore(client)  # a passed client: close() leaves its pool alone
    key = make_key("closing")
    store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    client.ping()  # the client's own pool holds a connection too
    assert others(2) == 2
    store.close()
    assert others(1) == 1  # only the client's
    store.load(key)
    assert others(2) == 2
    store.close()
    client.close()
    admin.close()


def _loads_in_threads(store: RedisStore, label: str, rounds: int) -> list[tuple[int, Any]]:
    """8 threads, started together, each loading its own session ``rounds`` times;
    returns the loads that came back wrong."""
    keys = [make_key(f"{label}-{i}") for i in range(8)]
    for i, key in enumerate(keys):
        store.save(key, str(i).encode(), expected_version=None, ttl=TTL, meta=meta())
    barrier = threading.Barrier(len(keys))
    wrong: list[tuple[int, Any]] = []

    def reader(i: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            entry = store.load(keys[i])
            if entry is None or entry.payload != str(i).encode():
                wrong.append((i, entry))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wrong


def test_many_threads_share_the_store_connections() -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    assert _loads_in_threads(store, "thread", 200) == []
    store.close()


def test_the_store_opens_no_more_connections_than_the_pool_allows() -> None:
    # max_connections bounds the store's own connections too: beyond it, commands wait
    # for the client's pool (here a blocking one) instead of opening more.
    import redis

    name = f"ws-cap-{uuid.uuid4().hex[:8]}"
    pool = redis.BlockingConnectionPool.from_url(
        REDIS_URL, max_connections=2, timeout=10, client_name=name
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix=fresh_prefix())
    assert _loads_in_threads(store, "cap", 100) == []
    admin = redis.Redis.from_url(REDIS_URL)
    named = [c for c in admin.client_list() if c.get("name") == name]
    assert 1 <= len(named) <= 4  # at most 2 of the store's own and 2 of the pool's
    store.close()
    client.close()
    admin.close()


def test_a_restart_while_the_connections_sit_idle_fails_no_request(
    killable_redis: KillableRedis,
) -> None:
    # The idle connection is dead after the restart; the store finds out on its next
    # command and sends that command again through the client, which reconnects.
    store = RedisStore(killable_redis.url)
    key = make_key("idle-restart")
    store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    assert store.load(key) is not None
    killable_redis.kill()
    killable_redis.restart()  # no persistence: the session is gone, the server is back
    assert store.load(key) is None
    store.save(key, b"y", expected_version=None, ttl=TTL, meta=meta())
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"y"
    store.close()


def test_an_async_restart_while_the_connections_sit_idle_fails_no_request(
    killable_redis: KillableRedis,
) -> None:
    async def main() -> None:
        store = AsyncRedisStore(killable_redis.url)
        key = make_key("async-idle-restart")
        await store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
        assert await store.load(key) is not None
        await asyncio.to_thread(killable_redis.kill)
        await asyncio.to_thread(killable_redis.restart)
        assert await store.load(key) is None
        await store.save(key, b"y", expected_version=None, ttl=TTL, meta=meta())
        entry = await store.load(key)
        assert entry is not None
        assert entry.payload == b"y"
        await store.aclose()

    asyncio.run(main())
