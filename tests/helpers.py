"""Small shared helpers for the flow and middleware tests: clocks, counting stores, tiny apps."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import re
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # starlette 1.x nudges towards httpx2; the httpx-based client is what we drive.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient as TestClient

from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.errors import Conflict
from websession.flow import Flow, run_sync
from websession.session import Session
from websession.stores.base import Entry, Meta, Store
from websession.wsgi import SessionMiddleware as WSGISessionMiddleware

START = 1_700_000_000.0
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def meta(now: float = START, **changes: Any) -> Meta:
    """Metadata for a direct store call: user ``u1`` from 192.0.2.1, created and seen at ``now``."""
    fields: dict[str, Any] = {"created": now, "last_seen": now, "user_id": "u1", "ip": "192.0.2.1"}
    fields.update(changes)
    return Meta(**fields)


class FakeClock:
    """A clock the test moves by hand; pass it as ``clock=`` to the middleware and the store."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore:
    """Wraps a sync store and counts every call (and every Conflict it raised)."""

    def __init__(self, inner: Store) -> None:
        self.inner: Any = inner  # the concrete store, so tests can len() or entries() it
        self._inner = inner
        self.inline = getattr(inner, "inline", True)
        self.max_payload_size = inner.max_payload_size
        self.calls: Counter[str] = Counter()
        self.conflicts = 0
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def reset(self) -> None:
        self.calls.clear()
        self.conflicts = 0

    def load(self, key: str) -> Entry | None:
        self._count("load")
        return self._inner.load(key)

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        self._count("save")
        try:
            return self._inner.save(
                key, payload, expected_version=expected_version, ttl=ttl, meta=meta
            )
        except Conflict:
            with self._lock:
                self.conflicts += 1
            raise

    def touch(self, key: str, ttl: float) -> bool:
        self._count("touch")
        return self._inner.touch(key, ttl)

    def delete(self, key: str) -> None:
        self._count("delete")
        self._inner.delete(key)

    def delete_expired(self, limit: int = 1000) -> int:
        return self._inner.delete_expired(limit)


class SlowAsyncStore:
    """A genuinely async store (not InlineAsyncStore): every call yields to the event loop.

    It stands in for a network store, so the ASGI middleware must await it
    and may not load lazily from synchronous code.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.max_payload_size = inner.max_payload_size
        self.calls: Counter[str] = Counter()
        self.conflicts = 0

    async def load(self, key: str) -> Entry | None:
        self.calls["load"] += 1
        await asyncio.sleep(0)
        return self.inner.load(key)

    async def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        self.calls["save"] += 1
        await asyncio.sleep(0)
        try:
            return self.inner.save(
                key, payload, expected_version=expected_version, ttl=ttl, meta=meta
            )
        except Conflict:
            self.conflicts += 1
            raise

    async def touch(self, key: str, ttl: float) -> bool:
        self.calls["touch"] += 1
        await asyncio.sleep(0)
        return self.inner.touch(key, ttl)

    async def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        await asyncio.sleep(0)
        self.inner.delete(key)

    async def delete_expired(self, limit: int = 1000) -> int:
        return self.inner.delete_expired(limit)


@dataclass
class Reply:
    """What a test view returns when it needs a status or headers other than 200 / JSON."""

    body: Any = None
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)


View = Callable[[Session, dict[str, Any]], Any]
_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 500: "Internal Server Error"}


def _reply(result: Any) -> Reply:
    return result if isinstance(result, Reply) else Reply(result)


def _encode(reply: Reply) -> tuple[bytes, list[tuple[str, str]]]:
    # repr() for what JSON lacks (sets, datetimes): the views echo session data back.
    body = json.dumps(reply.body, default=repr).encode()
    return body, [("Content-Type", "application/json"), *reply.headers]


def wsgi_app(view: View) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """A WSGI app that calls ``view(session, environ)`` and answers with its result as JSON."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        reply = _reply(view(environ["websession.session"], environ))
        body, headers = _encode(reply)
        reason = _REASONS.get(reply.status, "Status")
        start_response(f"{reply.status} {reason}", headers)
        return [body]

    return app


AsyncView = Callable[[Session, dict[str, Any]], Awaitable[Any]]


def asgi_app(view: View | AsyncView) -> Callable[..., Awaitable[None]]:
    """A plain ASGI http app that calls ``view(session, scope)`` (sync or async)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        result = view(scope["session"], scope)
        if asyncio.iscoroutine(result):
            result = await result
        reply = _reply(result)
        body, headers = _encode(reply)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def call_wsgi(
    app: Callable[..., Iterable[bytes]],
    path: str = "/",
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Call a WSGI app directly (no HTTP client): status code, headers, body."""
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        seen["status"] = int(status[:3])
        seen["headers"] = response_headers

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def set_cookies(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Every Set-Cookie value among ``headers`` (str pairs, any case)."""
    return [v for k, v in headers if k.lower() == "set-cookie"]


def cookie_value(set_cookie: str) -> str:
    """The value part of one Set-Cookie header."""
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(set_cookie)
    (morsel,) = parsed.values()
    return morsel.value


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    """Attributes of one Set-Cookie header, lower-cased names (flags map to "")."""
    attrs: dict[str, str] = {}
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attrs[name.lower()] = value
    return attrs


def load_session(flow: Flow, store: Store, token: str | None) -> Session:
    """Load the session named by ``token`` the way a driver does, outside any request."""
    session = Session()
    session._token = token
    run_sync(flow.load(session), store)
    return session


def path_of(env: dict[str, Any]) -> str:
    """The request path from a WSGI environ or an ASGI scope."""
    return str(env.get("PATH_INFO", env.get("path", "/")))


def make_client(driver: str, view: View, store: Any, **options: Any) -> httpx.Client:
    """A sync HTTP client for ``view`` under the WSGI or the ASGI middleware.

    The ASGI side runs through starlette's TestClient (an httpx.Client that
    drives the ASGI app), so one sync test body covers both drivers.
    """
    if driver == "wsgi":
        wsgi_mw = WSGISessionMiddleware(wsgi_app(view), store=store, **options)
        return httpx.Client(transport=httpx.WSGITransport(wsgi_mw), base_url="http://testserver")
    asgi_mw = ASGISessionMiddleware(asgi_app(view), store=store, **options)
    return TestClient(asgi_mw)


def call_asgi(
    app: Callable[..., Awaitable[None]],
    path: str = "/",
    *,
    cookie: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    scheme: str = "http",
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Call an ASGI app directly for one http request: status code, headers, body."""
    raw: list[tuple[bytes, bytes]] = [(b"host", b"testserver")]
    if cookie is not None:
        raw.append((b"cookie", cookie.encode("latin-1") if isinstance(cookie, str) else cookie))
    raw.extend((k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items())
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def main() -> None:
        await app(scope, receive, send)

    asyncio.run(main())
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return (
        start["status"],
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
        body,
    )


def assert_concurrent_writers_survive(store: Any, requests: int = 50) -> None:
    """``requests`` concurrent requests on one session, each adding its own key, all survive.

    Drives the real WSGI middleware from 16 threads; each request loads first
    and then sleeps a little, so the requests overlap on one version and the
    conflict-replay path must run for every key to land.
    """
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import parse_qs

    def view(session: Session, environ: dict[str, Any]) -> Any:
        args = parse_qs(environ["QUERY_STRING"])
        if "i" not in args:
            session.setdefault("base", "kept")
            return session.to_dict()
        session.get("base")  # load now, so the requests overlap on one version
        time.sleep(0.003)
        session[f"k{args['i'][0]}"] = int(args["i"][0])
        return None

    app = WSGISessionMiddleware(wsgi_app(view), store=store)
    _, headers, _ = call_wsgi(app, "/")
    token = cookie_value(set_cookies(headers)[0])

    def one(i: int) -> int:
        status, _, _ = call_wsgi(app, f"/?i={i}", cookie=f"session={token}")
        return status

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(one, range(requests))) == [200] * requests
    _, _, body = call_wsgi(app, "/", cookie=f"session={token}")
    assert json.loads(body) == {"base": "kept", **{f"k{i}": i for i in range(requests)}}


# -- the example apps in examples/ -------------------------------------------------------


def load_example(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import examples/<name>.py afresh, run from tmp_path with its sessions in a database there.

    The module is in ``sys.modules`` while the test runs, as an import would put it
    (Pyramid's Configurator looks its caller up there).
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEBSESSION_STORE", f"sqlite:///{tmp_path / 'sessions.db'}")
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def count_of(page: str) -> int:
    """The visit count an example app's page shows."""
    match = re.search(r"seen this page (\d+) times", page)
    assert match is not None, page
    return int(match.group(1))


def csrf_of(page: str, field: str = "csrf") -> str:
    """The CSRF token in an example app's form (its hidden input named ``field``)."""
    match = re.search(rf'name="{field}" value="([^"]+)"', page)
    assert match is not None, page
    return match.group(1)
