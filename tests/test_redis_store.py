"""RedisStore and AsyncRedisStore against a real Redis server.

The server is ``WEBSESSION_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
Every key this module writes starts with one prefix unique to the run, and
only those keys are deleted at the end (SCAN + DEL, never FLUSHDB), so the
tests may share a server with anything else. Without a server the module is
skipped, except under CI (``CI=true``), where that is a failure.

Redis owns expiry (native TTL), so the contract tests that move a fake clock
past an expiry are replaced here by real-time variants with short TTLs.

Redis Cluster, Sentinel and the crash-and-restart test run against private
servers the ``redis_servers`` plugin starts on spare loopback ports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
import pytest

from helpers import (
    assert_concurrent_writers_survive,
    call_wsgi,
    cookie_value,
    meta,
    set_cookies,
    wsgi_app,
)
from services import REDIS_URL, redis_scope, requires, run_prefix
from websession.asgi import SessionMiddleware as ASGIMiddleware
from websession.errors import Conflict, Gone, SessionConfigError, StoreUnavailable
from websession.ids import hash_id
from websession.session import Session
from websession.stores.base import Entry, Meta
from websession.testing import AsyncStoreContract, FakeClock, StoreContract, make_key
from websession.urls import mask_url
from websession.wsgi import SessionMiddleware as WSGIMiddleware

if TYPE_CHECKING:
    from redis_servers import KillableRedis, RedisCluster, RedisSentinel

with requires("redis-py", "redis"):
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel
    import redis.backoff
    import redis.cluster
    import redis.retry
    import redis.sentinel

    from websession.stores import redis as redis_module
    from websession.stores.redis import AsyncRedisStore, RedisStore

pytest_plugins = ["redis_servers"]

#: Every key of this run starts with it; the module deletes exactly these keys at the end.
RUN_PREFIX = run_prefix("redis")
SHORT = 0.2  # a TTL that real time outlives in a test
PAST_SHORT = 0.3  # sleep this long to be past SHORT
TTL = 600.0


def fresh_prefix() -> str:
    """A prefix of its own for one store, inside this run's prefix."""
    return f"{RUN_PREFIX}{uuid.uuid4().hex[:12]}:"


def run_keys(client: redis.Redis, prefix: str = RUN_PREFIX) -> list[bytes]:
    return sorted(client.scan_iter(match=prefix + "*", count=1000))


@pytest.fixture(scope="module", autouse=True)
def server() -> Iterator[redis.Redis]:
    """A plain client to the test server; skips (or fails under CI) when there is none."""
    with redis_scope(RUN_PREFIX, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0)) as client:
        yield client


class CountingRedis(redis.Redis):
    """A user's own client that records the name of every command it sends."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.__dict__.setdefault("commands", []).append(str(args[0]))
        return super().execute_command(*args, **options)


class CountingAsyncRedis(redis.asyncio.Redis):
    commands: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.__dict__.setdefault("commands", []).append(str(args[0]))
        return await super().execute_command(*args, **options)


def counting_client() -> CountingRedis:
    return counting_client_for(REDIS_URL)


def counting_client_for(url: str) -> CountingRedis:
    client = CountingRedis.from_url(url)
    client.commands = []
    return client


# -- the contract --------------------------------------------------------------------------


class TestRedisStoreContract(StoreContract):
    url = REDIS_URL

    def make_store(self, clock: Callable[[], float]) -> RedisStore:
        return RedisStore(self.url, prefix=fresh_prefix(), clock=clock)

    # Real-time variants of the tests that move the fake clock past an expiry.

    def test_expired_entry_is_not_loaded(self, store: RedisStore, clock: FakeClock) -> None:
        key = make_key("expiring")
        store.save(key, b"x", expected_version=None, ttl=SHORT, meta=meta(clock()))
        assert store.load(key) is not None
        time.sleep(PAST_SHORT)
        assert store.load(key) is None

    def test_update_of_expired_entry_is_gone(self, store: RedisStore, clock: FakeClock) -> None:
        key = make_key("expired-update")
        version = store.save(key, b"x", expected_version=None, ttl=SHORT, meta=meta(clock()))
        time.sleep(PAST_SHORT)
        with pytest.raises(Gone):
            store.save(key, b"zombie", expected_version=version, ttl=TTL, meta=meta(clock()))
        assert store.load(key) is None

    def test_create_over_expired_entry(self, store: RedisStore, clock: FakeClock) -> None:
        key = make_key("expired-create")
        store.save(key, b"old", expected_version=None, ttl=SHORT, meta=meta(clock()))
        time.sleep(PAST_SHORT)
        version = store.save(key, b"new", expected_version=None, ttl=TTL, meta=meta(clock()))
        entry = store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"new", version)

    def test_touch_of_expired_entry_is_false(self, store: RedisStore, clock: FakeClock) -> None:
        key = make_key("expired-touch")
        store.save(key, b"x", expected_version=None, ttl=SHORT, meta=meta(clock()))
        time.sleep(PAST_SHORT)
        assert store.touch(key, TTL) is False
        assert store.load(key) is None

    def test_touch_extends_expiry_and_sets_last_seen(
        self, store: RedisStore, clock: FakeClock
    ) -> None:
        key = make_key("touch")
        saved = meta(clock())
        # Margins of 0.4 s either way: a stall of the test machine must not expire the
        # session before the touch, nor the touched one before the second load.
        version = store.save(key, b"x", expected_version=None, ttl=1.0, meta=saved)
        time.sleep(0.6)
        clock.advance(8)
        assert store.touch(key, 1.0) is True
        entry = store.load(key)
        assert entry is not None
        assert entry.expires == pytest.approx(clock() + 1.0, abs=0.05)
        assert entry.last_seen == clock()
        assert entry.created == saved.created
        assert (entry.payload, entry.version, entry.user_id) == (b"x", version, "u1")
        time.sleep(0.6)  # past the first expiry (1.2 s after the save), within the extended one
        assert store.load(key) is not None
        # Touch changes no version: a save based on the loaded version still lands.
        assert store.save(key, b"y", expected_version=version, ttl=0.2, meta=saved) == version + 1
        time.sleep(PAST_SHORT)
        assert store.load(key) is None

    def test_delete_expired_removes_only_expired(self, store: RedisStore, clock: FakeClock) -> None:
        short = [make_key(f"short-{i}") for i in range(3)]
        long = [make_key(f"long-{i}") for i in range(3)]
        for key in short:
            store.save(key, b"s", expected_version=None, ttl=SHORT, meta=meta(clock()))
        for key in long:
            store.save(key, b"l", expected_version=None, ttl=TTL, meta=meta(clock()))
        assert store.delete_expired() == 0
        time.sleep(PAST_SHORT)
        # Redis dropped them itself: nothing is left for delete_expired to do.
        assert store.delete_expired() == 0
        assert all(store.load(key) is None for key in short)
        assert all(store.load(key) is not None for key in long)
        store.save(short[0], b"again", expected_version=None, ttl=TTL, meta=meta(clock()))
        assert store.load(short[0]) is not None

    def test_delete_expired_respects_limit(self, store: RedisStore, clock: FakeClock) -> None:
        assert store.delete_expired(2) == 0
        with pytest.raises(SessionConfigError):
            store.delete_expired(0)

    def test_entries_when_inspectable(self, store: RedisStore, clock: FakeClock) -> None:
        alice = [make_key(f"alice-{i}") for i in range(3)]
        bob = make_key("bob")
        for key in alice:
            store.save(key, b"a", expected_version=None, ttl=TTL, meta=meta(clock(), user_id="a"))
            clock.advance(1)
        store.save(bob, b"b", expected_version=None, ttl=TTL, meta=meta(clock(), user_id="b"))
        gone = make_key("expired-alice")
        store.save(gone, b"x", expected_version=None, ttl=SHORT, meta=meta(clock(), user_id="a"))
        time.sleep(PAST_SHORT)

        everything = list(store.entries())
        assert [k for k, _ in everything] == [bob, *reversed(alice)]
        assert all(isinstance(entry, Entry) for _, entry in everything)
        assert [k for k, _ in store.entries(user_id="a")] == list(reversed(alice))
        assert [k for k, _ in store.entries(user_id="a", limit=2)] == [alice[2], alice[1]]
        assert [k for k, _ in store.entries(prefix=bob[:12])] == [bob]
        assert list(store.entries(prefix=bob, user_id="a")) == []
        assert list(store.entries(user_id="nobody")) == []

    def test_user_index_leaves_out_ended_sessions(
        self, store: RedisStore, clock: FakeClock
    ) -> None:
        short, long, deleted, zeroed = (make_key(n) for n in ("short", "long", "del", "zero"))
        saved = meta(clock(), user_id="alice")
        store.save(short, b"s", expected_version=None, ttl=SHORT, meta=saved)
        store.save(long, b"l", expected_version=None, ttl=TTL, meta=saved)
        store.save(deleted, b"d", expected_version=None, ttl=TTL, meta=saved)
        version = store.save(zeroed, b"z", expected_version=None, ttl=TTL, meta=saved)
        store.delete(deleted)
        store.save(zeroed, b"z", expected_version=version, ttl=0, meta=saved)
        assert {key for key, _ in store.sessions_for("alice")} == {short, long}
        time.sleep(PAST_SHORT)
        assert [key for key, _ in store.sessions_for("alice")] == [long]
        # Redis dropped the expired key; reading the index pruned its member.
        members = store.client.execute_command("SMEMBERS", store._index_key("alice"))
        assert members == {long.encode()}
        assert store.revoke_user("alice", keep=[long]) == 0


class TestAsyncRedisStoreContract(AsyncStoreContract):
    url = REDIS_URL

    def make_store(self, clock: Callable[[], float]) -> AsyncRedisStore:
        return AsyncRedisStore(self.url, prefix=fresh_prefix(), clock=clock)

    def test_expiry(self) -> None:
        async def test(store: AsyncRedisStore, clock: FakeClock) -> None:
            key = make_key("expiry")
            version = await store.save(
                key, b"1", expected_version=None, ttl=SHORT, meta=meta(clock())
            )
            assert await store.load(key) is not None
            await asyncio.sleep(PAST_SHORT)
            assert await store.load(key) is None
            assert await store.touch(key, TTL) is False
            with pytest.raises(Gone):
                await store.save(key, b"x", expected_version=version, ttl=TTL, meta=meta(clock()))

        self.run(test)  # type: ignore[arg-type]

    def test_delete_expired(self) -> None:
        async def test(store: AsyncRedisStore, clock: FakeClock) -> None:
            key = make_key("short")
            await store.save(key, b"x", expected_version=None, ttl=SHORT, meta=meta(clock()))
            assert await store.delete_expired(2) == 0
            await asyncio.sleep(PAST_SHORT)
            assert await store.delete_expired(2) == 0
            assert await store.load(key) is None
            with pytest.raises(SessionConfigError):
                await store.delete_expired(0)

        self.run(test)  # type: ignore[arg-type]


class TestClusterStoreContract(TestRedisStoreContract):
    @pytest.fixture(autouse=True)
    def _on_the_cluster(self, redis_cluster: RedisCluster) -> None:
        self.url = redis_cluster.url


class TestAsyncClusterStoreContract(TestAsyncRedisStoreContract):
    @pytest.fixture(autouse=True)
    def _on_the_cluster(self, redis_cluster: RedisCluster) -> None:
        self.url = redis_cluster.url


class TestSentinelStoreContract(TestRedisStoreContract):
    @pytest.fixture(autouse=True)
    def _through_sentinel(self, redis_sentinel: RedisSentinel) -> None:
        self.url = redis_sentinel.url


class TestAsyncSentinelStoreContract(TestAsyncRedisStoreContract):
    @pytest.fixture(autouse=True)
    def _through_sentinel(self, redis_sentinel: RedisSentinel) -> None:
        self.url = redis_sentinel.url


# -- Redis specifics -----------------------------------------------------------------------


def test_expires_is_the_save_time_plus_the_ttl_by_the_store_clock(server: redis.Redis) -> None:
    clock = FakeClock()  # 2023: far from the real time, so the real clock would show
    store = RedisStore(REDIS_URL, prefix=fresh_prefix(), clock=clock)
    key = make_key("expires")
    saved_at = clock()
    store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(saved_at))
    entry = store.load(key)
    assert entry is not None
    assert entry.expires == saved_at + TTL  # exact: read back from the record, not from a PTTL
    # Redis holds the same TTL natively.
    assert TTL * 1000 - 2000 < server.pttl(store.prefix + key) <= TTL * 1000
    clock.advance(TTL - 1)
    entry = store.load(key)
    assert entry is not None
    assert entry.expires == saved_at + TTL  # an absolute time: it does not move with the clock
    clock.advance(1)  # the store clock reached the expiry: expired, though Redis still holds it
    assert store.load(key) is None
    assert server.exists(store.prefix + key) == 1
    assert list(store.entries()) == []
    assert store.sessions_for("u1") == []


def test_touch_moves_the_expiry_that_load_reads(server: redis.Redis) -> None:
    clock = FakeClock()
    store = RedisStore(REDIS_URL, prefix=fresh_prefix(), clock=clock)
    key = make_key("touched")
    saved = meta(clock())
    version = store.save(key, b"x", expected_version=None, ttl=60, meta=saved)
    clock.advance(50)
    assert store.touch(key, 120) is True
    entry = store.load(key)
    assert entry is not None
    assert (entry.last_seen, entry.expires) == (clock(), clock() + 120)
    assert (entry.payload, entry.version, entry.created) == (b"x", version, saved.created)
    assert (entry.user_id, entry.ip) == (saved.user_id, saved.ip)
    assert 118_000 < server.pttl(store.prefix + key) <= 120_000  # the native TTL moved too
    clock.advance(100)  # past the first expiry, within the touched one
    assert store.load(key) is not None
    assert [k for k, _ in store.entries()] == [key]
    assert [e.expires for _, e in store.sessions_for("u1")] == [entry.expires]


def test_touch_moves_the_expiry_for_the_async_store_too() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = AsyncRedisStore(REDIS_URL, prefix=fresh_prefix(), clock=clock)
        key = make_key("async-touched")
        await store.save(key, b"x", expected_version=None, ttl=60, meta=meta(clock()))
        entry = await store.load(key)
        assert entry is not None
        assert entry.expires == clock() + 60
        clock.advance(50)
        assert await store.touch(key, 120) is True
        entry = await store.load(key)
        assert entry is not None
        assert (entry.last_seen, entry.expires) == (clock(), clock() + 120)
        clock.advance(120)
        assert await store.load(key) is None
        await store.aclose()

    asyncio.run(main())


def commands_run(client: redis.Redis) -> dict[str, int]:
    """How many times the server ran each command so far (INFO commandstats)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}


def ran_since(client: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    """The commands the server ran since ``before``, the ones scripts call included."""
    ran = {name: calls - before.get(name, 0) for name, calls in commands_run(client).items()}
    return {name: n for name, n in ran.items() if n and name != "info"}


def test_load_is_one_plain_get_on_the_server(killable_redis: KillableRedis) -> None:
    # A server of this test's own, so no other client moves its command counts.
    # A script's own calls count there too: the old load showed evalsha, get and pttl.
    stats = redis.Redis.from_url(killable_redis.url)
    store = RedisStore(counting_client_for(killable_redis.url), prefix=fresh_prefix())
    key = make_key("plain-get")
    store.save(key, b"payload", expected_version=None, ttl=TTL, meta=meta())
    store.client.commands.clear()
    before = commands_run(stats)
    entry = store.load(key)
    assert ran_since(stats, before) == {"get": 1}
    assert store.client.commands == ["GET"]  # one round trip
    assert entry is not None
    assert entry.payload == b"payload"
    before = commands_run(stats)
    assert store.load(make_key("nobody")) is None
    assert ran_since(stats, before) == {"get": 1}

    async def load_async() -> tuple[dict[str, int], Entry | None]:
        async_store = AsyncRedisStore(killable_redis.url, prefix=store.prefix)
        # Connected before counting (its first load opens the store's connection): only
        # the load counts.
        await async_store.load(make_key("warm-up"))
        before = commands_run(stats)
        loaded = await async_store.load(key)
        ran = ran_since(stats, before)
        await async_store.aclose()
        return ran, loaded

    ran, loaded = asyncio.run(load_async())
    assert ran == {"get": 1}
    assert loaded is not None
    assert loaded.payload == b"payload"
    stats.close()


def test_each_operation_is_one_round_trip() -> None:
    client = counting_client()
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("round-trips")
    # Caches the three scripts on the server, in case this is their first use there.
    store.load(key)
    store.save(key, b"seed", expected_version=None, ttl=TTL, meta=meta())
    store.touch(key, TTL)
    store.delete(key)

    def sent(operation: Callable[[], Any]) -> list[str]:
        client.commands.clear()
        operation()
        return list(client.commands)

    v1 = 0

    def create() -> None:
        nonlocal v1
        v1 = store.save(key, b"one", expected_version=None, ttl=TTL, meta=meta())

    assert sent(create) == ["EVALSHA"]
    assert sent(lambda: store.load(key)) == ["GET"]
    assert sent(lambda: store.save(key, b"2", expected_version=v1, ttl=TTL, meta=meta())) == [
        "EVALSHA"
    ]
    client.commands.clear()
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=v1, ttl=TTL, meta=meta())
    assert client.commands == ["EVALSHA"]
    assert sent(lambda: store.touch(key, TTL)) == ["EVALSHA"]
    assert sent(lambda: store.delete(key)) == ["DEL"]
    assert sent(lambda: store.load(key)) == ["GET"]
    assert sent(lambda: store.touch(key, TTL)) == ["EVALSHA"]


def index_round_trips(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records the command names of every pipelined round trip the store makes.

    Those are the index updates beyond the save script, and the reads of ``sessions_for``.
    """
    trips: list[list[str]] = []
    pipelined = store._pipelined

    def recording(commands: Any, *args: Any) -> list[Any]:
        trips.append([str(command[0]) for command in commands])
        return pipelined(commands, *args)

    monkeypatch.setattr(store, "_pipelined", recording)
    return trips


def test_the_index_rides_in_the_save_script_on_a_single_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = counting_client()
    store = RedisStore(client, prefix=fresh_prefix())
    trips = index_round_trips(store, monkeypatch)
    signed_in, guest = make_key("signed-in"), make_key("guest")
    store.save(make_key("warm-up"), b"x", expected_version=None, ttl=TTL, meta=meta(user_id=None))
    client.commands.clear()
    v = store.save(signed_in, b"1", expected_version=None, ttl=TTL, meta=meta(user_id="u1"))
    v = store.save(signed_in, b"2", expected_version=v, ttl=TTL, meta=meta(user_id="u1"))
    g = store.save(guest, b"1", expected_version=None, ttl=TTL, meta=meta(user_id=None))
    store.save(guest, b"2", expected_version=g, ttl=TTL, meta=meta(user_id=None))
    assert client.commands == ["EVALSHA"] * 4
    assert trips == []
    assert [k for k, _ in store.sessions_for("u1")] == [signed_in]
    assert trips == [["GET"]]  # the listing's own read
    # Only a change of user on the same key costs a round trip: out of the old index.
    store.save(signed_in, b"3", expected_version=v, ttl=TTL, meta=meta(user_id="u2"))
    assert trips == [["GET"], ["SREM"]]
    assert store.sessions_for("u1") == []
    assert [k for k, _ in store.sessions_for("u2")] == [signed_in]


def test_the_index_costs_a_round_trip_on_cluster_only_when_the_user_changes(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_cluster.url, prefix=fresh_prefix())
    trips = index_round_trips(store, monkeypatch)
    signed_in, guest = make_key("signed-in"), make_key("guest")
    g = store.save(guest, b"1", expected_version=None, ttl=TTL, meta=meta(user_id=None))
    store.save(guest, b"2", expected_version=g, ttl=TTL, meta=meta(user_id=None))
    assert trips == []
    v = store.save(signed_in, b"1", expected_version=None, ttl=TTL, meta=meta(user_id="u1"))
    assert trips == [["SADD"]]
    v = store.save(signed_in, b"2", expected_version=v, ttl=TTL, meta=meta(user_id="u1"))
    assert trips == [["SADD"]]
    assert [k for k, _ in store.sessions_for("u1")] == [signed_in]
    assert trips == [["SADD"], ["GET"]]  # the listing's own read
    store.save(signed_in, b"3", expected_version=v, ttl=TTL, meta=meta(user_id="u2"))
    assert trips == [["SADD"], ["GET"], ["SREM", "SADD"]]
    assert store.sessions_for("u1") == []
    assert [k for k, _ in store.sessions_for("u2")] == [signed_in]
    assert store.revoke_user("u2") == 1
    assert store.load(signed_in) is None
    store.close()


def test_a_users_lookup_reads_only_that_users_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    for i in range(300):
        user = None if i % 2 else f"other-{i % 7}"
        store.save(make_key(f"c{i}"), b"c", expected_version=None, ttl=TTL, meta=meta(user_id=user))
    mine = [make_key(f"mine-{i}") for i in range(3)]
    for key in mine:
        store.save(key, b"m", expected_version=None, ttl=TTL, meta=meta(user_id="me"))
    read: list[bytes] = []
    read_batch = store._read_batch

    def recording(names: list[bytes], user_id: str | None) -> Any:
        read.extend(names)
        return read_batch(names, user_id)

    monkeypatch.setattr(store, "_read_batch", recording)
    monkeypatch.setattr(store.client, "scan_iter", None)  # no keyspace scan either
    assert {k for k, _ in store.sessions_for("me")} == set(mine)
    assert sorted(read) == sorted((store.prefix + key).encode() for key in mine)
    assert store.revoke_user("me", keep=mine[:1]) == 2
    assert [k for k, _ in store.sessions_for("me")] == mine[:1]


# -- records of the previous release (format W1) -------------------------------------------

#: The previous release's header: tag W1, version, created, last seen, then len + 1 (0 = None)
#: of user id, IP and user agent. It held no expiry: that came from the key's PTTL.
W1_HEADER = struct.Struct(">2sQddIII")


def w1_record(version: int, payload: bytes, saved: Meta) -> bytes:
    """A session record exactly as the previous release wrote it."""
    texts = [
        t.encode() if t is not None else None for t in (saved.user_id, saved.ip, saved.user_agent)
    ]
    lengths = [0 if t is None else len(t) + 1 for t in texts]
    header = W1_HEADER.pack(b"W1", version, saved.created, saved.last_seen, *lengths)
    return header + b"".join(t or b"" for t in texts) + payload


def put_w1(store: RedisStore, key: str, version: int, payload: bytes, saved: Meta, ms: int) -> None:
    """Write a W1 record and its index entry, as the previous release's save did."""
    store.client.execute_command(
        "SET", store._key(key), w1_record(version, payload, saved), "PX", ms
    )
    if saved.user_id is not None:
        store.client.execute_command("SADD", store._index_key(saved.user_id), key)


def raw_value(store: RedisStore, key: str) -> bytes:
    value = store.client.execute_command("GET", store._key(key))
    assert isinstance(value, bytes)
    return value


@pytest.fixture(params=["standalone", "cluster", "sentinel"])
def any_url(request: pytest.FixtureRequest) -> str:
    """A standalone server, a Cluster or a Sentinel master."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    if request.param == "sentinel":
        sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
        return sentinel.url
    return REDIS_URL


def test_a_record_of_the_previous_format_loads_touches_and_saves(any_url: str) -> None:
    clock = FakeClock()
    store = RedisStore(any_url, prefix=fresh_prefix(), clock=clock)
    key = make_key("legacy")
    saved = meta(clock() - 100, last_seen=clock() - 10, user_agent="Agent/1.0 (\u2603)")
    put_w1(store, key, 7, b"legacy payload", saved, 90_000)

    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"legacy payload", 7)
    assert entry.meta == saved
    assert entry.expires == pytest.approx(clock() + 90, abs=1)  # from its PTTL
    assert [(k, e.version) for k, e in store.entries()] == [(key, 7)]
    listed = store.sessions_for("u1")
    assert [(k, e.payload) for k, e in listed] == [(key, b"legacy payload")]
    assert listed[0][1].expires == pytest.approx(clock() + 90, abs=1)

    # A touch keeps it W1 (the previous release can still read it) and sets only last seen.
    clock.advance(5)
    before = raw_value(store, key)
    assert store.touch(key, 200) is True
    after = raw_value(store, key)
    assert len(after) == len(before)
    assert after[:18] == before[:18]
    assert after[26:] == before[26:]  # the lengths, strings and payload are untouched
    assert W1_HEADER.unpack_from(after)[3] == clock()
    entry = store.load(key)
    assert entry is not None
    assert (entry.last_seen, entry.version, entry.user_agent) == (clock(), 7, saved.user_agent)
    assert entry.expires == pytest.approx(clock() + 200, abs=1)

    # A save checks the version of a W1 record like any other, and writes W2.
    with pytest.raises(Conflict):
        store.save(key, b"stale", expected_version=6, ttl=TTL, meta=saved)
    with pytest.raises(Conflict):
        store.save(key, b"dup", expected_version=None, ttl=TTL, meta=saved)
    assert raw_value(store, key) == after
    assert store.save(key, b"new payload", expected_version=7, ttl=TTL, meta=saved) == 8
    assert raw_value(store, key).startswith(b"W2")
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version, entry.expires) == (b"new payload", 8, clock() + TTL)
    assert [k for k, _ in store.sessions_for("u1")] == [key]
    store.close()


def test_a_record_of_the_previous_format_keeps_its_index_right(any_url: str) -> None:
    store = RedisStore(any_url, prefix=fresh_prefix())
    moved, revoked, swept, kept, ended = (make_key(n) for n in ("mv", "rv", "sw", "kp", "end"))
    for key in (moved, revoked, swept, kept, ended):
        put_w1(store, key, 3, b"p", meta(user_id="alice"), 60_000)
    anonymous = make_key("anonymous")  # the shortest record: a bare 38-byte header
    bare = meta(user_id=None, ip=None)
    put_w1(store, anonymous, 1, b"", bare, 60_000)
    assert len(raw_value(store, anonymous)) == W1_HEADER.size

    # The save script reads the previous user at W1's offsets: a change of user moves the index.
    assert store.save(moved, b"p", expected_version=3, ttl=TTL, meta=meta(user_id="bob")) == 4
    assert [k for k, _ in store.sessions_for("bob")] == [moved]
    # The revoke script reads the user at W1's offsets too.
    assert store.revoke(revoked) is True
    assert store.load(revoked) is None
    # A save with a TTL of zero deletes a W1 record and drops it from the index.
    store.save(ended, b"p", expected_version=3, ttl=0, meta=meta(user_id="alice"))
    assert store.load(ended) is None
    assert {k for k, _ in store.sessions_for("alice")} == {swept, kept}
    index = store.client.execute_command("SMEMBERS", store._index_key("alice"))
    assert {bytes(m) for m in index} == {swept.encode(), kept.encode()}
    assert store.revoke_user("alice", keep=[kept]) == 1
    assert store.load(swept) is None
    assert store.load(kept) is not None
    assert store.revoke_user("bob") == 1
    assert store.load(moved) is None

    entry = store.load(anonymous)
    assert entry is not None
    assert (entry.payload, entry.version, entry.user_id, entry.ip) == (b"", 1, None, None)
    assert store.save(anonymous, b"now", expected_version=1, ttl=TTL, meta=bare) == 2
    assert store.revoke(anonymous) is True
    assert store.load(anonymous) is None
    store.close()


def test_a_record_of_the_previous_format_costs_one_more_round_trip_to_load() -> None:
    store = RedisStore(counting_client(), prefix=fresh_prefix())
    key, persisted = make_key("legacy-trips"), make_key("legacy-persisted")
    put_w1(store, key, 1, b"x", meta(), 60_000)
    store.client.execute_command("SET", store._key(persisted), w1_record(1, b"x", meta()))
    store.client.commands.clear()
    assert store.load(key) is not None
    assert store.client.commands == ["GET", "PTTL"]
    entry = store.load(persisted)  # someone removed its TTL by hand
    assert entry is not None
    assert entry.expires == math.inf
    store.save(key, b"y", expected_version=1, ttl=TTL, meta=meta())
    store.client.commands.clear()
    assert store.load(key) is not None
    assert store.client.commands == ["GET"]  # saved as W2: a plain GET from now on
    store.delete(persisted)


def test_the_async_store_reads_and_upgrades_a_record_of_the_previous_format() -> None:
    async def main() -> None:
        clock = FakeClock()
        client = CountingAsyncRedis.from_url(REDIS_URL)
        client.commands = []
        store = AsyncRedisStore(client, prefix=fresh_prefix(), clock=clock)
        key, other = make_key("async-legacy"), make_key("async-legacy-2")
        saved = meta(clock() - 50)
        for name in (key, other):
            await client.execute_command(
                "SET", store._key(name), w1_record(4, b"old", saved), "PX", 90_000
            )
            await client.execute_command("SADD", store._index_key("u1"), name)
        client.commands.clear()
        entry = await store.load(key)
        assert client.commands == ["GET", "PTTL"]
        assert entry is not None
        assert (entry.payload, entry.version, entry.meta) == (b"old", 4, saved)
        assert entry.expires == pytest.approx(clock() + 90, abs=1)
        assert {k for k, _ in await store.sessions_for("u1")} == {key, other}
        clock.advance(3)
        assert await store.touch(key, 100) is True
        entry = await store.load(key)
        assert entry is not None
        assert entry.last_seen == clock()
        assert entry.expires == pytest.approx(clock() + 100, abs=1)
        assert await store.save(key, b"new", expected_version=4, ttl=TTL, meta=saved) == 5
        client.commands.clear()
        entry = await store.load(key)
        assert client.commands == ["GET"]
        assert entry is not None
        assert (entry.payload, entry.version, entry.expires) == (b"new", 5, clock() + TTL)
        assert await store.revoke(other) is True
        assert [k for k, _ in await store.sessions_for("u1")] == [key]
        assert await store.revoke_user("u1") == 1
        assert await store.load(key) is None
        await client.aclose()

    asyncio.run(main())


def test_touch_leaves_a_value_that_is_no_session_alone(server: redis.Redis) -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    key = make_key("foreign-touch")
    server.set(store.prefix + key, b"not a session record, long enough to be overwritten", ex=60)
    assert store.touch(key, TTL) is False
    assert server.get(store.prefix + key) == b"not a session record, long enough to be overwritten"
    assert 0 < server.pttl(store.prefix + key) <= 60_000
    assert store.revoke(key) is False


def test_revoke_user_never_deletes_a_session_that_changed_user(server: redis.Redis) -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    key = make_key("moved")
    store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta(user_id="u1"))
    # The session now belongs to u2, but u1's index still names it (as after a
    # crash on Cluster between the save and the index update).
    raw = server.get(store.prefix + key)
    assert raw is not None
    moved = raw.replace(b"u1", b"u2", 1)
    server.set(store.prefix + key, moved, keepttl=True)
    assert store.revoke_user("u1") == 0
    assert store.load(key) is not None
    assert store.revoke(key) is True
    assert store.load(key) is None


def test_async_index_on_a_single_server_and_on_cluster(redis_cluster: RedisCluster) -> None:
    async def main(url: str) -> None:
        store = AsyncRedisStore(url, prefix=fresh_prefix())
        key = make_key("async-indexed")
        v = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta(user_id="a"))
        await store.save(key, b"2", expected_version=v, ttl=TTL, meta=meta(user_id="b"))
        assert await store.sessions_for("a") == []
        assert [k for k, _ in await store.sessions_for("b")] == [key]
        assert await store.revoke(key) is True
        assert await store.sessions_for("b") == []
        await store.aclose()

    asyncio.run(main(REDIS_URL))
    asyncio.run(main(redis_cluster.url))


def test_async_operations_are_one_round_trip_each() -> None:
    async def main() -> None:
        client = CountingAsyncRedis.from_url(REDIS_URL)
        client.commands = []
        store = AsyncRedisStore(client, prefix=fresh_prefix())
        key = make_key("async-round-trips")
        for _ in range(2):  # the first pass may also cache the scripts on the server
            client.commands.clear()
            version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
            await store.load(key)
            await store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta())
            await store.touch(key, TTL)
            await store.delete(key)
        assert client.commands == ["EVALSHA", "GET", "EVALSHA", "EVALSHA", "DEL"]
        await client.aclose()

    asyncio.run(main())


def test_a_server_that_lost_its_scripts_gets_them_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A script body no server has seen stands for a flushed script cache,
    # without flushing the shared server's cache.
    unseen = redis_module._Script(redis_module._TOUCH.body.decode() + f"\n-- {uuid.uuid4().hex}")
    monkeypatch.setattr(redis_module, "_TOUCH", unseen)
    client = counting_client()
    store = RedisStore(client, prefix=fresh_prefix())
    key = make_key("noscript")
    store.save(key, b"payload", expected_version=None, ttl=TTL, meta=meta())
    client.commands.clear()
    assert store.touch(key, TTL) is True
    assert client.commands == ["EVALSHA", "EVAL"]  # NOSCRIPT, then EVAL caches it
    client.commands.clear()
    assert store.touch(key, TTL) is True
    assert client.commands == ["EVALSHA"]
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"payload"


def test_a_users_client_is_used_as_is_and_left_open() -> None:
    client = counting_client()
    store = RedisStore(client, prefix=fresh_prefix())
    assert store.client is client
    connection_id = client.client_id()
    store.save(make_key("mine"), b"x", expected_version=None, ttl=TTL, meta=meta())
    assert "EVALSHA" in client.commands
    store.close()
    assert client.client_id() == connection_id  # the same connection: nothing was closed


def test_errors_through_a_users_client_name_the_server_without_its_password() -> None:
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    client = redis.Redis(host="127.0.0.1", port=1, password="s3cret-pass", retry=no_retry)
    store = RedisStore(client)
    with pytest.raises(StoreUnavailable, match=r"redis://127\.0\.0\.1:1/0") as caught:
        store.load(make_key("x"))
    assert "s3cret-pass" not in str(caught.value)
    assert "s3cret-pass" not in repr(store)


def test_a_client_the_store_built_is_closed_by_it() -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    first = store.client.client_id()
    assert store.client.client_id() == first
    store.close()
    assert store.client.client_id() != first  # reconnected: the old connection was closed


@pytest.mark.parametrize(
    ("client_factory", "message"),
    [
        (lambda: redis.Redis.from_url(REDIS_URL, decode_responses=True), "decode_responses"),
        (lambda: redis.asyncio.Redis.from_url(REDIS_URL), "AsyncRedisStore"),
        (lambda: object(), "RedisStore needs"),
    ],
)
def test_unusable_clients_are_refused(client_factory: Callable[[], Any], message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        RedisStore(client_factory())


def test_async_store_refuses_a_sync_client() -> None:
    with pytest.raises(SessionConfigError, match="RedisStore for synchronous"):
        AsyncRedisStore(redis.Redis.from_url(REDIS_URL))


def test_options_for_a_users_client_are_refused() -> None:
    with pytest.raises(SessionConfigError, match="set them on the client"):
        RedisStore(redis.Redis.from_url(REDIS_URL), socket_timeout=1)


@pytest.mark.parametrize("timeout", [0, -1, "2", True])
def test_bad_timeouts_are_refused(timeout: Any) -> None:
    with pytest.raises(SessionConfigError, match="socket_timeout"):
        RedisStore(REDIS_URL, socket_timeout=timeout)


def test_prefix_can_come_from_the_url(server: redis.Redis) -> None:
    prefix = fresh_prefix()
    joiner = "&" if "?" in REDIS_URL else "?"
    store = RedisStore(f"{REDIS_URL}{joiner}prefix={prefix}&health_check_interval=30")
    assert store.prefix == prefix
    store.save(make_key("via-url"), b"x", expected_version=None, ttl=TTL, meta=meta())
    index = prefix + "user:" + hashlib.sha256(b"u1").hexdigest()
    assert run_keys(server, prefix) == sorted(
        [(prefix + make_key("via-url")).encode(), index.encode()]
    )


def test_the_raw_dump_holds_hashed_keys_and_no_session_id(server: redis.Redis) -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())

    def view(session: Session, environ: dict[str, Any]) -> None:
        session["cart"] = ["apple"]

    app = WSGIMiddleware(wsgi_app(view), store=store)
    _, headers, _ = call_wsgi(app, "/", headers={"User-Agent": "dump-test"})
    token = cookie_value(set_cookies(headers)[0])
    keys = run_keys(server, store.prefix)
    assert keys == [(store.prefix + hash_id(token)).encode()]
    value = server.get(keys[0])
    assert value is not None
    assert value.startswith(b"W2")
    assert b"dump-test" in value  # the user agent, kept beside the payload
    assert b"apple" in value
    assert token.encode() not in keys[0] + value
    assert 0 < server.pttl(keys[0]) <= 1000 * app.config.idle_timeout


def test_a_foreign_value_under_the_prefix_is_not_a_session(server: redis.Redis) -> None:
    store = RedisStore(REDIS_URL, prefix=fresh_prefix())
    key = make_key("foreign")
    server.set(store.prefix + key, b"not a session record", ex=60)
    assert store.load(key) is None
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=1, ttl=TTL, meta=meta())
    assert server.get(store.prefix + key) == b"not a session record"
    assert list(store.entries()) == []


DOWN_URL = "redis://:s3cret-pass@127.0.0.1:1/0"


def _check_unavailable(exc: StoreUnavailable, url: str = DOWN_URL) -> None:
    assert mask_url(url) in str(exc)
    assert "***" in str(exc)
    assert "s3cret-pass" not in str(exc)
    assert isinstance(exc.__cause__, redis.RedisError)


def test_a_down_server_is_unavailable_with_the_password_masked() -> None:
    store = RedisStore(DOWN_URL)
    assert "s3cret-pass" not in repr(store)
    operations: list[Callable[[], Any]] = [
        lambda: store.load(make_key("x")),
        lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
        lambda: store.touch(make_key("x"), TTL),
        lambda: store.delete(make_key("x")),
        lambda: list(store.entries()),
    ]
    started = time.monotonic()
    for operation in operations:
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        _check_unavailable(caught.value)
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
    assert time.monotonic() - started < 2  # refused at once: no retry loop with back-off


def test_a_down_server_is_unavailable_to_the_async_store() -> None:
    async def main() -> None:
        store = AsyncRedisStore(DOWN_URL)
        for operation in (
            lambda: store.load(make_key("x")),
            lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
            lambda: store.touch(make_key("x"), TTL),
            lambda: store.delete(make_key("x")),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await operation()
            _check_unavailable(caught.value)
        await store.aclose()

    asyncio.run(main())


def test_a_silent_server_times_out_as_configured() -> None:
    # Accepts connections (the kernel's backlog does) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        url = f"redis://user:hunter2-pw@127.0.0.1:{port}/0"
        store = RedisStore(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.load(make_key("x"))
        elapsed = time.monotonic() - started
        store.close()
    _check_unavailable(caught.value, url)
    assert isinstance(caught.value.__cause__, redis.TimeoutError)
    assert 0.15 < elapsed < 1.0  # one timeout, no retry of a command that timed out


def test_the_asgi_middleware_refuses_the_sync_store() -> None:
    with pytest.raises(SessionConfigError, match="async form"):
        ASGIMiddleware(wsgi_app(lambda s, e: None), store=RedisStore(REDIS_URL))


# -- no lost update through the middlewares -----------------------------------------------

REQUESTS = 50


class ConflictCountingStore(RedisStore):
    conflicts = 0

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        try:
            return super().save(key, payload, expected_version=expected_version, ttl=ttl, meta=meta)
        except Conflict:
            type(self).conflicts += 1
            raise


def test_fifty_concurrent_wsgi_writers_lose_no_update() -> None:
    store = ConflictCountingStore(REDIS_URL, prefix=fresh_prefix())

    assert_concurrent_writers_survive(store, REQUESTS)
    assert ConflictCountingStore.conflicts > 0  # the replay path really ran


def test_fifty_concurrent_asgi_writers_lose_no_update() -> None:
    conflicts = 0

    class Counting(AsyncRedisStore):
        async def save(
            self, key: str, payload: bytes, *, expected_version: int | None, ttl: float,
            meta: Meta,
        ) -> int:  # fmt: skip
            nonlocal conflicts
            try:
                return await super().save(
                    key, payload, expected_version=expected_version, ttl=ttl, meta=meta
                )
            except Conflict:
                conflicts += 1
                raise

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session: Session = scope["session"]
        args = parse_qs(scope["query_string"].decode())
        if "seed" in args:
            session["seed"] = True
        elif "i" in args:
            await asyncio.sleep(0.005)  # every request has loaded before any saves
            session[f"k{args['i'][0]}"] = int(args["i"][0])
        body = json.dumps(session.to_dict()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> dict[str, Any]:
        store = Counting(REDIS_URL, prefix=fresh_prefix())
        transport = httpx.ASGITransport(ASGIMiddleware(app, store=store))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/?seed=1")
            responses = await asyncio.gather(*(client.get(f"/?i={i}") for i in range(REQUESTS)))
            assert [r.status_code for r in responses] == [200] * REQUESTS
            final: dict[str, Any] = (await client.get("/")).json()
        await store.aclose()
        return final

    assert asyncio.run(main()) == {"seed": True, **{f"k{i}": i for i in range(REQUESTS)}}
    assert conflicts > 0


def test_store_from_url_builds_the_sync_or_async_store(server: redis.Redis) -> None:
    from websession import store_from_url
    from websession.stores import AsyncRedisStore as PublicAsync
    from websession.stores import RedisStore as Public

    prefix = fresh_prefix()
    store = store_from_url(REDIS_URL, prefix=prefix)
    assert type(store) is Public is RedisStore
    assert store.prefix == prefix
    store.save(make_key("from-url"), b"x", expected_version=None, ttl=TTL, meta=meta(user_id=None))
    assert run_keys(server, prefix) == [(prefix + make_key("from-url")).encode()]
    assert type(store_from_url(REDIS_URL, asynchronous=True)) is PublicAsync is AsyncRedisStore
    tls = store_from_url("rediss://:pw@redis.invalid:6380/1")
    assert isinstance(tls, RedisStore)
    assert tls.client.connection_pool.connection_class is redis.SSLConnection
    assert "pw@" not in repr(tls)


def test_middlewares_build_the_redis_store_from_a_url() -> None:
    wsgi = WSGIMiddleware(wsgi_app(lambda s, e: None), store=REDIS_URL)
    asgi = ASGIMiddleware(wsgi_app(lambda s, e: None), store=REDIS_URL)
    assert type(wsgi.store) is RedisStore
    assert type(asgi.store) is AsyncRedisStore


# -- Redis Cluster ---------------------------------------------------------------------------


class CountingCluster(redis.cluster.RedisCluster):
    """A user's own cluster client that records the name of every command it sends."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.__dict__.setdefault("commands", []).append(str(args[0]))
        return super().execute_command(*args, **options)


def cluster_client(cluster: RedisCluster, kind: type[Any] = redis.cluster.RedisCluster) -> Any:
    nodes = [redis.cluster.ClusterNode("127.0.0.1", port) for port in cluster.ports]
    return kind(startup_nodes=nodes)


def test_scripts_run_on_every_cluster_node_after_noscript(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Script bodies no node has seen: every node answers the first EVALSHA with NOSCRIPT.
    for name in ("_TOUCH", "_SAVE"):
        script = getattr(redis_module, name)
        body = script.body.decode() + f"\n-- {uuid.uuid4().hex}"
        monkeypatch.setattr(redis_module, name, redis_module._Script(body))
    client = cluster_client(redis_cluster, CountingCluster)
    client.commands = []
    store = RedisStore(client, prefix=fresh_prefix())
    keys = [make_key(f"spread-{i}") for i in range(24)]
    for key in keys:
        store.save(key, key.encode(), expected_version=None, ttl=TTL, meta=meta())
    # Each of the three masters needed the body of each new script once.
    assert client.commands.count("EVAL") == 3
    client.commands.clear()
    for key in keys:
        assert store.touch(key, TTL) is True
    assert client.commands.count("EVAL") == 3
    assert client.commands.count("EVALSHA") == len(keys)
    client.commands.clear()
    for key in keys:
        assert store.touch(key, TTL) is True
    assert client.commands == ["EVALSHA"] * len(keys)  # cached on every node now
    client.commands.clear()
    for key in keys:
        entry = store.load(key)
        assert entry is not None
        assert entry.payload == key.encode()
    assert client.commands == ["GET"] * len(keys)  # a load is a plain GET on every node
    holders = set()
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            if any(node.scan_iter(match=store.prefix + "*")):
                holders.add(port)
    assert holders == set(redis_cluster.ports)  # the keys really spread over all masters
    client.close()


def test_a_users_cluster_client_is_used_as_is_and_left_open(redis_cluster: RedisCluster) -> None:
    client = cluster_client(redis_cluster)
    store = RedisStore(client, prefix=fresh_prefix())
    assert store.client is client
    assert repr(store).startswith("RedisStore('redis+cluster://127.0.0.1:")
    key = make_key("users-cluster")
    store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    store.close()
    assert client.get(store.prefix + key) is not None  # still usable
    assert [k for k, _ in store.entries()] == [key]
    client.close()


def test_the_async_store_takes_a_users_async_cluster_client(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        client = redis.asyncio.cluster.RedisCluster(
            startup_nodes=[
                redis.asyncio.cluster.ClusterNode("127.0.0.1", port) for port in redis_cluster.ports
            ]
        )
        store = AsyncRedisStore(client, prefix=fresh_prefix())
        key = make_key("async-users-cluster")
        version = await store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
        await store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta())
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"2", version + 1)
        await store.aclose()
        assert await client.get(store.prefix + key) is not None  # ours to close, not the store's
        await client.aclose()

    asyncio.run(main())


def test_sync_and_async_cluster_clients_go_to_their_own_store(redis_cluster: RedisCluster) -> None:
    async_client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    with pytest.raises(SessionConfigError, match="AsyncRedisStore"):
        RedisStore(async_client)
    with pytest.raises(SessionConfigError, match="RedisStore for synchronous"):
        AsyncRedisStore(cluster_client(redis_cluster))


def test_a_cluster_url_with_timeouts_and_password(redis_cluster: RedisCluster) -> None:
    hosts = redis_cluster.url.split("://")[1]
    store = RedisStore(
        f"redis+cluster://:s3cret-pass@{hosts}?socket_timeout=0.7&prefix=p:",
        socket_connect_timeout=0.3,
    )
    assert store.prefix == "p:"
    assert "s3cret-pass" not in repr(store)
    kwargs = store.client.nodes_manager.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.7, 0.3)
    assert kwargs["password"] == "s3cret-pass"
    store.close()


def test_a_cluster_that_is_down_at_start_still_builds_a_store_that_answers_503() -> None:
    # The application starts even though no node answers (redis-py's sync
    # cluster client would fail as it is built); each call says unavailable.
    store = RedisStore("redis+cluster://:pw@127.0.0.1:1,127.0.0.1:2", socket_connect_timeout=0.2)
    started = time.monotonic()
    for operation in (
        lambda: store.load(make_key("x")),
        lambda: store.save(make_key("x"), b"x", expected_version=None, ttl=TTL, meta=meta()),
        lambda: list(store.entries()),
    ):
        with pytest.raises(StoreUnavailable, match=r"redis\+cluster://:\*\*\*@127\.0\.0\.1:1"):
            operation()
    assert time.monotonic() - started < 3
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/2", "only database 0"),
        ("redis+cluster://127.0.0.1:port", "bad host"),
        ("redis+cluster://127.0.0.1:7000?max_connections=3", "unknown option 'max_connections'"),
        ("redis+cluster://127.0.0.1:7000?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://127.0.0.1:26379", "must name the service"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/db1", "must name the service"),
        ("redis+sentinel://:pw@127.0.0.1:99999/mymaster", "bad host"),
    ],
)
def test_bad_cluster_and_sentinel_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(SessionConfigError, match=message) as caught:
        RedisStore(url)
    assert "pw@" not in str(caught.value)


def test_store_from_url_builds_cluster_and_sentinel_stores(
    redis_cluster: RedisCluster, redis_sentinel: RedisSentinel
) -> None:
    from websession import store_from_url

    cluster = store_from_url(redis_cluster.url, prefix=fresh_prefix())
    assert type(cluster) is RedisStore
    assert isinstance(cluster.client, redis.cluster.RedisCluster)
    sentinel = store_from_url(redis_sentinel.url)
    assert type(sentinel) is RedisStore
    assert isinstance(sentinel.client.connection_pool, redis.sentinel.SentinelConnectionPool)
    async_cluster = store_from_url(redis_cluster.url, asynchronous=True)
    assert type(async_cluster) is AsyncRedisStore
    assert isinstance(async_cluster.client, redis.asyncio.cluster.RedisCluster)
    async_sentinel = store_from_url(redis_sentinel.url, asynchronous=True)
    assert type(async_sentinel) is AsyncRedisStore
    assert isinstance(
        async_sentinel.client.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool
    )
    for store in (cluster, sentinel):
        key = make_key("from-url")
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
        assert store.load(key) is not None
        store.close()


# -- Sentinel --------------------------------------------------------------------------------


def test_sentinel_finds_the_master_and_its_database(redis_sentinel: RedisSentinel) -> None:
    store = RedisStore(f"{redis_sentinel.url}/3", prefix=fresh_prefix())
    key = make_key("via-sentinel")
    store.save(key, b"on the master", expected_version=None, ttl=TTL, meta=meta())
    with redis.Redis(port=redis_sentinel.master_port, db=3) as master:
        assert master.get(store.prefix + key) is not None
    with redis.Redis(port=redis_sentinel.master_port, db=0) as master:
        assert master.get(store.prefix + key) is None
    store.close()


def test_a_users_sentinel_master_client_is_used_as_is(redis_sentinel: RedisSentinel) -> None:
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", redis_sentinel.sentinel_port)])
    client = sentinel.master_for(redis_sentinel.service)
    store = RedisStore(client, prefix=fresh_prefix())
    assert store.client is client
    expected = f"redis+sentinel://127.0.0.1:{redis_sentinel.sentinel_port}/{redis_sentinel.service}"
    assert store.url == expected
    key = make_key("users-sentinel")
    version = store.save(key, b"1", expected_version=None, ttl=TTL, meta=meta())
    assert store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta()) == version + 1
    store.close()
    assert client.get(store.prefix + key) is not None
    client.close()


def test_a_sentinel_that_does_not_know_the_service_is_unavailable(
    redis_sentinel: RedisSentinel,
) -> None:
    store = RedisStore(f"redis+sentinel://127.0.0.1:{redis_sentinel.sentinel_port}/no-such")
    with pytest.raises(StoreUnavailable, match="no-such"):
        store.load(make_key("x"))
    store.close()


# -- a server that dies and comes back ------------------------------------------------------


def _visit(app: Any, path: str, token: str | None = None) -> tuple[int, Any, str | None]:
    status, headers, body = call_wsgi(
        app, path, cookie=None if token is None else f"session={token}"
    )
    cookies = set_cookies(headers)
    new_token = cookie_value(cookies[0]) if cookies else token
    return status, json.loads(body) if status == 200 else body, new_token


def test_a_killed_server_answers_503_and_the_same_store_serves_after_restart(
    killable_redis: KillableRedis,
) -> None:
    timeout = 0.5
    store = RedisStore(killable_redis.url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def view(session: Session, environ: dict[str, Any]) -> Any:
        if environ["QUERY_STRING"]:
            session["cart"] = environ["QUERY_STRING"]
        return session.to_dict()

    app = WSGIMiddleware(wsgi_app(view), store=store)
    status, body, token = _visit(app, "/?apple")
    assert (status, body) == (200, {"cart": "apple"})
    assert token is not None
    assert _visit(app, "/", token)[:2] == (200, {"cart": "apple"})

    killable_redis.kill()
    key = hash_id(token)
    for operation in (
        lambda: store.load(key),
        lambda: store.save(key, b"x", expected_version=1, ttl=TTL, meta=meta()),
        lambda: store.touch(key, TTL),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=killable_redis.url):
            operation()
        assert time.monotonic() - started < 2 * timeout + 0.5  # bounded by the timeouts
    status, body, _ = _visit(app, "/", token)
    assert status == 503
    assert b"503" in body
    assert _visit(app, "/?pear")[0] == 503  # a new session cannot be saved either

    killable_redis.restart()  # the same port, and (no persistence) no sessions
    status, body, _ = _visit(app, "/", token)
    assert (status, body) == (200, {})
    status, body, fresh = _visit(app, "/?plum")
    assert (status, body) == (200, {"cart": "plum"})
    assert fresh is not None
    assert fresh != token
    assert _visit(app, "/", fresh)[:2] == (200, {"cart": "plum"})
    store.close()


def test_the_async_store_recovers_after_a_restart(killable_redis: KillableRedis) -> None:
    async def main() -> None:
        store = AsyncRedisStore(killable_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        key = make_key("async-restart")
        await store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
        killable_redis.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load(key)
        with pytest.raises(StoreUnavailable):
            await store.save(key, b"y", expected_version=None, ttl=TTL, meta=meta())
        assert time.monotonic() - started < 2
        killable_redis.restart()
        assert await store.load(key) is None  # nothing survived the crash
        version = await store.save(key, b"again", expected_version=None, ttl=TTL, meta=meta())
        entry = await store.load(key)
        assert entry is not None
        assert (entry.payload, entry.version) == (b"again", version)
        await store.aclose()

    asyncio.run(main())
