"""MemcachedStore and AsyncMemcachedStore against real memcached servers of the run's own.

The ``redis_servers`` plugin starts memcached on a spare loopback port (and
skips, or under CI installs it, when the binary is missing). Every store here
gets a prefix of its own, so tests never see each other's keys.

The store keeps each session's expiry in its header and judges it by the
store clock, so the contract's fake-clock expiry tests run as they are; the
ones that expect ``delete_expired`` to remove entries are replaced (memcached
drops expired items itself), and real-time tests show that it does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest

from helpers import (
    assert_concurrent_writers_survive,
    call_wsgi,
    cookie_value,
    meta,
    set_cookies,
    wsgi_app,
)
from services import requires
from websession.errors import Conflict, Gone, SessionConfigError, StoreError, StoreUnavailable
from websession.ids import hash_id
from websession.session import Session
from websession.stores.base import Meta
from websession.testing import AsyncStoreContract, FakeClock, StoreContract, make_key
from websession.wsgi import SessionMiddleware as WSGIMiddleware

if TYPE_CHECKING:
    from redis_servers import Memcached

with requires("pymemcache", "memcached"):
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient

    from websession.stores import memcached as memcached_module
    from websession.stores.memcached import AsyncMemcachedStore, MemcachedStore, exptime

pytest_plugins = ["redis_servers"]

TTL = 600.0
DAY = 24 * 3600


def fresh_prefix() -> str:
    return f"ws-test:{uuid.uuid4().hex[:12]}:"


def raw_client(server: Memcached) -> Client:
    return Client(("127.0.0.1", server.port), timeout=2, connect_timeout=2, default_noreply=False)


def dump_keys(port: int) -> list[str]:
    """Every key memcached holds, read with ``lru_crawler metadump all``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    keys = []
    for line in data.decode().splitlines():
        if line.startswith("key="):
            keys.append(unquote(line.split()[0][4:]))
    return keys


# -- the contract --------------------------------------------------------------------------


class TestMemcachedStoreContract(StoreContract):
    url = ""

    @pytest.fixture(autouse=True)
    def _server(self, memcached_server: Memcached) -> None:
        self.url = memcached_server.url

    def make_store(self, clock: Callable[[], float]) -> MemcachedStore:
        return MemcachedStore(self.url, prefix=fresh_prefix(), clock=clock)

    # memcached drops expired items itself: delete_expired has nothing to do.

    def test_delete_expired_removes_only_expired(
        self, store: MemcachedStore, clock: FakeClock
    ) -> None:
        short = [make_key(f"short-{i}") for i in range(3)]
        long = [make_key(f"long-{i}") for i in range(3)]
        for key in short:
            store.save(key, b"s", expected_version=None, ttl=10, meta=meta(clock()))
        for key in long:
            store.save(key, b"l", expected_version=None, ttl=TTL, meta=meta(clock()))
        clock.advance(10)
        assert store.delete_expired() == 0
        assert all(store.load(key) is None for key in short)
        assert all(store.load(key) is not None for key in long)
        store.save(short[0], b"again", expected_version=None, ttl=TTL, meta=meta(clock()))
        assert store.load(short[0]) is not None

    def test_delete_expired_respects_limit(self, store: MemcachedStore, clock: FakeClock) -> None:
        assert store.delete_expired(2) == 0
        with pytest.raises(SessionConfigError):
            store.delete_expired(0)


class TestAsyncMemcachedStoreContract(AsyncStoreContract):
    url = ""

    @pytest.fixture(autouse=True)
    def _server(self, memcached_server: Memcached) -> None:
        self.url = memcached_server.url

    def make_store(self, clock: Callable[[], float]) -> AsyncMemcachedStore:
        return AsyncMemcachedStore(self.url, prefix=fresh_prefix(), clock=clock)

    def test_delete_expired(self) -> None:
        async def test(store: AsyncMemcachedStore, clock: FakeClock) -> None:
            key = make_key("short")
            await store.save(key, b"x", expected_version=None, ttl=1, meta=meta(clock()))
            clock.advance(2)
            assert await store.delete_expired(2) == 0
            assert await store.load(key) is None
            with pytest.raises(SessionConfigError):
                await store.delete_expired(0)
            assert store.inline is False

        self.run(test)  # type: ignore[arg-type]


# -- expiry in memcached's own terms ---------------------------------------------------------


def test_exptime_is_whole_seconds_never_shorter_and_absolute_past_thirty_days() -> None:
    now = 1_800_000_000.25
    assert exptime(0.01, now) == 2  # a second more: memcached's clock ticks in whole seconds
    assert exptime(1, now) == 2
    assert exptime(1.5, now) == 3
    assert exptime(3600, now) == 3601
    assert exptime(30 * DAY - 1, now) == 30 * DAY  # still relative: at most 30 days
    assert exptime(30 * DAY, now) == 1_800_000_001 + 30 * DAY + 1  # absolute Unix time
    assert exptime(40 * DAY, now) == 1_800_000_001 + 40 * DAY + 1


def test_memcached_drops_an_expired_session_itself(memcached_server: Memcached) -> None:
    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())
    key = make_key("native-ttl")
    store.save(key, b"x", expected_version=None, ttl=0.2, meta=meta(time.time()))
    raw = raw_client(memcached_server)
    assert raw.get(store.prefix + key) is not None
    time.sleep(0.3)
    assert store.load(key) is None  # past the store's own expiry at once
    time.sleep(1.9)  # within two seconds memcached has dropped the item too
    assert raw.get(store.prefix + key) is None
    raw.close()


def test_a_forty_day_session_lives(memcached_server: Memcached) -> None:
    # Sent as a relative 40 days, memcached would read a time in 1970 and drop it at once.
    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())
    key = make_key("remember-me")
    store.save(key, b"x", expected_version=None, ttl=40 * DAY, meta=meta(time.time()))
    entry = store.load(key)
    assert entry is not None
    assert entry.expires == pytest.approx(time.time() + 40 * DAY, abs=5)
    assert store.touch(key, 40 * DAY) is True
    assert store.load(key) is not None


# -- memcached specifics ---------------------------------------------------------------------


class CountingClient(Client):  # type: ignore[misc]
    """A user's own pymemcache client that records every command it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []
        self.before_cas: Callable[[], None] | None = None

    def gets(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append("gets")
        return super().gets(*args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append("add")
        return super().add(*args, **kwargs)

    def cas(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append("cas")
        if self.before_cas is not None:
            hook, self.before_cas = self.before_cas, None
            hook()
        return super().cas(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append("delete")
        return super().delete(*args, **kwargs)


def counting_client(server: Memcached) -> CountingClient:
    # default_noreply=True is pymemcache's default: the store must not depend on it.
    return CountingClient(("127.0.0.1", server.port), timeout=2, connect_timeout=2)


def test_round_trips_per_operation(memcached_server: Memcached) -> None:
    client = counting_client(memcached_server)
    store = MemcachedStore(client, prefix=fresh_prefix())
    key = make_key("round-trips")

    def sent(operation: Callable[[], Any]) -> list[str]:
        client.commands.clear()
        operation()
        return list(client.commands)

    versions = [0]
    assert sent(lambda: versions.append(store.save(key, b"1", **create()))) == ["add"]
    assert sent(lambda: store.load(key)) == ["gets"]
    v1 = versions[-1]
    assert sent(lambda: store.save(key, b"2", expected_version=v1, ttl=TTL, meta=meta())) == [
        "gets",
        "cas",
    ]
    assert sent(lambda: store.touch(key, TTL)) == ["gets", "cas"]
    client.commands.clear()
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=v1, ttl=TTL, meta=meta())
    assert client.commands == ["gets"]  # a stale version is refused before any write
    assert sent(lambda: store.delete(key)) == ["delete"]
    client.close()


def test_no_user_index_and_a_clear_error_saying_why(memcached_server: Memcached) -> None:
    from websession.stores import AsyncUserIndex, UserIndex
    from websession.stores.memcached import UserIndexUnsupported

    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())
    async_store = AsyncMemcachedStore(memcached_server.url, prefix=fresh_prefix())
    assert not isinstance(store, UserIndex)
    assert not isinstance(async_store, AsyncUserIndex)
    assert not hasattr(store, "sessions_for")
    for name in ("sessions_for", "revoke", "revoke_user"):
        with pytest.raises(UserIndexUnsupported, match="RedisStore or SQLStore"):
            getattr(store, name)("u1")
        with pytest.raises(UserIndexUnsupported, match="AsyncMemcachedStore"):
            getattr(async_store, name)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        store.nonsense  # type: ignore[attr-defined]  # noqa: B018
    store.close()


def create() -> dict[str, Any]:
    return {"expected_version": None, "ttl": TTL, "meta": meta()}


def test_a_touch_between_gets_and_cas_does_not_fail_the_save(memcached_server: Memcached) -> None:
    client = counting_client(memcached_server)
    store = MemcachedStore(client, prefix=fresh_prefix())
    other = MemcachedStore(memcached_server.url, prefix=store.prefix)
    key = make_key("touch-race")
    version = store.save(key, b"1", **create())
    client.before_cas = lambda: other.touch(key, TTL)  # changes the CAS token, not the version
    client.commands.clear()
    assert store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta()) == version + 1
    assert client.commands == ["gets", "cas", "gets", "cas"]
    entry = store.load(key)
    assert entry is not None
    assert (entry.payload, entry.version) == (b"2", version + 1)
    other.close()
    client.close()


def test_a_save_between_gets_and_cas_conflicts(memcached_server: Memcached) -> None:
    client = counting_client(memcached_server)
    store = MemcachedStore(client, prefix=fresh_prefix())
    other = MemcachedStore(memcached_server.url, prefix=store.prefix)
    key = make_key("save-race")
    version = store.save(key, b"1", **create())
    client.before_cas = lambda: other.save(
        key, b"theirs", expected_version=version, ttl=TTL, meta=meta()
    )
    with pytest.raises(Conflict):
        store.save(key, b"mine", expected_version=version, ttl=TTL, meta=meta())
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == b"theirs"
    # And a logout (delete) in between is Gone, never a resurrection.
    client.before_cas = lambda: other.delete(key)
    with pytest.raises(Gone):
        store.save(key, b"zombie", expected_version=version + 1, ttl=TTL, meta=meta())
    assert store.load(key) is None
    other.close()
    client.close()


def test_the_largest_payload_fits_in_one_item(memcached_server: Memcached) -> None:
    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())
    limit = store.max_payload_size
    assert limit is not None
    assert 1_000_000 < limit < 1024 * 1024
    key = make_key("largest")
    payload = os.urandom(limit)
    store.save(key, payload, expected_version=None, ttl=TTL, meta=meta(user_agent="A" * 2000))
    entry = store.load(key)
    assert entry is not None
    assert entry.payload == payload
    with pytest.raises(StoreError, match="too large"):
        store.save(make_key("too-big"), b"x" * (1024 * 1024), **create())


def test_a_foreign_value_under_the_prefix_is_not_a_session(memcached_server: Memcached) -> None:
    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())
    key = make_key("foreign")
    raw = raw_client(memcached_server)
    raw.set(store.prefix + key, b"not a session record", expire=60)
    assert store.load(key) is None
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=None, ttl=TTL, meta=meta())
    with pytest.raises(Conflict):
        store.save(key, b"x", expected_version=1, ttl=TTL, meta=meta())
    assert store.touch(key, TTL) is False
    assert raw.get(store.prefix + key) == b"not a session record"
    raw.close()


def test_users_clients_are_used_as_they_are(memcached_server: Memcached) -> None:
    address = ("127.0.0.1", memcached_server.port)
    for client in (
        PooledClient(address),
        HashClient([address], use_pooling=True),
        HashClient([address]),
    ):
        store = MemcachedStore(client, prefix=fresh_prefix())
        key = make_key("users-client")
        version = store.save(key, b"1", **create())
        assert store.save(key, b"2", expected_version=version, ttl=TTL, meta=meta()) == 2
        store.close()
        assert client.get(store.prefix + key) is not None  # still open: it is the user's
        client.close()


def test_a_single_connection_client_is_safe_across_threads(memcached_server: Memcached) -> None:
    client = Client(("127.0.0.1", memcached_server.port))
    store = MemcachedStore(client, prefix=fresh_prefix())
    keys = [make_key(f"threads-{i}") for i in range(40)]

    def one(key: str) -> bytes | None:
        store.save(key, key.encode(), **create())
        entry = store.load(key)
        return None if entry is None else entry.payload

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one, keys)) == [key.encode() for key in keys]
    client.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("memcached://127.0.0.1:11211/0",), "no databases"),
        (("memcached://user:pw@127.0.0.1:11211",), "no passwords"),
        (("memcached://127.0.0.1:port",), "bad host"),
        (("memcached://127.0.0.1?binary=1",), "unknown option 'binary'"),
        (("memcached://127.0.0.1?socket_timeout=0",), "socket_timeout"),
        (("redis://127.0.0.1",), "not a memcached URL"),
        ((object(),), "pymemcache client"),
    ],
)
def test_bad_arguments_are_refused(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(SessionConfigError, match=message) as caught:
        MemcachedStore(*arguments)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [{"prefix": "has space:"}, {"prefix": "x" * 151}, {"serde": object()}, {"max_item_size": 10}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(SessionConfigError):
        MemcachedStore("memcached://127.0.0.1:11211", **options)


def test_options_for_a_users_client_are_refused(memcached_server: Memcached) -> None:
    with pytest.raises(SessionConfigError, match="set them on the client"):
        MemcachedStore(raw_client(memcached_server), socket_timeout=1)


def test_the_url_sets_prefix_and_timeouts(memcached_server: Memcached) -> None:
    prefix = fresh_prefix()
    store = MemcachedStore(f"{memcached_server.url}?prefix={prefix}&socket_timeout=0.5")
    assert store.prefix == prefix
    key = make_key("via-url")
    store.save(key, b"x", **create())
    assert prefix + key in dump_keys(memcached_server.port)
    assert repr(store) == f"MemcachedStore({memcached_server.url!r}, prefix={prefix!r})"


def test_store_from_url_builds_the_sync_or_async_store(memcached_server: Memcached) -> None:
    from websession import store_from_url
    from websession.stores import AsyncMemcachedStore as PublicAsync
    from websession.stores import MemcachedStore as Public

    store = store_from_url(memcached_server.url, prefix=fresh_prefix())
    assert type(store) is Public is MemcachedStore
    store.save(make_key("from-url"), b"x", **create())
    assert store.load(make_key("from-url")) is not None
    async_store = store_from_url(memcached_server.url, asynchronous=True)
    assert type(async_store) is PublicAsync is AsyncMemcachedStore


# -- failures --------------------------------------------------------------------------------


def test_a_down_server_is_unavailable_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    store = MemcachedStore(f"memcached://127.0.0.1:{port}")
    started = time.monotonic()
    for operation in (
        lambda: store.load(make_key("x")),
        lambda: store.save(make_key("x"), b"x", **create()),
        lambda: store.save(make_key("x"), b"x", expected_version=1, ttl=TTL, meta=meta()),
        lambda: store.touch(make_key("x"), TTL),
        lambda: store.delete(make_key("x")),
    ):
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}") as caught:
            operation()
        assert isinstance(caught.value.__cause__, OSError)
    assert time.monotonic() - started < 1


def test_a_silent_server_times_out_as_configured() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = MemcachedStore(f"memcached://127.0.0.1:{port}", socket_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.load(make_key("x"))
        elapsed = time.monotonic() - started
        store.close()
    assert 0.15 < elapsed < 1.0


def test_two_servers_share_the_keys_without_failover(tmp_path: Path) -> None:
    from redis_servers import start_memcached

    first, second = start_memcached(tmp_path), start_memcached(tmp_path)
    try:
        url = f"memcached://127.0.0.1:{first.port},127.0.0.1:{second.port}"
        store = MemcachedStore(url, prefix=fresh_prefix(), socket_timeout=0.5)
        keys = [make_key(f"spread-{i}") for i in range(30)]
        for key in keys:
            store.save(key, key.encode(), **create())
        on_first = {k[len(store.prefix) :] for k in dump_keys(first.port)}
        on_second = {k[len(store.prefix) :] for k in dump_keys(second.port)}
        assert on_first
        assert on_second
        assert on_first | on_second == set(keys)
        assert not on_first & on_second
        first.kill()
        for key in keys:
            if key in on_first:  # unavailable, not silently moved to the other server
                with pytest.raises(StoreUnavailable):
                    store.load(key)
            else:
                entry = store.load(key)
                assert entry is not None
                assert entry.payload == key.encode()
        store.close()
    finally:
        first.stop()
        second.stop()


# -- through the middleware -------------------------------------------------------------------

REQUESTS = 50


def test_fifty_concurrent_wsgi_writers_lose_no_update(memcached_server: Memcached) -> None:
    conflicts = 0

    class Counting(MemcachedStore):
        def save(
            self, key: str, payload: bytes, *, expected_version: int | None, ttl: float,
            meta: Meta,
        ) -> int:  # fmt: skip
            nonlocal conflicts
            try:
                return super().save(
                    key, payload, expected_version=expected_version, ttl=ttl, meta=meta
                )
            except Conflict:
                conflicts += 1
                raise

    store = Counting(memcached_server.url, prefix=fresh_prefix())

    assert_concurrent_writers_survive(store, REQUESTS)
    assert conflicts > 0  # the replay path really ran
    store.close()


def test_the_raw_dump_holds_hashed_keys_and_no_session_id(memcached_server: Memcached) -> None:
    store = MemcachedStore(memcached_server.url, prefix=fresh_prefix())

    def view(session: Session, environ: dict[str, Any]) -> None:
        session["cart"] = ["apple"]

    app = WSGIMiddleware(wsgi_app(view), store=store)
    _, headers, _ = call_wsgi(app, "/", headers={"User-Agent": "dump-test"})
    token = cookie_value(set_cookies(headers)[0])
    keys = [k for k in dump_keys(memcached_server.port) if k.startswith(store.prefix)]
    assert keys == [store.prefix + hash_id(token)]
    raw = raw_client(memcached_server)
    value = raw.get(keys[0])
    raw.close()
    assert value.startswith(b"M1")
    assert b"dump-test" in value
    assert b"apple" in value
    everything = "".join(dump_keys(memcached_server.port)).encode() + value
    assert token.encode() not in everything


def test_the_async_store_serves_the_asgi_middleware(memcached_server: Memcached) -> None:
    import httpx

    from websession.asgi import SessionMiddleware as ASGIMiddleware

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session: Session = scope["session"]
        session["hits"] = session.get("hits", 0) + 1
        body = json.dumps(session.to_dict()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> list[Any]:
        store = AsyncMemcachedStore(memcached_server.url, prefix=fresh_prefix())
        transport = httpx.ASGITransport(ASGIMiddleware(app, store=store))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            seen = [(await client.get("/")).json() for _ in range(3)]
        await store.aclose()
        return seen

    assert asyncio.run(main()) == [{"hits": 1}, {"hits": 2}, {"hits": 3}]
    assert memcached_module.AsyncMemcachedStore.inline is False
