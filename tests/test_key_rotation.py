"""Key rotation end to end: through the middleware, for signed and encrypted cookies."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from helpers import wsgi_app
from websession.session import Session
from websession.stores import CookieStore
from websession.wsgi import SessionMiddleware

OLD = "old-key-0123456789abcdef-0123456789"
NEW = "new-key-0123456789abcdef-0123456789"


def _view(session: Session, env: dict[str, Any]) -> Any:
    if env["PATH_INFO"] == "/add":
        session["n"] = session.get("n", 0) + 1
    return {"n": session.get("n")}


def _client(keys: list[str], encrypt: bool) -> httpx.Client:
    app = SessionMiddleware(wsgi_app(_view), store=CookieStore(keys, encrypt=encrypt))
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t")


def _cookie(response: httpx.Response) -> str:
    return response.headers["set-cookie"].split(";")[0].split("=", 1)[1]


@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "encrypted"])
def test_rotation_keeps_old_cookies_readable_and_signs_with_the_new_key(
    encrypt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with _client([OLD], encrypt) as before:
        old_cookie = _cookie(before.get("/add"))

    # Deploy 1: the new key first, the old one kept for reading.
    with _client([NEW, OLD], encrypt) as during:
        during.cookies["session"] = old_cookie
        assert during.get("/").json() == {"n": 1}  # old cookie still read
        new_cookie = _cookie(during.get("/add"))  # written with the new key
    with _client([NEW], encrypt) as only_new:
        only_new.cookies["session"] = new_cookie
        assert only_new.get("/").json() == {"n": 2}

    # Deploy 2: the old key removed; its cookies give an empty session, never an error.
    with (
        _client([NEW], encrypt) as after,
        caplog.at_level(logging.WARNING, logger="websession.security"),
    ):
        after.cookies["session"] = old_cookie
        response = after.get("/")
    assert response.status_code == 200
    assert response.json() == {"n": None}
    assert any("rejected" in r.getMessage() for r in caplog.records)
