"""The ASGI middleware: Starlette's request.session, websockets, async stores, lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from helpers import (
    CountingStore,
    Reply,
    SlowAsyncStore,
    TestClient,
    asgi_app,
    cookie_attributes,
    cookie_value,
)
from websession import SessionConfigError, SessionStateError
from websession.asgi import SessionMiddleware
from websession.ids import hash_id
from websession.session import Session
from websession.stores import AsyncMemoryStore, MemoryStore
from websession.wsgi import SessionMiddleware as WSGIMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def counter(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse(request.session["n"])


async def peek(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("no session here")


async def ws_endpoint(websocket: WebSocket) -> None:
    session: Session = websocket.scope["session"]
    visits = session.get("ws", 0) + 1
    session["ws"] = visits
    await websocket.accept()
    await websocket.send_json({"visits": visits, "n": session.get("n")})
    command = await websocket.receive_text()
    if command == "login":
        try:
            session.login("7")
        except SessionStateError as exc:
            await websocket.send_text(f"refused: {exc}")
    elif command == "write":
        session["after_accept"] = True
        await websocket.send_text("written")
    await websocket.close()


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", counter),
            Route("/peek", peek),
            Route("/plain", untouched),
            WebSocketRoute("/ws", ws_endpoint),
        ]
    )


def async_client(app: Any, *, base_url: str = "http://testserver", **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, **kw), base_url=base_url)


async def test_starlette_request_session_round_trip() -> None:
    store = MemoryStore()
    app = SessionMiddleware(starlette_app(), store=store)
    async with async_client(app) as client:
        assert [(await client.get("/")).json() for _ in range(3)] == [1, 2, 3]
        response = await client.get("/peek")
        assert response.json() == {"n": 3}
        assert response.headers["vary"] == "Cookie"
        assert "set-cookie" not in response.headers
    assert len(store) == 1


async def test_untouched_request_has_no_store_call_no_cookie_no_vary() -> None:
    store = CountingStore(MemoryStore())
    app = SessionMiddleware(starlette_app(), store=store)
    async with async_client(app) as client:
        token = cookie_value((await client.get("/")).headers["set-cookie"])
        store.reset()
        response = await client.get("/plain", headers={"Cookie": f"session={token}"})
    assert response.text == "no session here"
    assert store.calls == {}
    assert "set-cookie" not in response.headers
    assert "vary" not in response.headers


async def test_starlette_middleware_list_form() -> None:
    from starlette.middleware import Middleware

    app = Starlette(
        routes=[Route("/", counter)],
        # mypy rejects this line: `**fields: Any` defeats Starlette's ParamSpec (see report).
        middleware=[Middleware(SessionMiddleware, store=MemoryStore(), cookie_name="sid")],
    )
    async with async_client(app) as client:
        response = await client.get("/")
        assert response.headers["set-cookie"].startswith("sid=")
        assert (await client.get("/")).json() == 2


async def test_secure_on_https_scheme() -> None:
    app = SessionMiddleware(starlette_app(), store=MemoryStore())
    async with async_client(app, base_url="https://testserver") as client:
        assert "secure" in cookie_attributes((await client.get("/")).headers["set-cookie"])
    async with async_client(app) as client:
        assert "secure" not in cookie_attributes((await client.get("/")).headers["set-cookie"])


@pytest.mark.parametrize(
    ("peer", "secure"), [("10.0.0.5", True), ("203.0.113.5", False)], ids=["trusted", "untrusted"]
)
async def test_forwarded_proto_only_from_trusted_proxy(peer: str, secure: bool) -> None:
    store = MemoryStore()
    app = SessionMiddleware(starlette_app(), store=store, trusted_proxies=["10.0.0.0/8"])
    async with async_client(app, client=(peer, 4711)) as client:
        response = await client.get(
            "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"}
        )
    assert ("secure" in cookie_attributes(response.headers["set-cookie"])) is secure
    ((_, entry),) = store.entries()
    assert entry.ip == ("198.51.100.1" if secure else peer)


async def test_forwarded_headers_are_ignored_without_trusted_proxies() -> None:
    store = MemoryStore()
    app = SessionMiddleware(starlette_app(), store=store)
    async with async_client(app, client=("10.0.0.5", 4711)) as client:
        response = await client.get(
            "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"}
        )
    assert "secure" not in cookie_attributes(response.headers["set-cookie"])
    ((_, entry),) = store.entries()
    assert entry.ip == "10.0.0.5"


async def test_vary_merges_with_the_apps_vary() -> None:
    def view(session: Session, scope: dict[str, Any]) -> Reply:
        session["x"] = 1
        return Reply("ok", headers=[("Vary", "Accept-Language")])

    app = SessionMiddleware(asgi_app(view), store=MemoryStore())
    async with async_client(app) as client:
        response = await client.get("/")
    assert response.headers.get_list("vary") == ["Accept-Language, Cookie"]


async def test_cookie_headers_split_over_several_lines_are_joined() -> None:
    app = SessionMiddleware(starlette_app(), store=MemoryStore())
    async with async_client(app) as client:
        token = cookie_value((await client.get("/")).headers["set-cookie"])
    scope_headers = [(b"cookie", b"theme=dark"), (b"cookie", f"session={token}".encode())]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": "http",
        "path": "/peek",
        "raw_path": b"/peek",
        "query_string": b"",
        "root_path": "",
        "headers": scope_headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    assert sent[1]["body"] == b'{"n":1}'


async def test_header_transport() -> None:
    app = SessionMiddleware(starlette_app(), store=MemoryStore(), transport="header")
    async with async_client(app) as client:
        first = await client.get("/")
        token = first.headers["x-session-token"]
        assert "set-cookie" not in first.headers
        second = await client.get("/", headers={"X-Session-Token": token})
    assert second.json() == 2
    assert second.headers["x-session-token"] == token
    assert second.headers["vary"] == "X-Session-Token"


# -- websockets ----------------------------------------------------------------------------


def test_websocket_reads_and_writes_the_session_and_sets_the_cookie_on_accept() -> None:
    store = MemoryStore()
    client = TestClient(SessionMiddleware(starlette_app(), store=store))
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"visits": 1, "n": None}
        headers: dict[bytes, bytes] = dict(ws.extra_headers or [])
        ws.send_text("write")
        assert ws.receive_text() == "written"
    token = cookie_value(headers[b"set-cookie"].decode())
    assert headers[b"vary"] == b"Cookie"
    # Data written after the handshake reached the store too.
    with client.websocket_connect("/ws", headers={"Cookie": f"session={token}"}) as ws:
        assert ws.receive_json() == {"visits": 2, "n": None}
        ws.send_text("bye")
    entry = store.load(hash_id(token))
    assert entry is not None
    assert b'"after_accept":true' in entry.payload


def test_websocket_shares_the_http_session() -> None:
    client = TestClient(SessionMiddleware(starlette_app(), store=MemoryStore()))
    client.get("/")
    client.get("/")
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"visits": 1, "n": 2}
        ws.send_text("bye")


def test_login_after_accept_raises_session_state_error() -> None:
    client = TestClient(SessionMiddleware(starlette_app(), store=MemoryStore()))
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text("login")
        message = ws.receive_text()
    assert message.startswith("refused: login() is not possible after the websocket handshake")


# -- stores --------------------------------------------------------------------------------


async def test_non_inline_async_store_loads_eagerly_only_with_a_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SlowAsyncStore(MemoryStore())
    app = SessionMiddleware(starlette_app(), store=store)
    async with async_client(app) as client:
        response = await client.get("/")
        assert store.calls == {"save": 1}  # a new visitor: nothing to load
        token = cookie_value(response.headers["set-cookie"])
        store.calls.clear()
        plain = await client.get("/plain", headers={"Cookie": f"session={token}"})
        assert plain.text == "no session here"
        assert store.calls == {"load": 1}  # eager: request.session cannot await later
        assert "set-cookie" not in plain.headers
        store.calls.clear()
        assert (await client.get("/", headers={"Cookie": f"session={token}"})).json() == 2
        assert store.calls == {"load": 1, "save": 1}
        store.calls.clear()
        await client.get("/peek", headers={"Cookie": "session=not-an-id"})
        assert store.calls == {}


async def test_inline_async_store_is_lazy() -> None:
    memory = CountingStore(MemoryStore())
    app = SessionMiddleware(starlette_app(), store=AsyncMemoryStore(memory))  # type: ignore[arg-type]
    async with async_client(app) as client:
        token = cookie_value((await client.get("/")).headers["set-cookie"])
        memory.reset()
        await client.get("/plain", headers={"Cookie": f"session={token}"})
    assert memory.calls == {}


def test_sync_network_store_is_refused_by_the_asgi_middleware() -> None:
    class BlockingStore(CountingStore):
        inline = False

    store = BlockingStore(MemoryStore())
    store.inline = False
    with pytest.raises(SessionConfigError, match="block the event loop"):
        SessionMiddleware(starlette_app(), store=store)


def test_async_store_is_refused_by_the_wsgi_middleware() -> None:
    with pytest.raises(SessionConfigError, match="sync form"):
        WSGIMiddleware(lambda e, s: [], store=SlowAsyncStore(MemoryStore()))


def test_object_that_is_not_a_store_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="not a session store"):
        SessionMiddleware(starlette_app(), store=object())


async def test_lifespan_passes_through() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})

    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    middleware = SessionMiddleware(app, store=MemoryStore())
    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert "session" not in seen[0]


def test_lifespan_through_starlette_test_client() -> None:
    started: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    inner = Starlette(routes=[Route("/", counter)], lifespan=lifespan)
    with TestClient(SessionMiddleware(inner, store=MemoryStore())) as client:
        assert client.get("/").json() == 1
    assert started == [True]


def test_real_uvicorn_server() -> None:
    import socket
    import threading
    import time

    import uvicorn

    store = MemoryStore()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        SessionMiddleware(starlette_app(), store=store), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert [client.get("/").json() for _ in range(3)] == [1, 2, 3]
            response = client.get("/peek")
        assert response.json() == {"n": 3}
        assert response.headers["vary"] == "Cookie"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert len(store) == 1
