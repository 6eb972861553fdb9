"""A response marked Cache-Control: public never carries the session cookie."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import Reply, TestClient, asgi_app, wsgi_app
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.session import Session
from websession.stores import CookieStore, MemoryStore
from websession.wsgi import SessionMiddleware

PUBLIC = [("Cache-Control", "public, max-age=300")]


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env.get("PATH_INFO") or env.get("path")
    query = env.get("QUERY_STRING") or env.get("query_string", b"").decode()
    public = PUBLIC if "public" in query else []
    if "second" in query:  # public named by the second of two Cache-Control headers
        public = [("Cache-Control", "max-age=300"), *PUBLIC]
    if path == "/set":
        session["n"] = session.get("n", 0) + 1
    elif path == "/login":
        session.login("u1")
    return Reply({"n": session.get("n"), "user": session.user_id}, headers=public)


@pytest.fixture(params=["wsgi", "asgi"])
def make(request: pytest.FixtureRequest) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def build(store: Any) -> httpx.Client:
        client: httpx.Client
        if request.param == "wsgi":
            app = SessionMiddleware(wsgi_app(_view), store=store)
            client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t")
        else:
            client = TestClient(ASGISessionMiddleware(asgi_app(_view), store=store))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def test_a_new_session_is_not_created_on_a_public_response(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    client = make(store)
    with caplog.at_level(logging.WARNING, logger="websession.security"):
        response = client.get("/set?public")
    assert "set-cookie" not in response.headers
    assert len(store) == 0
    assert any("Cache-Control: public" in r.getMessage() for r in caplog.records)


def test_a_second_cache_control_header_saying_public_counts(make: Any) -> None:
    store = MemoryStore()
    client = make(store)
    response = client.get("/set?second")
    assert "set-cookie" not in response.headers
    assert len(store) == 0


def test_an_existing_session_is_saved_but_no_cookie_is_sent(make: Any) -> None:
    store = MemoryStore()
    client = make(store)
    client.get("/set")
    response = client.get("/set?public")
    assert "set-cookie" not in response.headers
    assert client.get("/").json()["n"] == 2


def test_login_on_a_public_response_is_dropped(make: Any) -> None:
    store = MemoryStore()
    client = make(store)
    client.get("/set")
    response = client.get("/login?public")
    assert "set-cookie" not in response.headers
    assert client.get("/").json() == {"n": 1, "user": None}


def test_cookie_store_changes_need_a_cookie_so_they_are_dropped(make: Any) -> None:
    client = make(CookieStore(["k" * 32]))
    client.get("/set")
    response = client.get("/set?public")
    assert "set-cookie" not in response.headers
    assert client.get("/").json()["n"] == 1
