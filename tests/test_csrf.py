"""CSRF enforcement for unsafe methods, through both middlewares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import TestClient
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.csrf import MAX_FORM_BYTES
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware as WSGISessionMiddleware

RAN: list[bytes] = []


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["websession.session"]
    if environ["PATH_INFO"] == "/token":
        body = session.csrf_token().encode()
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b"ran"
        RAN.append(body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    session = scope["session"]
    if scope["path"] == "/token":
        body = session.csrf_token().encode()
    else:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks) or b"ran"
        RAN.append(body)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    RAN.clear()
    if request.param == "wsgi":
        app = WSGISessionMiddleware(wsgi_app, store=MemoryStore(), csrf_protect=True)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
            yield c
    else:
        asgi = ASGISessionMiddleware(asgi_app, store=MemoryStore(), csrf_protect=True)
        with TestClient(asgi) as c:
            yield c


def _token(client: httpx.Client) -> str:
    return client.get("/token").text


def test_safe_methods_need_no_token(client: httpx.Client) -> None:
    assert client.get("/action").status_code == 200


def test_unsafe_request_without_token_is_refused_before_the_app_runs(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    _token(client)
    with caplog.at_level(logging.WARNING, logger="websession.security"):
        response = client.post("/action", content=b"x")
    assert response.status_code == 403
    assert "CSRF token missing or incorrect" in response.text
    assert RAN == []
    assert any("CSRF check failed" in r.getMessage() for r in caplog.records)


def test_header_token_is_accepted(client: httpx.Client) -> None:
    token = _token(client)
    response = client.post("/action", content=b"payload", headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert RAN == [b"payload"]


def test_form_field_is_accepted_and_the_app_still_reads_the_whole_form(
    client: httpx.Client,
) -> None:
    token = _token(client)
    response = client.post("/action", data={"csrf_token": token, "note": "hello"})
    assert response.status_code == 200
    assert response.content == f"csrf_token={token}&note=hello".encode()


@pytest.mark.parametrize("where", ["header", "form"])
def test_a_wrong_token_is_refused(client: httpx.Client, where: str) -> None:
    _token(client)
    if where == "header":
        response = client.post("/action", headers={"X-CSRF-Token": "forged"})
    else:
        response = client.post("/action", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert RAN == []


def test_a_visitor_without_a_session_is_refused(client: httpx.Client) -> None:
    response = client.post("/action", data={"csrf_token": "anything"})
    assert response.status_code == 403


def test_an_oversized_form_must_carry_the_header(client: httpx.Client) -> None:
    token = _token(client)
    big = {"csrf_token": token, "blob": "x" * (MAX_FORM_BYTES + 10)}
    assert client.post("/action", data=big).status_code == 403
    response = client.post("/action", data=big, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert len(response.content) > MAX_FORM_BYTES


def test_multipart_forms_must_carry_the_header(client: httpx.Client) -> None:
    token = _token(client)
    files = {"upload": ("a.txt", b"data")}
    assert client.post("/action", data={"csrf_token": token}, files=files).status_code == 403
    ok = client.post(
        "/action", data={"csrf_token": token}, files=files, headers={"X-CSRF-Token": token}
    )
    assert ok.status_code == 200


def test_enforcement_is_off_by_default() -> None:
    app = WSGISessionMiddleware(wsgi_app, store=MemoryStore())
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
        assert c.post("/action", content=b"x").status_code == 200
