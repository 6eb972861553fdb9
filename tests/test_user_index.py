"""The per-user index end to end: browsers sign in through the WSGI middleware, the app lists
the user's devices, and "log out everywhere else" signs the other browser out.

Runs on every store that keeps the index: memory, files, SQLite, Redis (the server at
``WEBSESSION_REDIS_URL``, default ``redis://127.0.0.1:6379/0``, under a prefix of this run's
own, skipped without a server except under CI) and the private Redis Cluster of the
``redis_servers`` plugin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import REDIS_URL, delete_keys, redis_client, requires, run_prefix
from websession.ids import handle_of, hash_id
from websession.stores import FileStore, MemoryStore, SQLiteStore
from websession.stores.base import UserIndex
from websession.wsgi import SessionMiddleware, get_session

pytest_plugins = ["redis_servers"]


def redis_store(url: str) -> Iterator[Any]:
    """A RedisStore under a prefix of its own; deletes exactly its keys afterwards."""
    with requires("redis-py", "redis"):
        from websession.stores.redis import RedisStore
    store = RedisStore(url, prefix=run_prefix("user-index"))
    yield store
    delete_keys(store.client, store.prefix)
    store.close()


@pytest.fixture(params=["memory", "file", "sqlite", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "file":
        yield FileStore(tmp_path / "sessions")
    elif kind == "sqlite":
        sqlite = SQLiteStore(tmp_path / "sessions.db")
        yield sqlite
        sqlite.close()
    elif kind == "redis":
        redis_client().close()  # skips (fails under CI) without redis-py or a server
        yield from redis_store(REDIS_URL)
    else:
        yield from redis_store(request.getfixturevalue("redis_cluster").url)


def make_app(store: UserIndex) -> SessionMiddleware:
    """A tiny app: /login signs in as alice, /devices lists her sessions, / says who is in."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session = get_session(environ)
        path = environ["PATH_INFO"]
        body: object = session.user_id
        if path == "/login":
            session.login("alice")
            body = session.user_id
        elif path == "/devices" and session.user_id is not None:
            body = [
                {
                    "handle": handle_of(key),
                    "current": handle_of(key) == session.handle,
                    "ip": entry.ip,
                    "agent": entry.user_agent,
                    "created": entry.created,
                    "last_seen": entry.last_seen,
                    "expires": entry.expires,
                }
                for key, entry in store.sessions_for(session.user_id)
            ]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return SessionMiddleware(app, store=store)


def browser(app: SessionMiddleware, agent: str, ip: str) -> httpx.Client:
    transport = httpx.WSGITransport(app=app, remote_addr=ip)
    return httpx.Client(
        transport=transport, base_url="http://testserver", headers={"User-Agent": agent}
    )


def test_log_out_everywhere_else(store: Any) -> None:
    assert isinstance(store, UserIndex)
    app = make_app(store)
    with (
        browser(app, "Firefox/128 (laptop)", "192.0.2.10") as laptop,
        browser(app, "Safari/17 (phone)", "198.51.100.20") as phone,
    ):
        assert laptop.get("/login").json() == "alice"
        assert phone.get("/login").json() == "alice"
        laptop_key = hash_id(laptop.cookies["session"])
        phone_key = hash_id(phone.cookies["session"])

        listed = dict(store.sessions_for("alice"))
        assert set(listed) == {laptop_key, phone_key}
        assert (listed[laptop_key].ip, listed[laptop_key].user_agent) == (
            "192.0.2.10",
            "Firefox/128 (laptop)",
        )
        assert (listed[phone_key].ip, listed[phone_key].user_agent) == (
            "198.51.100.20",
            "Safari/17 (phone)",
        )
        assert store.sessions_for("bob") == []

        # What a "your devices" page shows: handles (never ids), metadata, which one is this.
        devices = laptop.get("/devices").json()
        assert sorted(d["handle"] for d in devices) == sorted(
            [handle_of(laptop_key), handle_of(phone_key)]
        )
        assert [d["agent"] for d in devices if d["current"]] == ["Firefox/128 (laptop)"]
        assert all(d["created"] <= d["last_seen"] < d["expires"] for d in devices)
        ids = (laptop.cookies["session"], phone.cookies["session"])
        assert not any(session_id in json.dumps(devices) for session_id in ids)

        # "Log out everywhere else", from the laptop.
        assert store.revoke_user("alice", keep=[laptop_key]) == 1
        assert phone.get("/").json() is None  # the phone is anonymous now
        assert laptop.get("/").json() == "alice"
        assert [key for key, _ in store.sessions_for("alice")] == [laptop_key]

        # And a single revocation signs the laptop out too.
        assert store.revoke(laptop_key) is True
        assert laptop.get("/").json() is None
        assert store.sessions_for("alice") == []
