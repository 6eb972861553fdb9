"""Plain WSGI frameworks (web.py, Bottle, Falcon) and a composite of two WSGI apps,
each under websession.wsgi.SessionMiddleware, driven through real HTTP clients.

httpx's WSGITransport runs the apps in-process; one test serves the web.py
example from a real wsgiref server on a loopback port.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import falcon
import httpx
import pytest

from helpers import count_of, csrf_of, load_example
from websession.ids import hash_id
from websession.stores import MemoryStore, SQLiteStore
from websession.wsgi import SessionMiddleware, get_session


def browser(app: Any) -> httpx.Client:
    """A cookie-keeping client for a WSGI app (one per visitor)."""
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")


# -- web.py ------------------------------------------------------------------------------


def webpy_round_trip(client: httpx.Client) -> None:
    """web.py's session example: index, login, logout, with the counter and flashes."""
    page = client.get("/").text
    assert "You are not logged in." in page
    assert count_of(page) == 1
    assert count_of(client.get("/").text) == 2
    anonymous = client.cookies["session"]

    forged = client.post("/login", data={"user": "ada", "csrf": "forged"})
    assert forged.status_code == 403
    response = client.post("/login", data={"user": "ada", "csrf": csrf_of(page)})
    assert response.status_code == 303
    assert client.cookies["session"] != anonymous  # rotated at login
    page = client.get("/").text
    assert "<em>Welcome, ada.</em>" in page
    assert "You are logged in as ada." in page
    assert count_of(page) == 3

    response = client.post("/logout", data={"csrf": csrf_of(page)})
    assert response.status_code == 303
    page = client.get("/").text
    assert "<em>You are logged out.</em>" in page
    assert "You are not logged in." in page
    assert count_of(page) == 1


def test_webpy_session_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("webpy_app", tmp_path, monkeypatch)
    with browser(example.app) as client:
        webpy_round_trip(client)
    with browser(example.app) as stranger:
        assert count_of(stranger.get("/").text) == 1
    assert (tmp_path / "sessions.db").exists()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served_webpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The web.py example on a real wsgiref server at a free loopback port."""
    example = load_example("webpy_app", tmp_path, monkeypatch)
    server = make_server("127.0.0.1", 0, example.app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webpy_example_over_real_http(served_webpy: str) -> None:
    with httpx.Client(base_url=served_webpy) as client:
        webpy_round_trip(client)
        set_cookie = client.get("/").headers["set-cookie"]
        assert "HttpOnly" in set_cookie
        assert "SameSite=Lax" in set_cookie


# -- Bottle ------------------------------------------------------------------------------


def test_bottle_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("bottle_app", tmp_path, monkeypatch)
    with browser(example.app) as client:
        state = client.get("/").json()
        assert (state["count"], state["user"], state["flashes"]) == (1, None, [])
        assert client.get("/").json()["count"] == 2
        response = client.post("/login", data={"user": "bo", "csrf": "nope"})
        assert response.status_code == 403

        anonymous = client.cookies["session"]
        response = client.post("/login", data={"user": "bo", "csrf": state["csrf"]})
        assert response.status_code == 303
        assert client.cookies["session"] != anonymous
        state = client.get("/").json()
        assert (state["count"], state["user"], state["flashes"]) == (3, "bo", ["Welcome, bo."])

        response = client.post("/logout", headers={"X-CSRF-Token": state["csrf"]})
        assert response.status_code == 303
        state = client.get("/").json()
        assert (state["count"], state["user"], state["flashes"]) == (
            1,
            None,
            ["You are logged out."],
        )

    store = SQLiteStore(tmp_path / "sessions.db")
    assert store.load(hash_id(anonymous)) is None  # deleted at login


# -- Falcon ------------------------------------------------------------------------------


class Counter:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = get_session(req.env)
        session["n"] = session.get("n", 0) + 1
        resp.media = {"n": session["n"], "user": session.user_id}


class Login:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = get_session(req.env)
        if not session.check_csrf(req.get_header("X-CSRF-Token")):
            raise falcon.HTTPForbidden(description="bad CSRF token")
        session.login(req.get_param("user", required=True))
        raise falcon.HTTPSeeOther("/count")


class Token:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"csrf": get_session(req.env).csrf_token()}


class Crash:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        get_session(req.env)["half"] = "done"
        raise falcon.HTTPInternalServerError()


@pytest.fixture
def falcon_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def falcon_app(falcon_store: MemoryStore) -> SessionMiddleware:
    app = falcon.App()
    app.add_route("/count", Counter())
    app.add_route("/login", Login())
    app.add_route("/token", Token())
    app.add_route("/crash", Crash())
    return SessionMiddleware(app, store=falcon_store)


def test_falcon_counter_and_login(falcon_app: SessionMiddleware) -> None:
    with browser(falcon_app) as client:
        first = client.get("/count")
        assert first.json() == {"n": 1, "user": None}
        assert first.headers["vary"] == "Cookie"
        assert client.get("/count").json() == {"n": 2, "user": None}
        token = client.get("/token").json()["csrf"]
        refused = client.post("/login", params={"user": "fal"}, headers={"X-CSRF-Token": "x"})
        assert refused.status_code == 403
        before = client.cookies["session"]
        response = client.post("/login", params={"user": "fal"}, headers={"X-CSRF-Token": token})
        assert response.status_code == 303
        assert client.cookies["session"] != before
        assert client.get("/count").json() == {"n": 3, "user": "fal"}


def test_falcon_error_saves_nothing(
    falcon_app: SessionMiddleware, falcon_store: MemoryStore
) -> None:
    with browser(falcon_app) as client:
        response = client.get("/crash")
        assert response.status_code == 500
        assert "set-cookie" not in response.headers
    assert len(falcon_store) == 0


# -- a composite of two WSGI apps ---------------------------------------------------------


def test_composite_apps_share_one_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("composite_app", tmp_path, monkeypatch)
    with browser(example.app) as client:
        page = client.get("/shop/").text
        assert "Hello, guest." in page
        response = client.post("/shop/add", data={"item": "tea", "csrf": csrf_of(page)})
        assert response.status_code == 303
        assert "Basket: tea" in client.get("/shop/").text

        page = client.get("/account/").text  # the other app sees the basket
        assert "Account of nobody; 1 items in the basket." in page
        response = client.post("/account/login", data={"user": "pat", "csrf": csrf_of(page)})
        assert response.status_code == 303
        assert response.headers["location"] == "/shop/"

        page = client.get("/shop/").text  # ...and the login
        assert "Hello, pat." in page
        assert "Basket: tea" in page
        assert client.post("/shop/add", data={"item": "jam", "csrf": "stale"}).status_code == 403
        client.post("/shop/add", data={"item": "jam", "csrf": csrf_of(page)})

        page = client.get("/account/").text
        assert "Account of pat; 2 items in the basket." in page
        client.post("/account/logout", data={"csrf": csrf_of(page)})
        assert "Hello, guest." in client.get("/shop/").text
        assert client.get("/elsewhere").status_code == 404
        assert client.get("/shopping").status_code == 404  # a prefix is a path segment


def test_one_cookie_serves_both_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("composite_app", tmp_path, monkeypatch)
    with browser(example.app) as client:
        client.get("/account/")
        (cookie,) = [c for c in client.cookies.jar if c.name == "session"]
        assert cookie.path == "/"  # not /account: the shop receives it too
        client.get("/shop/")
        assert [c.name for c in client.cookies.jar] == ["session"]
