"""websession.integrations.starlette: the drop-in for Starlette's SessionMiddleware.

Starlette's own session tests (tests/middleware/test_session.py, Starlette
1.10) are rewritten here and run on every backend: the signed cookie (no
``store=``), MemoryStore, SQLiteStore under tmp_path and AsyncRedisStore on a
real Redis with a prefix unique to the run. A parity test drives Starlette's
middleware and ours with the same requests and compares what a browser sees.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from helpers import EXAMPLES, TestClient, load_example
from services import REDIS_URL, redis_scope, run_prefix
from websession import SessionConfigError, SessionError, SessionStateError, StoreUnavailable
from websession.integrations.starlette import Session, SessionMiddleware, get_session
from websession.stores import MemoryStore, SQLiteStore
from websession.stores.base import Entry, Meta

SECRET = "starlette-test-secret-0123456789"
RUN_PREFIX = run_prefix("starlette")

# -- endpoints (the same shapes as Starlette's tests) ----------------------------------------------


def view_session(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session})


async def update_session(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": request.session})


async def inplace_update_session(request: Request) -> JSONResponse:
    session = request.session
    session |= await request.json()
    return JSONResponse({"session": request.session})


async def popitem_session(request: Request) -> JSONResponse:
    request.session.popitem()
    return JSONResponse({"session": request.session})


async def clear_session(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": request.session})


async def append_to_cart(request: Request) -> JSONResponse:
    # An in-place change: Starlette's middleware never sees it, websession does.
    request.session["cart"].append((await request.json())["item"])
    return JSONResponse({"session": request.session})


def no_session_access(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/view_session", view_session),
    Route("/update_session", update_session, methods=["POST"]),
    Route("/inplace_update_session", inplace_update_session, methods=["POST"]),
    Route("/popitem_session", popitem_session, methods=["POST"]),
    Route("/clear_session", clear_session, methods=["POST"]),
    Route("/append", append_to_cart, methods=["POST"]),
    Route("/no_session", no_session_access),
]

# -- backends --------------------------------------------------------------------------------------


@pytest.fixture
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    """One event loop for every client of a test, so an async Redis pool stays on its loop."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield portal


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Any]:
    """A Redis server the tests may write to; every key starts with this run's prefix."""
    with redis_scope(RUN_PREFIX) as client:
        yield client


@pytest.fixture(params=["cookie", "memory", "sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, portal: anyio.from_thread.BlockingPortal
) -> Iterator[Any]:
    """What ``store=`` gets: None (the signed cookie) or a store object."""
    if request.param == "cookie":
        yield None
    elif request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "sessions.db")
        yield store
        store.close()
    else:
        request.getfixturevalue("redis_server")
        from websession.stores import AsyncRedisStore

        store = AsyncRedisStore(REDIS_URL, prefix=f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}:")
        yield store
        portal.call(store.aclose)


@pytest.fixture
def make_client(portal: anyio.from_thread.BlockingPortal) -> Callable[..., TestClient]:
    def make(app: Any, **kwargs: Any) -> TestClient:
        client = TestClient(app, **kwargs)
        client.portal = portal
        return client

    return make


@pytest.fixture
def make_app(backend: Any) -> Callable[..., Starlette]:
    def make(routes: list[Any] = ROUTES, **options: Any) -> Starlette:
        options.setdefault("secret_key", SECRET)
        return Starlette(
            routes=routes, middleware=[Middleware(SessionMiddleware, store=backend, **options)]
        )

    return make


def cookie_value(response: httpx.Response, name: str = "session") -> str:
    match = re.search(rf"{name}=([^;]*);", response.headers["set-cookie"])
    assert match is not None, response.headers["set-cookie"]
    return match[1]


# -- Starlette's own test cases, on every backend --------------------------------------------------


def test_session(make_app: Callable[..., Starlette], make_client: Any) -> None:
    client = make_client(make_app())
    assert client.get("/view_session").json() == {"session": {}}

    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    max_age = re.search(r"; Max-Age=([0-9]+);", response.headers["set-cookie"])
    assert max_age is not None
    assert int(max_age[1]) == 14 * 24 * 3600

    assert client.get("/view_session").json() == {"session": {"some": "data"}}
    assert client.post("/clear_session").json() == {"session": {}}
    assert client.get("/view_session").json() == {"session": {}}


@pytest.mark.parametrize("partitioned", [False, True])
def test_partitioned_session(
    make_app: Callable[..., Starlette], make_client: Any, partitioned: bool
) -> None:
    app = make_app(https_only=True, same_site="none", partitioned=partitioned)
    client = make_client(app, base_url="https://testserver")
    response = client.post("/update_session", json={"some": "data"})
    assert ("partitioned" in response.headers["set-cookie"].split("; ")) is partitioned
    response = client.post("/clear_session")
    assert ("partitioned" in response.headers["set-cookie"].split("; ")) is partitioned


def test_session_expires(make_app: Callable[..., Starlette], make_client: Any) -> None:
    app = make_app(max_age=-1)
    response = make_client(app).post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    # The client drops an expired cookie itself, so send it back by hand.
    expired = cookie_value(response)
    client = make_client(app, cookies={"session": expired})
    assert client.get("/view_session").json() == {"session": {}}


def test_secure_session(make_app: Callable[..., Starlette], make_client: Any) -> None:
    app = make_app(https_only=True)
    secure = make_client(app, base_url="https://testserver")
    plain = make_client(app, base_url="http://testserver")

    assert plain.get("/view_session").json() == {"session": {}}
    response = plain.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "; secure" in response.headers["set-cookie"]
    # A Secure cookie does not travel over plain HTTP.
    assert plain.get("/view_session").json() == {"session": {}}

    assert secure.get("/view_session").json() == {"session": {}}
    assert secure.post("/update_session", json={"some": "data"}).json() == {
        "session": {"some": "data"}
    }
    assert secure.get("/view_session").json() == {"session": {"some": "data"}}
    assert secure.post("/clear_session").json() == {"session": {}}
    assert secure.get("/view_session").json() == {"session": {}}


def test_session_cookie_subpath(backend: Any, make_client: Any) -> None:
    second_app = Starlette(
        routes=[Route("/update_session", update_session, methods=["POST"])],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, path="/second_app", store=backend)
        ],
    )
    app = Starlette(routes=[Mount("/second_app", app=second_app)])
    client = make_client(app, base_url="http://testserver/second_app")
    response = client.post("/update_session", json={"some": "data"})
    assert response.status_code == 200
    path = re.search(r"; path=(\S+);", response.headers["set-cookie"])
    assert path is not None
    assert path[1] == "/second_app"


def test_invalid_session_cookie(make_app: Callable[..., Starlette], make_client: Any) -> None:
    app = make_app()
    response = make_client(app).post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    client = make_client(app, cookies={"session": "invalid"})
    response = client.get("/view_session")
    assert response.json() == {"session": {}}
    assert "set-cookie" not in response.headers  # a bogus cookie is ignored, as in Starlette


def test_session_cookie_without_max_age(
    make_app: Callable[..., Starlette], make_client: Any
) -> None:
    client = make_client(make_app(max_age=None))
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "Max-Age" not in response.headers["set-cookie"]
    assert client.get("/view_session").json() == {"session": {"some": "data"}}
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_session_zero_max_age(make_app: Callable[..., Starlette], make_client: Any) -> None:
    client = make_client(make_app(max_age=0))
    response = client.post("/update_session", json={"some": "data"})
    assert "; Max-Age=0; " in response.headers["set-cookie"]


def test_domain_cookie(make_app: Callable[..., Starlette], make_client: Any) -> None:
    client = make_client(make_app(domain=".example.com"))
    response = client.post("/update_session", json={"some": "data"})
    assert response.json() == {"session": {"some": "data"}}
    assert "domain=.example.com" in response.headers["set-cookie"]
    client.cookies.delete("session")
    assert client.get("/view_session").json() == {"session": {}}


def test_set_cookie_only_on_modification(
    make_app: Callable[..., Starlette], make_client: Any
) -> None:
    client = make_client(make_app())
    assert "set-cookie" in client.post("/update_session", json={"some": "data"}).headers
    response = client.get("/view_session")
    assert response.json() == {"session": {"some": "data"}}
    assert "set-cookie" not in response.headers


def test_vary_cookie_on_access(make_app: Callable[..., Starlette], make_client: Any) -> None:
    client = make_client(make_app())
    response = client.post("/update_session", json={"some": "data"})
    assert "cookie" in response.headers.get("vary", "").lower()
    response = client.get("/view_session")
    assert "cookie" in response.headers.get("vary", "").lower()
    response = client.get("/no_session")
    assert "cookie" not in response.headers.get("vary", "").lower()


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("/inplace_update_session", {"c": "3"}, {"a": "1", "b": "2", "c": "3"}),
        ("/popitem_session", None, {"a": "1"}),
    ],
)
def test_session_persists_mutations(
    make_app: Callable[..., Starlette],
    make_client: Any,
    path: str,
    data: dict[str, str] | None,
    expected: dict[str, str],
) -> None:
    client = make_client(make_app())
    assert client.post("/update_session", json={"a": "1", "b": "2"}).json() == {
        "session": {"a": "1", "b": "2"}
    }
    assert client.post(path, json=data).json() == {"session": expected}
    assert client.get("/view_session").json() == {"session": expected}


def test_session_tracks_modification() -> None:
    session = Session({"a": "1", "b": "2"})
    assert not session.modified
    session["c"] = "3"
    assert session.modified

    session = Session({"a": "1"})
    del session["a"]
    assert session.modified

    session = Session({"a": "1"})
    session.clear()
    assert session.modified

    session = Session({"a": "1"})
    session.pop("a")
    assert session.modified
    assert session.accessed

    session = Session({"a": "1"})
    session.pop("missing", None)
    assert not session.modified
    assert not session.accessed

    session = Session({"a": "1"})
    session.setdefault("b", "2")
    assert session.modified

    session = Session({"a": "1"})
    session.setdefault("a", "2")
    assert not session.modified


# -- beyond Starlette's cases ----------------------------------------------------------------------


def test_in_place_changes_are_saved(make_app: Callable[..., Starlette], make_client: Any) -> None:
    client = make_client(make_app())
    client.post("/update_session", json={"cart": []})
    client.post("/append", json={"item": "apple"})
    client.post("/append", json={"item": "pear"})
    assert client.get("/view_session").json() == {"session": {"cart": ["apple", "pear"]}}


def test_server_side_store_keeps_the_data_off_the_cookie(
    backend: Any, make_app: Callable[..., Starlette], make_client: Any
) -> None:
    client = make_client(make_app())
    response = client.post("/update_session", json={"secret-ish": "x" * 100})
    token = cookie_value(response)
    if backend is None:
        assert len(token) > 100  # the signed cookie carries the data
    else:
        assert len(token) == 43  # an id only: 256 random bits, URL-safe
        assert "x" * 20 not in token


def test_the_session_is_a_real_dict_for_json_and_unpacking(make_client: Any) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(request: Request) -> PlainTextResponse:
        session = request.session
        seen["type"] = type(session)
        seen["dumps"] = json.dumps(session, sort_keys=True)
        seen["dict"] = dict(session)
        seen["unpacked"] = {**session}
        seen["copy"] = copy.copy(session)
        seen["pickled"] = pickle.loads(pickle.dumps(session))  # noqa: S301 (our own bytes)
        return PlainTextResponse("ok")

    store = MemoryStore()
    app = Starlette(
        routes=[*ROUTES, Route("/", endpoint)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    client = make_client(app)
    client.post("/update_session", json={"a": 1, "b": [1, 2]})
    client.get("/")
    assert seen["type"] is Session
    assert seen["dumps"] == '{"a": 1, "b": [1, 2]}'
    assert seen["dict"] == seen["unpacked"] == {"a": 1, "b": [1, 2]}
    # Copies are detached data: changing them never reaches the store.
    assert seen["copy"] == seen["pickled"] == {"a": 1, "b": [1, 2]}
    seen["pickled"]["a"] = 2
    assert client.get("/view_session").json() == {"session": {"a": 1, "b": [1, 2]}}


def test_unstorable_values_fail_when_set(make_client: Any) -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        try:
            request.session["when"] = object()
        except SessionError as exc:
            return PlainTextResponse(f"refused: {exc}")
        return PlainTextResponse("stored")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())],
    )
    response = make_client(app).get("/")
    assert response.text.startswith("refused:")
    assert "when" in response.text
    assert "set-cookie" not in response.headers


def test_raw_asgi_code_reading_scope_session_sees_the_data(make_client: Any) -> None:
    """Code that skips request.session (no mark_accessed) still reads the stored data."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/set":
            scope["session"]["n"] = 7
            body = b"set"
        else:
            body = json.dumps({"n": scope["session"].get("n"), "len": len(scope["session"])})
            body = body.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = SessionMiddleware(raw, secret_key=SECRET, store=MemoryStore())
    client = make_client(app)
    assert client.get("/set").text == "set"
    response = client.get("/read")
    assert response.json() == {"n": 7, "len": 1}
    assert response.headers["vary"] == "Cookie"


def test_untouched_requests_never_load(make_client: Any) -> None:
    loads: list[str] = []

    class Watching(MemoryStore):
        def load(self, key: str) -> Entry | None:
            loads.append(key)
            return super().load(key)

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=Watching())],
    )
    client = make_client(app)
    client.post("/update_session", json={"a": 1})
    response = client.get("/no_session")
    assert loads == []
    assert "vary" not in response.headers
    client.get("/view_session")
    assert len(loads) == 1


def test_parity_with_starlettes_own_middleware(make_client: Any) -> None:
    """The same requests against Starlette's middleware and ours: the same answers and cookies."""

    def browser_view(response: httpx.Response) -> tuple[Any, ...]:
        cookie = response.headers.get("set-cookie")
        if cookie is not None:
            name, _, rest = cookie.partition("=")
            value, _, attributes = rest.partition("; ")
            cookie = (name, "null" if value == "null" else "<value>", attributes)
        return (response.status_code, response.json(), cookie, response.headers.get("vary"))

    script = [
        ("GET", "/view_session", None),
        ("GET", "/no_session", None),
        ("POST", "/update_session", {"a": "1", "b": "2"}),
        ("GET", "/view_session", None),
        ("POST", "/update_session", {"a": "1"}),  # the same value again: still "modified"
        ("POST", "/inplace_update_session", {"c": "3"}),
        ("POST", "/popitem_session", None),
        ("GET", "/no_session", None),
        ("POST", "/clear_session", None),
        ("GET", "/view_session", None),
        ("POST", "/clear_session", None),  # clearing an empty session sends nothing
    ]
    configs: list[dict[str, Any]] = [
        {},
        {"max_age": None},
        {"max_age": 60, "path": "/", "same_site": "strict"},
        {"https_only": True, "same_site": "none", "partitioned": True},
        {"session_cookie": "sid"},
    ]
    for config in configs:
        answers = []
        for middleware, extra in (
            (StarletteSessionMiddleware, {}),
            (SessionMiddleware, {"store": MemoryStore()}),
            (SessionMiddleware, {}),
        ):
            app = Starlette(
                routes=ROUTES,
                middleware=[Middleware(middleware, secret_key=SECRET, **config, **extra)],
            )
            client = make_client(app, base_url="https://testserver")
            answers.append([browser_view(client.request(m, p, json=body)) for m, p, body in script])
        assert answers[1] == answers[0], config
        assert answers[2] == answers[0], config


# -- the websession API alongside request.session --------------------------------------------------


async def login(request: Request) -> JSONResponse:
    session = get_session(request)
    session.login(request.query_params["user"])
    session.flash("welcome")
    return JSONResponse({"user": session.user_id, "session": request.session})


async def logout(request: Request) -> JSONResponse:
    get_session(request).logout()
    return JSONResponse({"session": request.session})


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse(
        {"user": session.user_id, "flashes": session.pop_flashes(), "session": request.session}
    )


CORE_ROUTES = [
    *ROUTES,
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/whoami", whoami),
]


def test_login_rotates_and_logout_clears(
    backend: Any, make_app: Callable[..., Starlette], make_client: Any
) -> None:
    client = make_client(make_app(CORE_ROUTES))
    first = cookie_value(client.post("/update_session", json={"cart": ["tea"]}))
    response = client.post("/login?user=ada")
    assert response.json() == {"user": "ada", "session": {"cart": ["tea"]}}
    assert cookie_value(response) != first
    assert client.get("/whoami").json() == {
        "user": "ada",
        "flashes": [["message", "welcome"]],
        "session": {"cart": ["tea"]},
    }
    response = client.post("/logout")
    assert response.json() == {"session": {}}
    assert cookie_value(response) == "null"
    assert client.get("/whoami").json() == {"user": None, "flashes": [], "session": {}}
    replay = make_client(client.app, cookies={"session": first})
    if backend is None:
        # The documented limit of cookie sessions: a copied cookie lives until it expires.
        assert replay.get("/whoami").json()["session"] == {"cart": ["tea"]}
    else:
        # The pre-login id is dead on the server: replaying it gives nothing.
        assert replay.get("/whoami").json()["session"] == {}


def test_writes_after_logout_start_a_new_session(make_client: Any) -> None:
    async def relog(request: Request) -> JSONResponse:
        request.session["old"] = True
        get_session(request).logout()
        request.session["after"] = "bye"
        return JSONResponse({"session": request.session})

    store = MemoryStore()
    app = Starlette(
        routes=[*ROUTES, Route("/relog", relog, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    client = make_client(app)
    assert client.post("/relog").json() == {"session": {"after": "bye"}}
    assert client.get("/view_session").json() == {"session": {"after": "bye"}}
    assert len(store) == 1


def test_concurrent_requests_changing_different_keys_both_survive() -> None:
    store = MemoryStore()
    both_loaded = asyncio.Event()
    loaded = 0

    async def slow_set(request: Request) -> JSONResponse:
        nonlocal loaded
        session = request.session
        assert session["base"] == 1
        loaded += 1
        if loaded == 2:
            both_loaded.set()
        await both_loaded.wait()
        session[request.query_params["key"]] = True
        return JSONResponse({})

    app = Starlette(
        routes=[*ROUTES, Route("/slow", slow_set, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/update_session", json={"base": 1})
            await asyncio.gather(client.post("/slow?key=x"), client.post("/slow?key=y"))
            result: dict[str, Any] = (await client.get("/view_session")).json()
            return result

    assert asyncio.run(scenario()) == {"session": {"base": 1, "x": True, "y": True}}


# -- Starlette's own cookie, until the cutoff ------------------------------------------------------


def starlette_cookie(make_client: Any, data: dict[str, Any], **options: Any) -> str:
    """A cookie written by Starlette's own SessionMiddleware."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=SECRET, **options)],
    )
    return cookie_value(make_client(app).post("/update_session", json=data))


def test_starlette_cookie_is_carried_over_before_the_cutoff(
    make_app: Callable[..., Starlette], make_client: Any
) -> None:
    legacy = starlette_cookie(make_client, {"user": "ada", "cart": [1, 2]})
    app = make_app(legacy_cookie_cutoff=datetime.now(UTC) + timedelta(days=30))
    client = make_client(app, cookies={"session": legacy})
    response = client.get("/view_session")
    assert response.json() == {"session": {"user": "ada", "cart": [1, 2]}}
    migrated = cookie_value(response)  # the data moved into a websession session at once
    assert migrated != legacy
    assert "Max-Age=1209600" in response.headers["set-cookie"]
    browser = make_client(app, cookies={"session": migrated})
    response = browser.get("/view_session")
    assert response.json() == {"session": {"user": "ada", "cart": [1, 2]}}
    assert "set-cookie" not in response.headers


def test_starlette_cookie_is_ignored_after_the_cutoff(
    make_app: Callable[..., Starlette], make_client: Any
) -> None:
    legacy = starlette_cookie(make_client, {"user": "ada"})
    app = make_app(legacy_cookie_cutoff=datetime.now(UTC) - timedelta(seconds=1))
    response = make_client(app, cookies={"session": legacy}).get("/view_session")
    assert response.json() == {"session": {}}
    assert "set-cookie" not in response.headers


def test_legacy_cookie_rules(make_client: Any) -> None:
    cutoff = datetime.now(UTC) + timedelta(days=1)
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=SECRET,
                store=MemoryStore(),
                max_age=60,
                legacy_cookie_cutoff=cutoff,
            )
        ],
    )
    # Signed with another key: not accepted.
    other = Starlette(
        routes=ROUTES,
        middleware=[Middleware(StarletteSessionMiddleware, secret_key="another-key-0123456789")],
    )
    forged = cookie_value(make_client(other).post("/update_session", json={"admin": True}))
    assert make_client(app, cookies={"session": forged}).get("/view_session").json() == {
        "session": {}
    }
    # Older than max_age: expired, as Starlette would judge it.
    later = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=SECRET,
                store=MemoryStore(),
                max_age=60,
                legacy_cookie_cutoff=cutoff,
                clock=lambda: time.time() + 3600,
            )
        ],
    )
    legacy = starlette_cookie(make_client, {"a": 1})
    assert make_client(later, cookies={"session": legacy}).get("/view_session").json() == {
        "session": {}
    }
    # Emptied by the app: the old cookie is removed, as Starlette removes a cleared session.
    response = make_client(app, cookies={"session": legacy}).post("/clear_session")
    assert cookie_value(response) == "null"


def test_legacy_cutoff_must_be_timezone_aware() -> None:
    with pytest.raises(SessionConfigError, match="timezone-aware"):
        SessionMiddleware(
            view_session, secret_key=SECRET, legacy_cookie_cutoff=datetime(2030, 1, 1)
        )


# -- configuration ---------------------------------------------------------------------------------


def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(SessionConfigError, match="16"):
        SessionMiddleware(view_session, secret_key="example")  # too short to sign cookies
    with pytest.raises(SessionConfigError, match="session_cookie"):
        SessionMiddleware(view_session, secret_key=SECRET, cookie_name="x")  # type: ignore[call-arg]
    with pytest.raises(SessionConfigError, match="idle_timeout"):
        SessionMiddleware(view_session, secret_key=SECRET, idle_timeout=5)
    # A server-side store does not sign with the secret, so Starlette's short keys still work.
    SessionMiddleware(view_session, secret_key="example", store=MemoryStore())
    with pytest.raises(SessionConfigError, match=r"websession\.asgi\.SessionMiddleware"):
        SessionMiddleware(view_session, secret_key=SECRET, autoload=False)


def test_extra_websession_settings(make_client: Any) -> None:
    store = MemoryStore()
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=SECRET,
                store=store,
                max_age=None,
                idle_timeout=120,
                absolute_timeout=3600,
            )
        ],
    )
    make_client(app).post("/update_session", json={"a": 1})
    (entry,) = store._entries.values()
    # last_seen is the flow's clock and expires the store's, read moments apart: within a second.
    assert entry.expires - entry.last_seen == pytest.approx(120, abs=1)


def test_store_failure_answers_503(make_client: Any) -> None:
    class Down(MemoryStore):
        def save(
            self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
        ) -> int:
            raise StoreUnavailable("down for maintenance")

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=Down())],
    )
    response = make_client(app).post("/update_session", json={"a": 1})
    assert response.status_code == 503
    assert "set-cookie" not in response.headers


def test_5xx_saves_nothing(make_client: Any) -> None:
    async def boom(request: Request) -> Response:
        request.session["half"] = "done"
        return PlainTextResponse("failed", status_code=500)

    store = MemoryStore()
    app = Starlette(
        routes=[Route("/boom", boom)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    response = make_client(app).get("/boom")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert len(store) == 0


# -- websockets ------------------------------------------------------------------------------------


async def ws_endpoint(websocket: WebSocket) -> None:
    session = websocket.session
    session["visits"] = session.get("visits", 0) + 1
    await websocket.accept()
    await websocket.send_json({"session": session})
    command = await websocket.receive_text()
    try:
        if command == "login":
            get_session(websocket).login("late")
        else:
            session["after"] = command
    except SessionStateError:
        await websocket.send_text("refused")
    else:
        await websocket.send_text("written")
    await websocket.close()


def test_websocket_session_and_cookie_on_accept(
    backend: Any, make_app: Callable[..., Starlette], make_client: Any
) -> None:
    app = make_app([*ROUTES, WebSocketRoute("/ws", ws_endpoint)])
    client = make_client(app)
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"session": {"visits": 1}}
        headers = dict(ws.extra_headers or [])
        ws.send_text("login")
        assert ws.receive_text() == "refused"
    cookie = headers[b"set-cookie"].decode()
    assert cookie.endswith("; path=/; Max-Age=1209600; httponly; samesite=lax")
    assert headers[b"vary"] == b"Cookie"
    token = cookie.split(";")[0].split("=", 1)[1]

    client = make_client(app, cookies={"session": token})
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"session": {"visits": 2}}
        cookie = dict(ws.extra_headers or [])[b"set-cookie"].decode()
        ws.send_text("note")
        answer = ws.receive_text()
    client.cookies.set("session", cookie.split(";")[0].split("=", 1)[1])
    if backend is None:
        # The cookie already went out with the handshake: a signed cookie cannot change now.
        assert answer == "refused"
        assert client.get("/view_session").json() == {"session": {"visits": 2}}
    else:
        # A server-side record still takes changes made after the handshake.
        assert answer == "written"
        assert client.get("/view_session").json() == {"session": {"visits": 2, "after": "note"}}


# -- a real server ---------------------------------------------------------------------------------


@pytest.fixture
def uvicorn_url(tmp_path: Path) -> Iterator[str]:
    import uvicorn

    app = Starlette(
        routes=[*CORE_ROUTES, WebSocketRoute("/ws", ws_endpoint)],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, store=f"sqlite:///{tmp_path}/s.db")
        ],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_real_uvicorn_server(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as client:
        response = client.post("/update_session", json={"n": 1})
        assert response.headers["set-cookie"].endswith(
            "; path=/; Max-Age=1209600; httponly; samesite=lax"
        )
        assert client.get("/view_session").json() == {"session": {"n": 1}}
        response = client.post("/login?user=ada")
        assert response.json()["user"] == "ada"
        response = client.get("/whoami")
        assert response.json() == {
            "user": "ada",
            "flashes": [["message", "welcome"]],
            "session": {"n": 1},
        }
        response = client.get("/whoami")  # read-only now that the flash is gone
        assert response.json()["flashes"] == []
        assert response.headers["vary"] == "Cookie"
        assert "set-cookie" not in response.headers


def test_example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_example("starlette_app", tmp_path, monkeypatch)
    with TestClient(module.app) as client:
        assert client.get("/").json()["visits"] == 1
        assert client.get("/").json()["visits"] == 2
        csrf = client.get("/").json()["csrf"]
        assert client.post("/login", data={"user": "ada", "csrf": "forged"}).status_code == 403
        response = client.post("/login", data={"user": "ada", "csrf": csrf})
        assert response.json()["user"] == "ada"
        page = client.get("/").json()
        assert page["user"] == "ada"
        assert page["visits"] == 4
        assert client.post("/logout", data={"csrf": page["csrf"]}).json() == {"user": None}
        assert client.get("/").json()["visits"] == 1
    assert (tmp_path / "sessions.db").exists()


@pytest.mark.slow
def test_typed_examples_pass_mypy_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(EXAMPLES / "starlette_app.py"),
            str(EXAMPLES / "fastapi_app.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
