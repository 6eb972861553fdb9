"""One session shared by apps of different frameworks on one domain.

examples/shared_flask_fastapi.py is exercised twice: mounted side by side in
one ASGI process (Flask through asgiref's WSGI adapter), and as two real
servers in two processes (wsgiref for Flask, uvicorn for FastAPI) on two
ports of 127.0.0.1, sharing one SQLite file and the default cookie name. A
login through Flask is seen by FastAPI, a flash set in FastAPI shows in Flask,
and Flask's Markup in the session does not break the FastAPI side.

Then Django's engine and the Starlette drop-in share a session the same way.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import django_settings
from websession.ids import hash_id
from websession.stores import MemoryStore, SQLiteStore

django_settings.configure(__name__)

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import path  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shared_flask_fastapi.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_shared_flask_fastapi", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _journey(flask_url: str, fastapi_url: str, client: httpx.Client) -> str:
    """The shared-session story, against any two base URLs; returns the final cookie."""
    # Nobody is signed in yet, on either side.
    assert client.get(f"{fastapi_url}/whoami").json()["user"] is None

    # Sign in through Flask: the id rotates, and the new cookie serves both apps.
    response = client.post(f"{flask_url}/login", data={"user": "alice"})
    assert response.status_code == 200, response.text
    token = client.cookies["session"]

    seen = client.get(f"{fastapi_url}/whoami").json()
    assert seen["user"] == "alice"
    assert seen["cart"] == ["apple"]

    # A Flask-only type (Markup) in the session: FastAPI reads it as text, and
    # its own saves keep it, so Flask still gets Markup back.
    assert client.post(f"{flask_url}/greeting").status_code == 200
    seen = client.get(f"{fastapi_url}/whoami").json()
    assert seen["greeting"] == "<b>Hello</b> from Flask"
    response = client.post(f"{fastapi_url}/cart", data={"item": "pear"})
    assert response.status_code == 200, response.text
    assert response.json()["cart"] == ["apple", "pear"]
    flask_view = client.get(f"{flask_url}/whoami").json()
    assert flask_view["cart"] == ["apple", "pear"]
    assert flask_view["greeting_type"] == "Markup"
    assert flask_view["user"] == "alice"

    # Flash in FastAPI, shown by Flask's get_flashed_messages() (after Flask's own).
    assert client.post(f"{fastapi_url}/flash", data={"message": "from FastAPI"}).status_code == 200
    messages = client.get(f"{flask_url}/messages").json()["messages"]
    assert messages == [["info", "Signed in as alice (by Flask)"], ["info", "from FastAPI"]]
    assert client.get(f"{flask_url}/messages").json()["messages"] == []

    # Throughout, both apps kept the same session: the cookie never changed after login.
    assert client.cookies["session"] == token
    return token


def test_mounted_side_by_side_in_one_process(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    example = _example()
    store = SQLiteStore(tmp_path / "shared.db")
    with TestClient(example.make_app(store)) as client:
        token = _journey("/flask", "", client)
        assert store.load(hash_id(token)) is not None

        # Logging out in FastAPI deletes the record: Flask sees nobody either.
        assert client.post("/logout").status_code == 200
        assert store.load(hash_id(token)) is None
        assert client.get("/flask/whoami").json()["user"] is None


def test_a_stranger_does_not_share_the_session() -> None:
    from starlette.testclient import TestClient

    example = _example()
    store = MemoryStore()
    app = example.make_app(store)
    with TestClient(app) as alice, TestClient(app) as stranger:
        assert alice.post("/flask/login", data={"user": "alice"}).status_code == 200
        assert alice.get("/whoami").json()["user"] == "alice"
        assert stranger.get("/whoami").json()["user"] is None
        assert stranger.get("/flask/whoami").json()["user"] is None


# -- two real servers, two processes, one SQLite file --------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"server for {url} exited with {process.returncode}:\n{output}")
        try:
            httpx.get(f"{url}/whoami", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"server for {url} did not start")
            time.sleep(0.05)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    database = tmp_path / "shared.db"
    env = {**os.environ, "WEBSESSION_STORE": f"sqlite:///{database}"}
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for side in ("flask", "fastapi"):
            port = _free_port()
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLE), side, "--port", str(port)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            url = f"http://127.0.0.1:{port}"
            _wait_until_serving(url, process)
            urls.append(url)
        yield urls[0], urls[1], database
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def test_two_servers_on_two_ports_share_the_session(two_servers: tuple[str, str, Path]) -> None:
    flask_url, fastapi_url, database = two_servers
    # One client, like one browser: cookies belong to the host, whatever the port.
    with httpx.Client(timeout=10) as client:
        token = _journey(flask_url, fastapi_url, client)
        entry = SQLiteStore(database).load(hash_id(token))
        assert entry is not None
        assert entry.user_id == "alice"

        assert client.post(f"{fastapi_url}/logout").status_code == 200
        assert client.get(f"{flask_url}/whoami").json()["user"] is None
        assert SQLiteStore(database).load(hash_id(token)) is None


# -- Django's engine and the Starlette drop-in -----------------------------------------------------


def django_whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"cart": request.session.get("cart"), "note": request.session.get("note")})


def django_note(request: HttpRequest) -> JsonResponse:
    request.session["note"] = "written by Django"
    return JsonResponse({"ok": True})


urlpatterns = [path("whoami", django_whoami), path("note", django_note)]


def _starlette_and_django(store: Any) -> Any:
    from asgiref.wsgi import WsgiToAsgi
    from django.core.wsgi import get_wsgi_application
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from websession.integrations.starlette import SessionMiddleware, get_session

    async def login(request: Request) -> JSONResponse:
        get_session(request).login("alice")
        request.session["cart"] = ["apple"]
        return JSONResponse({"ok": True})

    async def whoami(request: Request) -> JSONResponse:
        core = get_session(request)
        return JSONResponse(
            {
                "user": core.user_id,
                "cart": request.session.get("cart"),
                "note": request.session.get("note"),
            }
        )

    starlette_app = Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/whoami", whoami)],
        middleware=[
            Middleware(SessionMiddleware, secret_key=django_settings.SECRET_KEY, store=store)
        ],
    )
    return Starlette(
        routes=[
            Mount("/django", app=WsgiToAsgi(get_wsgi_application())),
            Mount("/", app=starlette_app),
        ]
    )


def test_django_engine_and_starlette_drop_in_share_a_session(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    store = SQLiteStore(tmp_path / "shared.db")
    settings = {
        "ROOT_URLCONF": __name__,
        "WEBSESSION_STORE": store,
        # websession's default name; Django's own default is "sessionid".
        "SESSION_COOKIE_NAME": "session",
    }
    with override_settings(**settings), TestClient(_starlette_and_django(store)) as client:
        assert client.post("/login").status_code == 200
        token = client.cookies["session"]

        assert client.get("/django/whoami").json() == {"cart": ["apple"], "note": None}
        assert client.post("/django/note").status_code == 200
        # Django saved under the same key (its engine's keys are websession ids).
        assert client.cookies["session"] == token

        seen = client.get("/whoami").json()
        assert seen == {"user": "alice", "cart": ["apple"], "note": "written by Django"}
        entry = store.load(hash_id(token))
        assert entry is not None
        # Django's save kept the user another framework bound.
        assert entry.user_id == "alice"
