"""A store that fails while the response starts turns into a 503, not a 500 or a lost write."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import asgi_app, wsgi_app
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.session import Session
from websession.stores import SQLiteStore
from websession.wsgi import SessionMiddleware


def _break(db: Path) -> None:
    # A real failure of the real store: the table vanishes under the running app.
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE websession_sessions")


def _view(session: Session, env: dict[str, Any]) -> Any:
    session["n"] = session.get("n", 0) + 1
    if env.get("QUERY_STRING", env.get("query_string", b"")) in ("break", b"break"):
        _break(DB[0])  # loaded fine; the save at response start will fail
    return {"n": session["n"]}


DB: list[Path] = []


@pytest.fixture
def db(tmp_path: Path) -> Path:
    DB[:] = [tmp_path / "s.db"]
    return DB[0]


@pytest.mark.parametrize("when", ["load", "save"])
def test_wsgi_answers_503_when_the_store_fails(
    db: Path, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    app = SessionMiddleware(wsgi_app(_view), store=SQLiteStore(db))
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        assert client.get("/").json() == {"n": 1}
        if when == "load":
            _break(db)
        with caplog.at_level(logging.ERROR, logger="websession"):
            response = client.get("/?break" if when == "save" else "/")
    assert response.status_code == 503
    assert "session store" in response.text
    assert "set-cookie" not in response.headers
    assert any("503" in r.getMessage() for r in caplog.records)


def test_wsgi_generator_app_answers_503_too(db: Path) -> None:
    def generator_app(environ: dict[str, Any], start_response: Any) -> Any:
        session = environ["websession.session"]
        session["x"] = session.get("x", 0) + 1
        if environ["QUERY_STRING"] == "break":
            _break(db)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"body that must not be sent"

    app = SessionMiddleware(generator_app, store=SQLiteStore(db))
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        assert client.get("/").status_code == 200
        response = client.get("/?break")
    assert response.status_code == 503
    assert b"must not" not in response.content


@pytest.mark.anyio
@pytest.mark.parametrize("when", ["load", "save"])
async def test_asgi_answers_503_when_the_store_fails(db: Path, when: str) -> None:
    app = ASGISessionMiddleware(asgi_app(_view), store=SQLiteStore(db))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/")).json() == {"n": 1}
        if when == "load":
            _break(db)
        response = await client.get("/?break" if when == "save" else "/")
    assert response.status_code == 503
    assert "session store" in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("when", ["load", "save"])
def test_wsgi_fail_open_serves_an_unsaved_session(
    db: Path, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    app = SessionMiddleware(wsgi_app(_view), store=SQLiteStore(db), on_store_error="fail_open")
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        assert client.get("/").json() == {"n": 1}
        if when == "load":
            _break(db)
        with caplog.at_level(logging.ERROR, logger="websession"):
            response = client.get("/?break" if when == "save" else "/")
    assert response.status_code == 200
    # On a failed load the app saw an empty session; on a failed save its own data.
    assert response.json() == {"n": 1 if when == "load" else 2}
    assert "set-cookie" not in response.headers
    assert any("fail" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_asgi_fail_open_with_an_unreachable_async_store() -> None:
    pytest.importorskip("redis")
    from websession.stores import AsyncRedisStore

    store = AsyncRedisStore("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = ASGISessionMiddleware(asgi_app(_view), store=store, on_store_error="fail_open")
    transport = httpx.ASGITransport(app=app)
    token = "A" * 43  # well-formed, so the middleware must ask the store
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", cookies={"session": token}
    ) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"n": 1}
    assert "set-cookie" not in response.headers


@pytest.mark.anyio
async def test_asgi_answers_503_with_an_unreachable_async_store() -> None:
    pytest.importorskip("redis")
    from websession.stores import AsyncRedisStore

    store = AsyncRedisStore("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = ASGISessionMiddleware(asgi_app(_view), store=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", cookies={"session": "A" * 43}
    ) as client:
        response = await client.get("/")
    assert response.status_code == 503
