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
import re
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
    from redis_servers import KillableRedis

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


def test_a_timed_out_reply_never_answers_the_next_load(killable_redis: KillableRedis) -> None:
    store = RedisStore(killable_redis.url, socket_timeout=0.3, socket_connect_timeout=0.3)
    first, second = make_key("lane-first"), make_key("lane-second")
    store.save(first, b"first", expected_version=None, ttl=TTL, meta=meta())
    store.save(second, b"second", expected_version=None, ttl=TTL, meta=meta())
    entry = store.load(first)  # the store's connection is open and idle now
    assert entry is not None
    waiter = _pause_server(killable_redis.url, 1.0)
    with pytest.raises(StoreUnavailable, match=re.escape(killable_redis.url)):
        store.load(second)  # its reply arrives after the timeout, on a dropped connection
    waiter.join()
    entry = store.load(first)
    assert entry is not None
    assert entry.payload == b"first"
    entry = store.load(second)
    assert entry is not None
    assert entry.payload == b"second"
    store.close()


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
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("traced")
    store.load(key)  # may cache the scripts first
    version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
    seen.clear()
    store.load(key)
    store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta())
    assert seen == ["GET", "EVALSHA"]
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


def test_many_threads_share_the_store_connections() -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    keys = [make_key(f"thread-{i}") for i in range(8)]
    for i, key in enumerate(keys):
        store.save(key, str(i).encode(), expected_version=None, ttl=TTL, meta=meta())
    wrong: list[tuple[int, Any]] = []

    def reader(i: int) -> None:
        for _ in range(200):
            entry = store.load(keys[i])
            if entry is None or entry.payload != str(i).encode():
                wrong.append((i, entry))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    store.close()


def test_a_client_patched_before_the_store_is_built_sees_every_command() -> None:
    seen: list[str] = []
    client = redis.Redis.from_url(REDIS_URL)
    plain = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        seen.append(str(args[0]))
        return plain(*args, **options)

    client.execute_command = counting  # type: ignore[method-assign]
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("patched")
    store.load(key)
    version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
    seen.clear()
    store.load(key)
    store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta())
    assert seen == ["GET", "EVALSHA"]
    client.close()
