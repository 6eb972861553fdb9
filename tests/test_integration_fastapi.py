"""websession.integrations.fastapi: the session as a typed dependency, with FastAPI's TestClient."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest

fastapi = pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI, Request, WebSocket  # noqa: E402
from starlette.exceptions import StarletteDeprecationWarning  # noqa: E402

from helpers import load_example  # noqa: E402
from websession import Session  # noqa: E402
from websession.integrations.fastapi import SessionDep, get_session  # noqa: E402
from websession.integrations.starlette import SessionMiddleware  # noqa: E402
from websession.stores import MemoryStore  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = "fastapi-test-secret-0123456789ab"


def build(store: Any = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key=SECRET, store=store)

    @app.get("/count")
    def count(session: SessionDep) -> dict[str, Any]:
        assert isinstance(session, Session)
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @app.get("/both")
    def both(request: Request, session: Annotated[Session, Depends(get_session)]) -> dict[str, Any]:
        # One session, two views: the websession API and Starlette's dict.
        session["via_core"] = True
        request.session["via_dict"] = True
        return {"core": dict(session), "dict": dict(request.session)}

    @app.post("/login/{user}")
    async def login(user: str, session: SessionDep) -> dict[str, Any]:
        session.login(user)
        return {"user": session.user_id}

    @app.get("/me")
    async def me(session: SessionDep) -> dict[str, Any]:
        return {"user": session.user_id, "data": session.to_dict()}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, session: SessionDep) -> None:
        session["ws"] = session.get("ws", 0) + 1
        await websocket.accept()
        await websocket.send_json({"user": session.user_id, "ws": session["ws"]})
        await websocket.close()

    return app


@pytest.fixture(params=["cookie", "memory"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    store = None if request.param == "cookie" else MemoryStore()
    with TestClient(build(store)) as client:
        yield client


def test_dependency_gives_the_typed_session(client: TestClient) -> None:
    assert [client.get("/count").json()["n"] for _ in range(3)] == [1, 2, 3]
    response = client.get("/count")
    assert response.headers["vary"] == "Cookie"
    assert "; path=/; Max-Age=1209600; httponly; samesite=lax" in response.headers["set-cookie"]


def test_dependency_and_request_session_share_data(client: TestClient) -> None:
    assert client.get("/both").json() == {
        "core": {"via_core": True, "via_dict": True},
        "dict": {"via_core": True, "via_dict": True},
    }
    assert client.get("/me").json() == {
        "user": None,
        "data": {"via_core": True, "via_dict": True},
    }


def test_login_rotates_the_cookie(client: TestClient) -> None:
    client.get("/count")
    before = client.cookies["session"]
    assert client.post("/login/ada").json() == {"user": "ada"}
    assert client.cookies["session"] != before
    assert client.get("/me").json() == {"user": "ada", "data": {"n": 1}}


def test_websocket_dependency_and_cookie_on_accept(client: TestClient) -> None:
    client.post("/login/ada")
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"user": "ada", "ws": 1}
        headers = dict(ws.extra_headers or [])
    assert headers[b"set-cookie"].startswith(b"session=")
    client.cookies.clear()  # the handshake's cookie replaces the old one, as in a browser
    client.cookies.set("session", headers[b"set-cookie"].split(b";")[0][8:].decode())
    assert client.get("/me").json() == {"user": "ada", "data": {"ws": 1}}


def test_without_the_middleware_the_dependency_fails_loudly() -> None:
    app = FastAPI()

    @app.get("/")
    def home(session: SessionDep) -> dict[str, Any]:
        return {}

    with TestClient(app) as client, pytest.raises(RuntimeError, match="SessionMiddleware"):
        client.get("/")


def test_example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(load_example("fastapi_app", tmp_path, monkeypatch).app) as client:
        assert client.get("/").json()["visits"] == 1
        page = client.get("/").json()
        assert page["visits"] == 2
        forged = client.post("/login", data={"user": "ada", "csrf": "forged"})
        assert forged.status_code == 403
        response = client.post("/login", data={"user": "ada", "csrf": page["csrf"]})
        assert response.json()["user"] == "ada"
        assert client.get("/messages").json() == ["Welcome, ada."]
        assert client.get("/messages").json() == []
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"user": "ada", "sockets": 1}
        csrf = client.get("/").json()["csrf"]
        assert client.post("/logout", data={"csrf": csrf}).json() == {"user": None}
        page = client.get("/").json()
        assert (page["visits"], page["user"]) == (1, None)
    assert (tmp_path / "sessions.db").exists()
