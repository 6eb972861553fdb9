"""Prepared sessions (websession.testing): every framework's test client starts signed in.

Each test writes a session with ``prepare_session`` into the store the app
uses, puts it on the framework's own test client with ``.apply(client)``, and
checks what the app sees on its first request: the data, the user, queued
flashes and the CSRF token.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

import django_settings
from services import REDIS_URL, adelete_keys, redis_client, run_prefix
from websession import SessionConfigError, UnserializableValue
from websession._prepared import PreparedSession, aprepare_session, prepare_session
from websession.codecs import decode_payload
from websession.ids import handle_of, hash_id, is_valid_id
from websession.integrations.fastapi import SessionDep
from websession.stores import CookieStore, MemoryStore, SQLiteStore
from websession.stores.memory import AsyncMemoryStore

django_settings.configure(__name__)

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import path  # noqa: E402

SECRET = "prepared-session-tests-secret-0123456789"
DATA = {"cart": [1, 2], "theme": "dark", "since": date(2024, 5, 1)}


def _expected(body: dict[str, Any]) -> None:
    assert body["cart"] == [1, 2]
    assert body["theme"] == "dark"
    assert body["user"] == "alice"


# -- the record itself ----------------------------------------------------------------------------


def test_record_is_stored_under_the_hash_with_metadata_and_ttl() -> None:
    now = 1_700_000_000.0
    store = MemoryStore(clock=lambda: now)
    prepared = prepare_session(
        store,
        DATA,
        user_id=7,
        flashes=[("info", "welcome"), "plain"],
        csrf=True,
        clock=lambda: now,
        idle_timeout=600,
    )
    assert is_valid_id(prepared.token)
    assert prepared.key == hash_id(prepared.token)
    assert prepared.handle == handle_of(prepared.key)
    assert prepared.user_id == "7"
    assert prepared.expires == now + 600
    entry = store.load(prepared.key)
    assert entry is not None
    assert (entry.version, entry.created, entry.last_seen, entry.expires) == (
        1,
        now,
        now,
        now + 600,
    )
    assert entry.user_id == "7"
    payload = decode_payload(entry.payload)
    assert payload.d == DATA
    assert payload.f == [("info", "welcome"), ("message", "plain")]
    assert payload.c == prepared.csrf_token
    assert prepared.csrf_token is not None
    # The token is a live credential: it never shows in a repr.
    assert prepared.token not in repr(prepared)
    assert prepared.cookies == {"session": prepared.token}


def test_absolute_timeout_caps_the_ttl() -> None:
    store = MemoryStore()
    prepared = prepare_session(store, {"a": 1}, idle_timeout=3600, absolute_timeout=60)
    entry = store.load(prepared.key or "")
    assert entry is not None
    # created is the flow's clock and expires the store's, read moments apart: within a second.
    assert entry.expires - entry.created == pytest.approx(60, abs=1)


def test_unstorable_value_names_its_key() -> None:
    with pytest.raises(UnserializableValue, match="handle"):
        prepare_session(MemoryStore(), {"handle": object()})


def test_memory_url_is_refused_with_a_hint() -> None:
    with pytest.raises(SessionConfigError, match="MemoryStore object"):
        prepare_session("memory://", {"a": 1})


def test_async_network_store_needs_the_async_helper() -> None:
    class AsyncOnly:
        async def load(self, key: str) -> None:
            return None

        async def save(self, key: str, payload: bytes, **kwargs: Any) -> int:
            return 1

    with pytest.raises(SessionConfigError, match="aprepare_session"):
        prepare_session(AsyncOnly(), {"a": 1})


def test_sqlite_url_names_the_same_file_the_app_uses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    prepared = prepare_session(url, {"a": 1}, user_id="u")
    entry = SQLiteStore(tmp_path / "sessions.db").load(prepared.key or "")
    assert entry is not None
    assert entry.user_id == "u"


# -- Flask ----------------------------------------------------------------------------------------


def _flask_app(interface: Any) -> Any:
    import flask

    from websession.integrations.flask import current_session

    app = flask.Flask(__name__)
    app.secret_key = SECRET
    app.session_interface = interface

    @app.get("/whoami")
    def whoami() -> Any:
        session = current_session()
        return {
            "cart": session.get("cart"),
            "theme": session.get("theme"),
            "user": session.user_id,
            "flashes": flask.get_flashed_messages(with_categories=True),
            "csrf": session.csrf_token(),
        }

    return app


def test_flask_test_client_starts_signed_in() -> None:
    from websession.integrations.flask import SessionInterface

    store = MemoryStore()
    client = _flask_app(SessionInterface(store)).test_client()
    prepared = prepare_session(store, DATA, "alice", flashes=[("info", "hi")], csrf=True)
    body = prepared.apply(client).get("/whoami").get_json()
    _expected(body)
    assert body["flashes"] == [["info", "hi"]]
    assert body["csrf"] == prepared.csrf_token
    # The flash was consumed and saved: the next page has none.
    assert client.get("/whoami").get_json()["flashes"] == []


def test_flask_cookie_sessions_get_a_signed_cookie() -> None:
    from websession.integrations.flask import SessionInterface

    client = _flask_app(SessionInterface()).test_client()
    prepared = prepare_session(CookieStore([SECRET]), DATA, "alice")
    assert prepared.key is None
    assert prepared.handle is None
    _expected(prepared.apply(client).get("/whoami").get_json())


def test_without_the_prepared_cookie_flask_sees_nobody() -> None:
    from websession.integrations.flask import SessionInterface

    store = MemoryStore()
    prepare_session(store, DATA, "alice")
    body = _flask_app(SessionInterface(store)).test_client().get("/whoami").get_json()
    assert body["user"] is None
    assert body["cart"] is None


# -- Django ---------------------------------------------------------------------------------------


def django_whoami(request: HttpRequest) -> JsonResponse:
    session = request.session
    return JsonResponse(
        {"cart": session.get("cart"), "theme": session.get("theme"), "key": session.session_key}
    )


urlpatterns = [path("whoami", django_whoami)]


def test_django_test_client_starts_with_the_data() -> None:
    store = MemoryStore()
    with override_settings(ROOT_URLCONF=__name__, WEBSESSION_STORE=store):
        prepared = prepare_session(store, {**DATA, "_auth_user_id": "1"}, "1")
        client = prepared.apply(DjangoClient())
        # The Django client's cookie is settings.SESSION_COOKIE_NAME, not the config's name.
        assert "sessionid" in client.cookies
        body = client.get("/whoami").json()
    assert body["cart"] == [1, 2]
    assert body["theme"] == "dark"
    assert body["key"] == prepared.token


# -- Starlette and FastAPI ------------------------------------------------------------------------


def _starlette_app(**options: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from websession.integrations.starlette import SessionMiddleware, get_session

    async def whoami(request: Request) -> JSONResponse:
        core = get_session(request)
        return JSONResponse(
            {
                "cart": request.session.get("cart"),
                "theme": request.session.get("theme"),
                "user": core.user_id,
                "flashes": core.pop_flashes(),
            }
        )

    return Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, **options)],
    )


def test_starlette_test_client_starts_signed_in() -> None:
    from starlette.testclient import TestClient

    store = MemoryStore()
    with TestClient(_starlette_app(store=store)) as client:
        prepared = prepare_session(store, DATA, "alice", flashes=["hello"])
        body = prepared.apply(client).get("/whoami").json()
    _expected(body)
    assert body["flashes"] == [["message", "hello"]]


def test_starlette_cookie_sessions_get_a_signed_cookie() -> None:
    from starlette.testclient import TestClient

    with TestClient(_starlette_app()) as client:
        prepared = prepare_session(CookieStore([SECRET]), DATA, "alice")
        _expected(prepared.apply(client).get("/whoami").json())


def test_fastapi_test_client_starts_signed_in(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from websession.integrations.starlette import SessionMiddleware

    store = SQLiteStore(tmp_path / "sessions.db")
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key=SECRET, store=store)

    @app.get("/whoami")
    def whoami(session: SessionDep) -> dict[str, Any]:
        return {"cart": session.get("cart"), "theme": session.get("theme"), "user": session.user_id}

    with TestClient(app) as client:
        prepared = prepare_session(store, DATA, "alice")
        _expected(prepared.apply(client).get("/whoami").json())


# -- the generic ASGI middleware with httpx, header transport -------------------------------------


def _asgi_app(store: Any, **options: Any) -> Any:
    from websession.asgi import SessionMiddleware

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        body = json.dumps(
            {"cart": session.get("cart"), "theme": session.get("theme"), "user": session.user_id}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return SessionMiddleware(inner, store=store, **options)


@pytest.mark.anyio
async def test_httpx_async_client_on_the_asgi_middleware() -> None:
    store = AsyncMemoryStore()
    prepared = await aprepare_session(store, DATA, "alice")
    transport = httpx.ASGITransport(app=_asgi_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        _expected((await prepared.apply(client).get("/")).json())


@pytest.mark.anyio
async def test_header_transport_sets_the_header_not_a_cookie() -> None:
    store = AsyncMemoryStore()
    prepared = await aprepare_session(store, DATA, "alice", transport="header")
    transport = httpx.ASGITransport(app=_asgi_app(store, transport="header"))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        prepared.apply(client)
        assert not client.cookies
        assert client.headers["X-Session-Token"] == prepared.token
        _expected((await client.get("/")).json())


# -- Pyramid (WebTest) ----------------------------------------------------------------------------


def test_webtest_app_starts_signed_in() -> None:
    from pyramid.config import Configurator
    from webtest import TestApp

    from websession.integrations.pyramid import session_factory

    store = MemoryStore()

    def whoami(request: Any) -> dict[str, Any]:
        session = request.session
        return {
            "cart": session.get("cart"),
            "theme": session.get("theme"),
            "user": session.user_id,
            "flashes": session.pop_flash("info"),
        }

    with Configurator() as config:
        config.set_session_factory(session_factory(store))
        config.add_route("whoami", "/whoami")
        config.add_view(whoami, route_name="whoami", renderer="json")
        app = config.make_wsgi_app()
    client = TestApp(app)
    prepared = prepare_session(store, DATA, "alice", flashes=[("info", "hi")])
    body = prepared.apply(client).get("/whoami").json
    _expected(body)
    assert body["flashes"] == ["hi"]


# -- aiohttp --------------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_aiohttp_test_client_starts_signed_in(anyio_backend: str) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from websession.integrations.aiohttp import get_session, setup

    store = MemoryStore()

    async def whoami(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response(
            {"cart": session.get("cart"), "theme": session.get("theme"), "user": session.user_id}
        )

    app = web.Application()
    setup(app, store=store)
    app.router.add_get("/whoami", whoami)
    prepared = prepare_session(store, DATA, "alice")
    async with TestClient(TestServer(app)) as client:
        response = await prepared.apply(client).get("/whoami")
        _expected(await response.json())


# -- an async network store -----------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_async_redis_store(anyio_backend: str) -> None:
    redis_client().close()  # skips (fails under CI) without redis-py or a server
    from redis.asyncio import Redis

    from websession.stores.redis import AsyncRedisStore

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    prefix = run_prefix("prepared")
    store = AsyncRedisStore(client, prefix=prefix)
    try:
        prepared = await aprepare_session(store, DATA, "alice")
        transport = httpx.ASGITransport(app=_asgi_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            _expected((await prepared.apply(http).get("/")).json())
    finally:
        await adelete_keys(client, prefix)
        await client.aclose()


def test_prepared_session_is_exported_from_websession_testing() -> None:
    import websession.testing as testing

    assert testing.prepare_session is prepare_session
    assert testing.PreparedSession is PreparedSession


# -- after the app rotates the id, the client follows the new cookie ------------------------------


def test_rotation_replaces_the_prepared_cookie_on_an_httpx_client() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from websession.integrations.starlette import SessionMiddleware, get_session

    async def promote(request: Request) -> JSONResponse:
        get_session(request).login("admin")
        return JSONResponse({"ok": True})

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(
            {"user": get_session(request).user_id, "cart": request.session.get("cart")}
        )

    store = MemoryStore()
    app = Starlette(
        routes=[Route("/promote", promote, methods=["POST"]), Route("/whoami", whoami)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    with TestClient(app) as client:
        prepared = prepare_session(store, DATA, "alice")
        prepared.apply(client)
        assert client.post("/promote").status_code == 200
        # One cookie, the new one: the old id is deleted and must not be sent any more.
        assert client.cookies["session"] != prepared.token
        assert client.get("/whoami").json() == {"user": "admin", "cart": [1, 2]}


def test_rotation_replaces_the_prepared_cookie_on_flask_and_webtest() -> None:
    import flask
    from webtest import TestApp

    from websession.integrations.flask import SessionInterface, current_session

    store = MemoryStore()
    app = _flask_app(SessionInterface(store))

    @app.post("/promote")
    def promote() -> Any:
        current_session().login("admin")
        return {"ok": True}

    for client, get in (
        (app.test_client(), lambda c: c.get("/whoami").get_json()),
        (TestApp(app), lambda c: c.get("/whoami").json),
    ):
        prepare_session(store, DATA, "alice").apply(client)
        client.post("/promote")
        body = get(client)
        assert (body["user"], body["cart"]) == ("admin", [1, 2]), type(client)
    assert flask.Flask  # the Flask app above is a real one


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_rotation_replaces_the_prepared_cookie_on_aiohttp(anyio_backend: str) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from websession.integrations.aiohttp import get_session, setup

    store = MemoryStore()

    async def promote(request: web.Request) -> web.Response:
        (await get_session(request)).login("admin")
        return web.json_response({"ok": True})

    async def whoami(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"user": session.user_id, "cart": session.get("cart")})

    app = web.Application()
    setup(app, store=store)
    app.router.add_post("/promote", promote)
    app.router.add_get("/whoami", whoami)
    async with TestClient(TestServer(app)) as client:
        prepare_session(store, DATA, "alice").apply(client)
        assert (await client.post("/promote")).status == 200
        body = await (await client.get("/whoami")).json()
    assert body == {"user": "admin", "cart": [1, 2]}
