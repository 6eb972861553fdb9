"""The runnable examples in examples/ work: a counter that survives requests, login and logout."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from helpers import count_of, csrf_of, load_example


@pytest.fixture
def wsgi_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> httpx.WSGITransport:
    return httpx.WSGITransport(app=load_example("wsgi_app", tmp_path, monkeypatch).app)


def _browser(transport: httpx.WSGITransport, **cookies: str) -> httpx.Client:
    """A client that keeps cookies, like a browser (one per visitor)."""
    return httpx.Client(transport=transport, base_url="http://testserver", cookies=cookies)


def test_wsgi_counter_increments_with_the_cookie(
    wsgi_transport: httpx.WSGITransport, tmp_path: Path
) -> None:
    client = _browser(wsgi_transport)
    first = client.get("/")
    assert first.status_code == 200
    assert "HttpOnly" in first.headers["set-cookie"]
    assert [count_of(client.get("/").text) for _ in range(3)] == [2, 3, 4]
    assert (tmp_path / "sessions.db").exists()

    stranger = _browser(wsgi_transport)
    assert count_of(stranger.get("/").text) == 1


def test_wsgi_login_logout_round_trip(wsgi_transport: httpx.WSGITransport) -> None:
    client = _browser(wsgi_transport)
    page = client.get("/").text
    anonymous_id = client.cookies["session"]

    rejected = client.post("/login", data={"user": "alice", "csrf": "forged"})
    assert rejected.status_code == 403

    response = client.post("/login", data={"user": "alice", "csrf": csrf_of(page)})
    assert response.status_code == 303
    assert client.cookies["session"] != anonymous_id  # the id rotated on login
    page = client.get("/").text
    assert "Welcome, alice." in page
    assert "Logged in as alice." in page
    assert count_of(page) == 2  # the data survived the login

    response = client.post("/logout", data={"csrf": csrf_of(page)})
    assert response.status_code == 303
    page = client.get("/").text
    assert "You are logged out." in page
    assert "Log in" in page
    assert count_of(page) == 1  # logout dropped the old session's data

    # The pre-login id is useless now: it was deleted at login.
    old = _browser(wsgi_transport, session=anonymous_id)
    assert count_of(old.get("/").text) == 1


@pytest.mark.anyio
async def test_asgi_counter_and_login_logout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = load_example("asgi_app", tmp_path, monkeypatch).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        counts = [(await client.get("/")).json()["count"] for _ in range(3)]
        assert counts == [1, 2, 3]
        state = (await client.get("/")).json()
        assert state["user"] is None

        forged = await client.post("/login", json={"user": "bob"}, headers={"X-CSRF-Token": "x"})
        assert forged.status_code == 403

        before = client.cookies["session"]
        response = await client.post(
            "/login", json={"user": "bob"}, headers={"X-CSRF-Token": state["csrf"]}
        )
        assert response.status_code == 200
        assert client.cookies["session"] != before
        new_csrf = response.json()["csrf"]
        assert new_csrf != state["csrf"]  # login rotates the CSRF token too
        state = (await client.get("/")).json()
        assert state == {"count": 5, "user": "bob", "csrf": new_csrf}

        response = await client.post("/logout", headers={"X-CSRF-Token": new_csrf})
        assert response.status_code == 200
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert "session" not in client.cookies
        state = (await client.get("/")).json()
        assert (state["count"], state["user"]) == (1, None)
