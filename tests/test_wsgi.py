"""The WSGI middleware: cookie attributes, Vary, header transport, and a real server."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from helpers import (
    FakeClock,
    Reply,
    cookie_attributes,
    cookie_value,
    set_cookies,
    wsgi_app,
)
from websession import SessionStateError
from websession.session import Session
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware, get_session


def writer(session: Session, env: dict[str, Any]) -> Any:
    session["n"] = session.get("n", 0) + 1
    return session["n"]


def client_for(
    view: Any = writer,
    *,
    base_url: str = "http://testserver",
    remote_addr: str = "127.0.0.1",
    **options: Any,
) -> httpx.Client:
    options.setdefault("store", MemoryStore())
    app = SessionMiddleware(wsgi_app(view), **options)
    transport = httpx.WSGITransport(app, remote_addr=remote_addr)
    return httpx.Client(transport=transport, base_url=base_url)


def only_cookie(response: httpx.Response) -> str:
    (value,) = response.headers.get_list("set-cookie")
    return value


def test_default_cookie_flags_on_http() -> None:
    with client_for() as client:
        set_cookie = only_cookie(client.get("/"))
    assert set_cookie.startswith("session=")
    attributes = cookie_attributes(set_cookie)
    assert attributes == {"max-age": "1800", "path": "/", "httponly": "", "samesite": "Lax"}


def test_secure_on_https() -> None:
    with client_for(base_url="https://testserver") as client:
        attributes = cookie_attributes(only_cookie(client.get("/")))
    assert "secure" in attributes


@pytest.mark.parametrize(
    ("remote_addr", "proto", "secure"),
    [
        ("10.1.2.3", "https", True),  # trusted proxy says https
        ("10.1.2.3", "http", False),
        ("192.0.2.7", "https", False),  # anyone else cannot claim https
    ],
)
def test_secure_auto_follows_forwarded_proto_only_from_trusted_proxies(
    remote_addr: str, proto: str, secure: bool
) -> None:
    with client_for(remote_addr=remote_addr, trusted_proxies=("10.0.0.0/8",)) as client:
        response = client.get("/", headers={"X-Forwarded-Proto": proto})
    assert ("secure" in cookie_attributes(only_cookie(response))) is secure


def test_forwarded_for_from_a_trusted_proxy_is_the_client_ip() -> None:
    store = MemoryStore()
    with client_for(store=store, remote_addr="10.1.2.3", trusted_proxies="10.0.0.0/8") as client:
        client.get("/", headers={"X-Forwarded-For": "198.51.100.9, 10.9.9.9", "User-Agent": "ua"})
    ((_, entry),) = store.entries()
    assert (entry.ip, entry.user_agent) == ("198.51.100.9", "ua")


def test_domain_is_emitted_exactly_as_configured() -> None:
    with client_for(cookie_domain=".Example.COM") as client:
        set_cookie = only_cookie(client.get("/"))
    assert "; Domain=.Example.COM;" in set_cookie


def test_host_prefixed_cookie_is_always_secure_host_only() -> None:
    with client_for(cookie_name="__Host-session") as client:
        set_cookie = only_cookie(client.get("/"))
    assert set_cookie.startswith("__Host-session=")
    attributes = cookie_attributes(set_cookie)
    assert "secure" in attributes
    assert attributes["path"] == "/"
    assert "domain" not in attributes


def test_cookie_flags_can_be_configured() -> None:
    with client_for(
        cookie_secure=True,
        cookie_samesite="strict",
        cookie_httponly=False,
        cookie_path="/app",
        cookie_partitioned=True,
    ) as client:
        attributes = cookie_attributes(only_cookie(client.get("/")))
    assert attributes == {
        "max-age": "1800",
        "path": "/app",
        "secure": "",
        "samesite": "Strict",
        "partitioned": "",
    }


def test_cookie_round_trips_through_a_cookie_jar() -> None:
    with client_for() as client:
        assert [client.get("/").json() for _ in range(3)] == [1, 2, 3]


def test_vary_cookie_is_merged_with_an_existing_vary() -> None:
    def view(session: Session, env: dict[str, Any]) -> Any:
        session["x"] = 1
        return Reply("ok", headers=[("Vary", "Accept-Encoding")])

    with client_for(view) as client:
        response = client.get("/")
    assert response.headers.get_list("vary") == ["Accept-Encoding, Cookie"]


def test_vary_is_not_duplicated() -> None:
    def view(session: Session, env: dict[str, Any]) -> Any:
        session.get("x")
        return Reply("ok", headers=[("vary", "cookie")])

    with client_for(view) as client:
        assert client.get("/").headers.get_list("vary") == ["cookie"]


def test_header_transport() -> None:
    store = MemoryStore()
    with client_for(store=store, transport="header") as client:
        first = client.get("/")
        assert "set-cookie" not in first.headers
        token = first.headers["x-session-token"]
        assert first.headers["vary"] == "X-Session-Token"
        assert len(token) == 43
        second = client.get("/", headers={"X-Session-Token": token})
        assert second.json() == 2
        assert second.headers["x-session-token"] == token
        assert "set-cookie" not in second.headers
        # A cookie is ignored in header mode.
        third = client.get("/", headers={"Cookie": f"session={token}"})
        assert third.json() == 1


def test_custom_header_name() -> None:
    with client_for(transport="header", header_name="X-Auth-Session") as client:
        token = client.get("/").headers["x-auth-session"]
        assert client.get("/", headers={"X-Auth-Session": token}).json() == 2


def test_get_session_outside_the_middleware_says_what_to_do() -> None:
    with pytest.raises(SessionStateError, match="SessionMiddleware"):
        get_session({})


def test_get_session_returns_the_request_session() -> None:
    seen: list[Session] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(get_session(environ))
        start_response("204 No Content", [])
        return []

    client = httpx.Client(transport=httpx.WSGITransport(SessionMiddleware(app, MemoryStore())))
    assert client.get("http://testserver/").status_code == 204
    assert isinstance(seen[0], Session)


def test_start_response_with_exc_info_commits_nothing_on_500() -> None:
    store = MemoryStore()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["websession.session"]["x"] = 1
        try:
            raise RuntimeError("view failed")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"sorry"]

    transport = httpx.WSGITransport(SessionMiddleware(app, store), raise_app_exceptions=False)
    response = httpx.Client(transport=transport).get("http://testserver/")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert len(store) == 0


def test_clock_argument_drives_expiry() -> None:
    clock = FakeClock()
    with client_for(store=MemoryStore(clock=clock), clock=clock) as client:
        assert client.get("/").json() == 1
        clock.advance(1801)
        assert client.get("/").json() == 1


def test_config_from_store_url_and_unknown_setting() -> None:
    app = SessionMiddleware(wsgi_app(writer), store="memory://")
    assert isinstance(app.store, MemoryStore)
    with pytest.raises(ValueError, match="cookie_nmae"):
        SessionMiddleware(wsgi_app(writer), store="memory://", cookie_nmae="x")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def live_server() -> Iterator[str]:
    app = SessionMiddleware(wsgi_app(writer), store=MemoryStore())
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_real_wsgiref_server(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as client:
        first = client.get("/")
        (set_cookie,) = set_cookies(first.headers.multi_items())
        assert len(cookie_value(set_cookie)) == 43
        assert [first.json(), client.get("/").json(), client.get("/").json()] == [1, 2, 3]
