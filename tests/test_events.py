"""Lifecycle hooks: what they receive, when they run, and that they never cost a write."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from helpers import FakeClock, asgi_app, wsgi_app
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.errors import SessionConfigError
from websession.events import SessionEvent
from websession.ids import HANDLE_LENGTH
from websession.session import Session
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env.get("PATH_INFO") or env.get("path")
    if path == "/start":
        session["cart"] = ["book"]
    elif path == "/login":
        session.login("u1")
    elif path == "/logout":
        session.logout()
    return {"cart": session.get("cart")}


def _client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t")


def test_hooks_see_create_rotate_destroy(clock: FakeClock) -> None:
    seen: list[SessionEvent] = []
    hooks = {f"on_{k}": seen.append for k in ("create", "rotate", "destroy", "expire")}
    app = SessionMiddleware(wsgi_app(_view), store=MemoryStore(clock=clock), clock=clock, **hooks)
    with _client(app) as client:
        client.get("/start")
        client.get("/login")
        client.get("/logout")
    kinds = [e.kind for e in seen]
    assert kinds == ["create", "rotate", "destroy"]
    created, rotated, destroyed = seen
    assert rotated.previous == created.handle
    assert rotated.user_id == "u1"
    assert destroyed.handle == rotated.handle
    assert destroyed.user_id == "u1"
    assert all(len(e.handle) == HANDLE_LENGTH for e in seen)
    assert all(e.at == clock() for e in seen)


def test_expire_hook_reports_a_session_past_the_absolute_cap(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    first = SessionMiddleware(wsgi_app(_view), store=store, clock=clock)
    with _client(first) as client:
        client.get("/start")
        cookie = client.cookies["session"]
    # The operator lowers the absolute timeout: the record is still in the store,
    # but the flow now finds it over the cap.
    seen: list[SessionEvent] = []
    stricter = SessionMiddleware(
        wsgi_app(_view), store=store, clock=clock, absolute_timeout=60, on_expire=seen.append
    )
    clock.advance(120)
    with _client(stricter) as client:
        client.cookies["session"] = cookie
        assert client.get("/").json() == {"cart": None}
    assert [e.kind for e in seen] == ["expire"]
    assert len(store) == 0


def test_a_failing_hook_is_logged_and_the_write_stands(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore(clock=clock)

    def broken(event: SessionEvent) -> None:
        raise RuntimeError("audit log down")

    app = SessionMiddleware(wsgi_app(_view), store=store, clock=clock, on_create=broken)
    with _client(app) as client, caplog.at_level(logging.ERROR, logger="websession"):
        response = client.get("/start")
        assert response.status_code == 200
        assert "set-cookie" in response.headers
        assert client.get("/").json() == {"cart": ["book"]}
    assert len(store) == 1
    assert any("create hook failed" in r.getMessage() for r in caplog.records)


def test_async_hook_is_refused_by_the_wsgi_middleware() -> None:
    async def hook(event: SessionEvent) -> None:
        pass

    with pytest.raises(SessionConfigError, match="on_create"):
        SessionMiddleware(wsgi_app(_view), store=MemoryStore(), on_create=hook)


def test_unknown_hook_value_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="on_destroy"):
        SessionMiddleware(wsgi_app(_view), store=MemoryStore(), on_destroy="not callable")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_hooks_run_under_asgi() -> None:
    seen: list[str] = []

    async def on_create(event: SessionEvent) -> None:
        seen.append(event.kind)

    async def on_destroy(event: SessionEvent) -> None:
        raise RuntimeError("logged, not raised")

    app = ASGISessionMiddleware(
        asgi_app(_view), store=MemoryStore(), on_create=on_create, on_destroy=on_destroy
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/start")
        response = await client.get("/logout")
    assert seen == ["create"]
    assert response.status_code == 200


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_delete_expired_reports_each_expired_session(
    clock: FakeClock, tmp_path: Any, kind: str
) -> None:
    from websession.stores import SQLiteStore

    store: Any = (
        MemoryStore(clock=clock)
        if kind == "memory"
        else SQLiteStore(tmp_path / "s.db", clock=clock)
    )
    seen: list[SessionEvent] = []
    app = SessionMiddleware(
        wsgi_app(_view), store=store, clock=clock, idle_timeout=60, on_expire=seen.append
    )
    for _ in range(3):
        with _client(app) as client:
            client.get("/start")
    with _client(app) as client:
        client.get("/start")
        client.get("/login")
    clock.advance(61)
    assert app.delete_expired(limit=2) == 2
    assert app.delete_expired(limit=10) == 2
    assert app.delete_expired() == 0
    assert len(seen) == 4
    assert sorted(e.user_id or "" for e in seen) == ["", "", "", "u1"]
    assert all(e.kind == "expire" and len(e.handle) == HANDLE_LENGTH for e in seen)
