"""Periodic id renewal (OWASP renewal timeout) that logs nobody out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import FakeClock, wsgi_app
from websession.errors import SessionConfigError
from websession.flow import RENEW_GRACE
from websession.ids import hash_id
from websession.session import Session
from websession.stores import MemoryStore
from websession.wsgi import SessionMiddleware

RENEW = 600.0


def _view(session: Session, env: dict[str, Any]) -> Any:
    if env["PATH_INFO"] == "/add":
        session["n"] = session.get("n", 0) + 1
    return {"n": session.get("n")}


def _setup(clock: FakeClock) -> tuple[MemoryStore, httpx.Client]:
    store = MemoryStore(clock=clock)
    app = SessionMiddleware(
        wsgi_app(_view), store=store, clock=clock, renew_interval=RENEW, idle_timeout=3600
    )
    return store, httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t")


def _get(client: httpx.Client, path: str, token: str) -> httpx.Response:
    client.cookies.clear()
    return client.get(path, headers={"Cookie": f"session={token}"})


def _new_token(response: httpx.Response) -> str | None:
    cookie = response.headers.get("set-cookie")
    return cookie.split(";")[0].split("=", 1)[1] if cookie else None


def test_the_id_is_renewed_after_the_interval_and_the_data_stays(clock: FakeClock) -> None:
    store, client = _setup(clock)
    first = _new_token(client.get("/add"))
    assert first is not None
    clock.advance(RENEW / 2)
    assert _new_token(_get(client, "/", first)) in (None, first)  # not due: same id
    clock.advance(RENEW / 2)
    response = _get(client, "/", first)  # a read-only request renews too
    second = _new_token(response)
    assert second is not None
    assert second != first
    assert response.json() == {"n": 1}
    assert _get(client, "/add", second).json() == {"n": 2}
    assert store.load(hash_id(second)) is not None


def test_requests_still_using_the_old_id_are_not_logged_out(clock: FakeClock) -> None:
    store, client = _setup(clock)
    first = _new_token(client.get("/add"))
    assert first is not None
    clock.advance(RENEW)
    second = _new_token(_get(client, "/", first))
    assert second is not None
    # A request that left the browser before the renewal arrives afterwards.
    late = _get(client, "/add", first)
    assert late.json() == {"n": 2}  # it sees the data (its own change included, in memory)
    assert "set-cookie" not in late.headers  # and it neither clears nor resets the cookie
    assert _get(client, "/", second).json() == {"n": 1}  # the old id is never written to
    clock.advance(RENEW_GRACE + 1)
    assert _get(client, "/", first).json() == {"n": None}  # gone after the grace
    assert store.load(hash_id(first)) is None


def test_renewal_is_off_by_default_and_validated() -> None:
    assert SessionMiddleware(wsgi_app(_view), store=MemoryStore()).config.renew_interval is None
    with pytest.raises(SessionConfigError, match="renew_interval"):
        SessionMiddleware(wsgi_app(_view), store=MemoryStore(), renew_interval=-5)
