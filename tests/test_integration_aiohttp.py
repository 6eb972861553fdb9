"""aiohttp integration: setup(app, store=...) and await get_session(request).

Every test runs a real aiohttp server on a loopback port (aiohttp's
TestServer) and talks to it with aiohttp's cookie-keeping TestClient. The
store-parametrised tests run on MemoryStore, SQLiteStore and AsyncRedisStore;
Redis is the server at ``WEBSESSION_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) with a key prefix unique to the run, and only
those keys are deleted afterwards. Without a server the Redis cases are
skipped, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from helpers import SlowAsyncStore, cookie_attributes, count_of, csrf_of, load_example
from services import REDIS_URL, adelete_keys, redis_client, run_prefix
from websession import SessionConfigError, SessionStateError, StoreUnavailable
from websession.ids import hash_id
from websession.integrations.aiohttp import get_session, setup
from websession.stores import MemoryStore, SQLiteStore
from websession.stores.base import Entry, Meta

pytestmark = pytest.mark.anyio

RUN_PREFIX = run_prefix("aiohttp")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@asynccontextmanager
async def open_store(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh store of ``kind``, closed (and for Redis, emptied of its keys) afterwards."""
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "sessions.db")
        try:
            yield store
        finally:
            store.close()
    else:
        redis_client().close()  # skips (fails under CI) without a server
        from websession.stores.redis import AsyncRedisStore

        prefix = f"{RUN_PREFIX}{uuid.uuid4().hex[:12]}:"
        redis_store = AsyncRedisStore(REDIS_URL, prefix=prefix)
        try:
            yield redis_store
        finally:
            await adelete_keys(redis_store.client, prefix)
            await redis_store.aclose()


@asynccontextmanager
async def serve(
    routes: Mapping[str, Handler], store: Any, **options: Any
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client to a real aiohttp server with ``routes`` (all methods) and sessions."""
    app = web.Application()
    setup(app, store=store, **options)
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    async with TestClient(TestServer(app)) as client:
        yield client


async def load(store: Any, key: str) -> Entry | None:
    """``store.load(key)`` for a sync or an async store."""
    entry: Entry | Awaitable[Entry | None] | None = store.load(key)
    return await entry if inspect.isawaitable(entry) else entry


def session_cookie(response: Any) -> str | None:
    values = response.headers.getall("Set-Cookie", [])
    assert len(values) <= 1, values
    return values[0] if values else None


async def count(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["n"] = session.get("n", 0) + 1
    return web.json_response({"n": session["n"], "user": session.user_id})


async def login(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.login(request.query["user"])
    session.flash(f"hello {request.query['user']}", "info")
    raise web.HTTPSeeOther("/count")


async def flashes(request: web.Request) -> web.Response:
    session = await get_session(request)
    return web.json_response({"flashes": session.pop_flashes()})


# -- every store ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_counter_login_rotation_and_flash(kind: str, tmp_path: Path) -> None:
    async with open_store(kind, tmp_path) as store:
        routes = {"/count": count, "/login": login, "/flashes": flashes}
        async with serve(routes, store) as client:
            first = await client.get("/count")
            assert await first.json() == {"n": 1, "user": None}
            set_cookie = session_cookie(first)
            assert set_cookie is not None
            assert "httponly" in cookie_attributes(set_cookie)
            assert first.headers["Vary"] == "Cookie"
            for expected in (2, 3):
                assert (await (await client.get("/count")).json())["n"] == expected
            anonymous = client.session.cookie_jar.filter_cookies(client.make_url("/"))["session"]

            # The redirect is raised; it still carries the new cookie.
            response = await client.get("/login", params={"user": "ann"}, allow_redirects=False)
            assert response.status == 303
            rotated = session_cookie(response)
            assert rotated is not None
            assert anonymous.value not in rotated
            assert await (await client.get("/count")).json() == {"n": 4, "user": "ann"}
            assert await (await client.get("/flashes")).json() == {
                "flashes": [["info", "hello ann"]]
            }
            assert await (await client.get("/flashes")).json() == {"flashes": []}

            # The pre-login id was deleted at login: it brings back nothing.
            assert await load(store, hash_id(anonymous.value)) is None
            client.session.cookie_jar.clear()
            client.session.cookie_jar.update_cookies({"session": anonymous.value})
            assert await (await client.get("/count")).json() == {"n": 1, "user": None}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_streamed_response_gets_the_cookie(kind: str, tmp_path: Path) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session["streams"] = session.get("streams", 0) + 1
        response = web.StreamResponse(headers={"Vary": "Accept-Encoding"})
        await response.prepare(request)
        await response.write(f"stream {session['streams']}\n".encode())
        await response.write(b"more\n")
        return response

    async with open_store(kind, tmp_path) as store, serve({"/s": stream}, store) as client:
        first = await client.get("/s")
        assert await first.text() == "stream 1\nmore\n"
        assert session_cookie(first) is not None
        assert first.headers["Vary"] == "Accept-Encoding, Cookie"
        second = await client.get("/s")
        assert await second.text() == "stream 2\nmore\n"


# -- streaming details -----------------------------------------------------------------


async def test_changes_after_prepare_reach_a_stored_session() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session.setdefault("seen", 0)
        response = web.StreamResponse()
        await response.prepare(request)
        session["seen"] += 1  # after the headers left: still saved to the record
        await response.write(b"ok")
        return response

    async def show(request: web.Request) -> web.Response:
        return web.json_response(dict(await get_session(request)))

    async with serve({"/s": stream, "/show": show}, MemoryStore()) as client:
        first = await client.get("/s")  # the record is created at prepare (seen=0)
        assert session_cookie(first) is not None
        assert await (await client.get("/show")).json() == {"seen": 1}
        second = await client.get("/s")
        assert session_cookie(second) is None  # nothing new to tell the browser
        assert await (await client.get("/show")).json() == {"seen": 2}


async def test_login_after_prepare_is_refused() -> None:
    outcome: list[str] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session["x"] = 1
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            session.login("late")
        except SessionStateError as exc:
            outcome.append(str(exc))
        await response.write(b"ok")
        return response

    async with serve({"/s": stream}, MemoryStore()) as client:
        response = await client.get("/s")
        assert response.status == 200
        assert outcome
        assert "login()" in outcome[0]


# -- laziness, headers, status -----------------------------------------------------------


async def test_no_store_call_when_the_handler_never_asks() -> None:
    store = SlowAsyncStore(MemoryStore())

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async with serve({"/plain": plain, "/count": count}, store) as client:
        await client.get("/count")
        store.calls.clear()
        response = await client.get("/plain")  # the cookie is sent, never looked up
        assert store.calls == {}
        assert "Vary" not in response.headers
        assert session_cookie(response) is None
        assert (await (await client.get("/count")).json())["n"] == 2
        assert store.calls["load"] == 1


async def test_autoload_false_still_gives_a_loaded_session() -> None:
    store = SlowAsyncStore(MemoryStore())

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async with serve({"/plain": plain, "/count": count}, store, autoload=False) as client:
        await client.get("/count")
        store.calls.clear()
        await client.get("/plain")
        assert store.calls == {}
        assert (await (await client.get("/count")).json())["n"] == 2
        assert store.calls["load"] == 1


async def test_getting_the_session_without_reading_it_marks_nothing() -> None:
    store = SlowAsyncStore(MemoryStore())

    async def fetch_only(request: web.Request) -> web.Response:
        await get_session(request)
        return web.Response(text="hi")

    async with serve({"/fetch": fetch_only, "/count": count}, store) as client:
        await client.get("/count")
        response = await client.get("/fetch")
        assert "Vary" not in response.headers
        assert session_cookie(response) is None


async def test_async_store_round_trip_and_header_transport() -> None:
    store = SlowAsyncStore(MemoryStore())
    async with serve({"/count": count}, store, transport="header") as client:
        first = await client.get("/count")
        token = first.headers["X-Session-Token"]
        assert session_cookie(first) is None
        assert first.headers["Vary"] == "X-Session-Token"
        again = await client.get("/count", headers={"X-Session-Token": token})
        assert (await again.json())["n"] == 2


async def test_server_error_saves_nothing() -> None:
    store = MemoryStore()

    async def broken(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["half"] = "done"
        return web.Response(status=500, text="oops")

    async def crash(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["half"] = "done"
        raise RuntimeError("boom")

    async with serve({"/broken": broken, "/crash": crash}, store) as client:
        assert session_cookie(await client.get("/broken")) is None
        response = await client.get("/crash")
        assert response.status == 500
        assert session_cookie(response) is None
    assert len(store) == 0


async def test_get_session_without_setup_is_an_error() -> None:
    errors: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        try:
            await get_session(request)
        except SessionStateError as exc:
            errors.append(str(exc))
        return web.Response(text="")

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        await client.get("/")
    assert errors
    assert "setup(app)" in errors[0]


def test_sync_network_store_is_refused() -> None:
    class BlockingStore:
        """A sync store that does network I/O (not inline): it would block the loop."""

        inline = False
        max_payload_size = None

        def load(self, key: str) -> Entry | None:
            return None

        def save(self, key: str, payload: bytes, **options: Any) -> int:
            return 1

    with pytest.raises(SessionConfigError, match="block the event loop"):
        setup(web.Application(), store=BlockingStore())


async def test_sub_application_shares_the_session() -> None:
    sub = web.Application()
    sub.router.add_get("/count", count)
    app = web.Application()
    setup(app, store=MemoryStore())
    app.router.add_get("/count", count)
    app.add_subapp("/sub", sub)
    async with TestClient(TestServer(app)) as client:
        await client.get("/count")
        assert (await (await client.get("/sub/count")).json())["n"] == 2


# -- store failures --------------------------------------------------------------------


class FlakyAsyncStore(SlowAsyncStore):
    """An async store that fails like an unreachable server while ``down`` is set."""

    down = False

    async def load(self, key: str) -> Entry | None:
        if self.down:
            raise StoreUnavailable("flaky store is down")
        return await super().load(key)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        if self.down:
            raise StoreUnavailable("flaky store is down")
        return await super().save(
            key, payload, expected_version=expected_version, ttl=ttl, meta=meta
        )


async def test_store_down_answers_503_and_loses_nothing() -> None:
    store = FlakyAsyncStore(MemoryStore())

    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session["streamed"] = True
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"never sent")
        return response

    async with serve({"/count": count, "/s": stream}, store) as client:
        await client.get("/count")
        store.down = True
        at_load = await client.get("/count")
        assert at_load.status == 503
        assert at_load.headers["Retry-After"] == "5"
        assert session_cookie(at_load) is None
        store.down = False
        assert (await (await client.get("/count")).json())["n"] == 2

        client.session.cookie_jar.clear()
        store.down = True  # a new visitor: nothing to load, the save fails
        at_save = await client.get("/count")
        assert at_save.status == 503
        assert session_cookie(at_save) is None
        at_prepare = await client.get("/s")
        assert at_prepare.status == 503
        assert "session store" in await at_prepare.text()
        assert session_cookie(at_prepare) is None


@pytest.mark.parametrize("framing", ["chunked", "compressed", "content-length"])
async def test_503_at_prepare_leaves_the_connection_usable(framing: str) -> None:
    store = FlakyAsyncStore(MemoryStore())

    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session["streamed"] = True
        response = web.StreamResponse()
        if framing == "compressed":
            response.enable_compression()
        elif framing == "content-length":
            response.content_length = 10
        await response.prepare(request)
        await response.write(b"never sent")
        return response

    async with serve({"/count": count, "/s": stream}, store) as client:
        store.down = True
        failed = await client.get("/s")
        assert failed.status == 503
        assert (
            await failed.text() == "503 Service Unavailable: the session store cannot be reached.\n"
        )
        store.down = False
        # The same keep-alive connection carries the next exchange intact.
        for expected in (1, 2):
            assert (await (await client.get("/count")).json())["n"] == expected
        assert await (await client.get("/s")).read() == b"never sent"


async def test_fail_open_serves_an_unsaved_session() -> None:
    store = FlakyAsyncStore(MemoryStore())
    async with serve({"/count": count}, store, on_store_error="fail_open") as client:
        await client.get("/count")
        store.down = True
        assert (await (await client.get("/count")).json())["n"] == 1
        store.down = False
        assert (await (await client.get("/count")).json())["n"] == 2


# -- the example app ---------------------------------------------------------------------


async def test_example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("aiohttp_app", tmp_path, monkeypatch)
    async with TestClient(TestServer(example.app)) as client:
        counts = [count_of(await (await client.get("/")).text()) for _ in range(3)]
        assert counts == [1, 2, 3]
        page = await (await client.get("/")).text()

        forged = await client.post("/login", data={"user": "zoe", "csrf": "forged"})
        assert forged.status == 403
        page = await (
            await client.post("/login", data={"user": "zoe", "csrf": csrf_of(page)})
        ).text()
        assert "<em>Welcome, zoe.</em>" in page  # followed the 303
        assert "Logged in as zoe." in page
        assert count_of(page) == 5

        streamed = await client.get("/stream")
        assert await streamed.text() == "stream number 1\nchunk one\nchunk two\n"
        assert (await (await client.get("/stream")).text()).startswith("stream number 2\n")

        page = await (await client.post("/logout", data={"csrf": csrf_of(page)})).text()
        assert "You are logged out." in page
        assert count_of(page) == 1
    assert (tmp_path / "sessions.db").exists()
