"""Rotation edge cases: revocation racing a login, the absolute cap across login, websockets."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from helpers import FakeClock, TestClient, call_wsgi, cookie_value, set_cookies, wsgi_app
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.errors import SessionStateError
from websession.ids import hash_id
from websession.session import Session
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware

HOUR = 3600.0


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if path == "/start":
        session["cart"] = ["book"]
    elif path == "/login":
        session.login("7")
    elif path == "/regenerate":
        session.regenerate()
    elif path == "/poke":
        session["n"] = session.get("n", 0) + 1
    return {"cart": session.get("cart"), "user": session.user_id}


def _token(headers: list[tuple[str, str]]) -> str:
    (cookie,) = set_cookies(headers)
    return cookie_value(cookie)


def test_login_after_revocation_does_not_revive_the_data(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    revoke_during_request = {"on": False}

    def view(session: Session, env: dict[str, Any]) -> Any:
        result = _view(session, env)
        if revoke_during_request["on"]:
            store.delete(hash_id(env["HTTP_COOKIE"].split("=", 1)[1]))
        return result

    app = SessionMiddleware(wsgi_app(view), store=store, clock=clock)
    _, headers, _ = call_wsgi(app, "/start")
    token = _token(headers)
    revoke_during_request["on"] = True
    _, headers, _ = call_wsgi(app, "/login", cookie=f"session={token}")
    assert len(store) == 0, "a revoked session must not live on under a new id"
    (cookie,) = set_cookies(headers)
    assert "Max-Age=0" in cookie


@pytest.mark.parametrize(("path", "survives"), [("/login", True), ("/regenerate", False)])
def test_login_restarts_the_absolute_timeout_regenerate_does_not(
    clock: FakeClock, path: str, survives: bool
) -> None:
    store = MemoryStore(clock=clock)
    app = SessionMiddleware(
        wsgi_app(_view), store=store, clock=clock, idle_timeout=HOUR, absolute_timeout=3.5 * HOUR
    )
    _, headers, _ = call_wsgi(app, "/start")
    token = _token(headers)
    for _ in range(3):  # stay active for three hours
        clock.advance(HOUR - 1)
        _, headers, _ = call_wsgi(app, "/poke", cookie=f"session={token}")
    _, headers, _ = call_wsgi(app, path, cookie=f"session={token}")
    token = _token(headers)
    clock.advance(HOUR - 1)  # 4 h after creation (over the cap), 1 h after the rotation
    _, _, body = call_wsgi(app, "/poke", cookie=f"session={token}")
    assert (b'"book"' in body) is survives


def test_websocket_cannot_store_data_in_a_session_created_after_accept() -> None:
    errors: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            websocket.session["late"] = 1
        except SessionStateError as exc:
            errors.append(str(exc))
        await websocket.send_text("done")
        await websocket.close()

    app = ASGISessionMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", endpoint)]), store=MemoryStore()
    )
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "done"
    assert errors
    assert "before accept()" in errors[0]
