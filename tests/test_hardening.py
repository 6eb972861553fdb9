"""Hardening that a user of the embedded stores can check on their own disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import wsgi_app
from websession.session import Session
from websession.stores import FileStore, MemoryStore, SQLiteStore
from websession.wsgi import SessionMiddleware


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if path == "/login":
        session["cart"] = ["book"]
        session.login("alice")
    elif path == "/read":
        session.get("cart")
    return "ok"


def _raw_bytes(kind: str, store: Any, where: Path) -> bytes:
    if kind == "memory":
        return repr(store._entries).encode()
    if kind == "file":
        return b"".join(p.read_bytes() + p.name.encode() for p in where.rglob("*") if p.is_file())
    with sqlite3.connect(where / "s.db") as db:
        rows = db.execute("SELECT * FROM websession_sessions").fetchall()
    return repr(rows).encode()


def _store(kind: str, where: Path) -> Any:
    if kind == "memory":
        return MemoryStore()
    if kind == "file":
        return FileStore(where / "sessions")
    return SQLiteStore(where / "s.db")


@pytest.mark.parametrize("kind", ["memory", "file", "sqlite"])
def test_a_raw_dump_of_the_store_holds_no_live_session_id(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    app = SessionMiddleware(wsgi_app(_view), store=store)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        client.get("/login")
        token = client.cookies["session"]
        assert client.get("/read").status_code == 200
    dump = _raw_bytes(kind, store, tmp_path)
    assert b"alice" in dump  # the dump is real: it holds the session's metadata
    assert token.encode() not in dump


@pytest.mark.parametrize("kind", ["memory", "file", "sqlite"])
def test_a_flood_of_anonymous_requests_stores_nothing(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    app = SessionMiddleware(wsgi_app(_view), store=store)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        for i in range(300):
            # Visitors that read the session, with no cookie or a forged one.
            cookie = {} if i % 2 else {"Cookie": f"session={'A' * 42}{i % 10}"}
            response = client.get("/read", headers=cookie)
            assert (
                "set-cookie" not in response.headers
                or "Max-Age=0" in response.headers["set-cookie"]
            )
            client.cookies.clear()
    assert list(store.entries()) == []
