"""A user's sessions through the middlewares: "your devices", revocation, the per-user cap."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from helpers import FakeClock, SlowAsyncStore, asgi_app, wsgi_app
from websession import SessionConfigError, SessionInfo, TooManySessions, UserIndexMissing
from websession.asgi import SessionMiddleware as ASGISessionMiddleware
from websession.events import SessionEvent
from websession.session import Session
from websession.stores import CookieStore, MemoryStore
from websession.wsgi import SessionMiddleware

MIDDLEWARE: list[SessionMiddleware] = []


def _view(session: Session, env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    mw = MIDDLEWARE[0]
    if path == "/login":
        try:
            session.login("alice")
        except TooManySessions as exc:
            return {"refused": exc.limit}
    elif path == "/devices":
        devices = mw.sessions_for("alice", current=session)
        return [[d.handle, d.current, d.user_agent] for d in devices]
    elif path == "/revoke":
        return {"revoked": mw.revoke("alice", env["QUERY_STRING"])}
    elif path == "/elsewhere":
        return {"revoked": mw.revoke_user("alice", keep=session)}
    return {"user": session.user_id}


def _browser(app: Any, agent: str) -> httpx.Client:
    return httpx.Client(
        transport=httpx.WSGITransport(app=app), base_url="http://t", headers={"User-Agent": agent}
    )


def _app(clock: FakeClock, **options: Any) -> tuple[SessionMiddleware, MemoryStore]:
    store = MemoryStore(clock=clock)
    app = SessionMiddleware(wsgi_app(_view), store=store, clock=clock, **options)
    MIDDLEWARE[:] = [app]
    return app, store


def test_your_devices_lists_each_session_and_marks_the_current_one(clock: FakeClock) -> None:
    app, _ = _app(clock)
    laptop, phone = _browser(app, "laptop"), _browser(app, "phone")
    laptop.get("/login")
    clock.advance(5)
    phone.get("/login")
    devices = phone.get("/devices").json()
    assert [(d[1], d[2]) for d in devices] == [(True, "phone"), (False, "laptop")]
    assert all(len(d[0]) == 12 for d in devices)


def test_revoking_one_device_signs_it_out_and_runs_the_hook(clock: FakeClock) -> None:
    revoked: list[SessionEvent] = []
    app, _ = _app(clock, on_revoke=revoked.append)
    laptop, phone = _browser(app, "laptop"), _browser(app, "phone")
    laptop.get("/login")
    clock.advance(5)
    phone.get("/login")
    laptop_handle = phone.get("/devices").json()[1][0]
    assert phone.get(f"/revoke?{laptop_handle}").json() == {"revoked": True}
    assert laptop.get("/").json() == {"user": None}
    assert phone.get("/").json() == {"user": "alice"}
    assert [(e.kind, e.handle, e.user_id) for e in revoked] == [("revoke", laptop_handle, "alice")]
    assert phone.get("/revoke?short").json() == {"revoked": False}


def test_sign_out_everywhere_else_keeps_the_current_session(clock: FakeClock) -> None:
    app, store = _app(clock)
    browsers = [_browser(app, f"b{i}") for i in range(3)]
    for browser in browsers:
        browser.get("/login")
        clock.advance(1)
    assert browsers[0].get("/elsewhere").json() == {"revoked": 2}
    assert [b.get("/").json()["user"] for b in browsers] == ["alice", None, None]
    assert len(store.sessions_for("alice")) == 1


def test_the_cap_evicts_the_least_recently_seen_session(clock: FakeClock) -> None:
    revoked: list[SessionEvent] = []
    app, _ = _app(clock, max_sessions_per_user=2, on_revoke=revoked.append)
    first, second, third = (_browser(app, n) for n in ("first", "second", "third"))
    first.get("/login")
    clock.advance(1)
    second.get("/login")
    clock.advance(1)
    third.get("/login")
    assert [b.get("/").json()["user"] for b in (first, second, third)] == [None, "alice", "alice"]
    assert len(revoked) == 1


def test_the_cap_can_refuse_the_new_login_instead(clock: FakeClock) -> None:
    app, store = _app(clock, max_sessions_per_user=2, session_limit="refuse")
    first, second, third = (_browser(app, n) for n in ("first", "second", "third"))
    first.get("/login")
    second.get("/login")
    assert third.get("/login").json() == {"refused": 2}
    assert third.get("/").json() == {"user": None}
    assert len(store.sessions_for("alice")) == 2
    assert first.get("/login").json() == {"user": "alice"}  # logging in again is no new session


def test_stores_without_an_index_say_so() -> None:
    app = SessionMiddleware(wsgi_app(_view), store=CookieStore(["k" * 32]))
    with pytest.raises(UserIndexMissing, match="per-user index"):
        app.sessions_for("alice")
    with pytest.raises(SessionConfigError, match="max_sessions_per_user"):
        SessionMiddleware(wsgi_app(_view), store=CookieStore(["k" * 32]), max_sessions_per_user=3)


class _IndexedSlowStore(SlowAsyncStore):
    """A non-inline async store with the per-user index, as a network store has."""

    inner: MemoryStore

    async def sessions_for(self, user_id: str) -> list[Any]:
        await asyncio.sleep(0)
        return self.inner.sessions_for(user_id)

    async def revoke(self, key: str) -> bool:
        await asyncio.sleep(0)
        return self.inner.revoke(key)

    async def revoke_user(self, user_id: str, *, keep: Any = ()) -> int:
        return self.inner.revoke_user(user_id, keep=keep)


@pytest.mark.anyio
async def test_asgi_async_store_devices_and_a_refused_login_after_the_fact() -> None:
    memory = MemoryStore()
    store = _IndexedSlowStore(memory)
    seen: list[list[SessionInfo]] = []
    holder: list[ASGISessionMiddleware] = []

    async def view(session: Session, scope: dict[str, Any]) -> Any:
        if scope["path"] == "/login":
            session.login("bob")
        seen.append(await holder[0].sessions_for("bob", current=session))
        return {"user": session.user_id}

    app = ASGISessionMiddleware(
        asgi_app(view), store=store, max_sessions_per_user=1, session_limit="refuse"
    )
    holder.append(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as one:
        await one.get("/login")
        assert (await one.get("/")).json() == {"user": "bob"}
        assert [d.current for d in seen[-1]] == [True]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as two:
        await two.get("/login")  # an async store cannot be asked inside login()
        assert (await two.get("/")).json() == {"user": None}  # so the new one is revoked
    assert len(memory.sessions_for("bob")) == 1
