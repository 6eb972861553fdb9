"""The request flow as a user sees it, through both drivers: loading, saving, expiry, identity."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from helpers import (
    CountingStore,
    FakeClock,
    Reply,
    cookie_attributes,
    cookie_value,
    make_client,
    path_of,
)
from websession.ids import hash_id
from websession.session import Session
from websession.stores import CookieStore, MemoryStore

IDLE = 1800
ABSOLUTE = 12 * 3600
TOUCH = 60


@pytest.fixture
def store(clock: FakeClock) -> CountingStore:
    return CountingStore(MemoryStore(clock=clock))


Serve = Callable[..., httpx.Client]


@pytest.fixture(params=["wsgi", "asgi"])
def serve(
    request: pytest.FixtureRequest, clock: FakeClock, store: CountingStore
) -> Iterator[Serve]:
    """Build a client for a view under the driver this test run uses."""
    clients: list[httpx.Client] = []

    def build(view: Callable[[Session, dict[str, Any]], Any], **options: Any) -> httpx.Client:
        options.setdefault("store", store)
        options.setdefault("clock", clock)
        client = make_client(request.param, view, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def view_actions(session: Session, env: dict[str, Any]) -> Any:
    """A small app: each path does one thing with the session and reports it."""
    path = path_of(env)
    if path == "/set":
        session["a"] = 1
        session["cart"] = [1, 2]
    elif path == "/read":
        return {"a": session.get("a"), "len": len(session), "has": "a" in session}
    elif path == "/dict":
        return {"data": session.to_dict(), "user": session.user_id, "new": session.is_new}
    elif path == "/append":
        session["cart"].append(3)
    elif path == "/flash":
        session.flash("hello", "info")
    elif path == "/pop":
        return {"flashes": session.pop_flashes(), "data": session.to_dict()}
    elif path == "/csrf":
        return {"csrf": session.csrf_token()}
    elif path == "/login":
        before = session.csrf_token()
        session.login(42)
        return {"before": before, "after": session.csrf_token()}
    elif path == "/logout":
        session.logout()
    elif path == "/logout-flash":
        session.logout()
        session.flash("signed out")
    elif path == "/regenerate":
        session.regenerate()
    elif path == "/remember":
        session.set_expiry(600)
    elif path == "/remember-td":
        session.set_expiry(timedelta(minutes=5))
    elif path == "/browser":
        session.set_expiry(None)
    elif path == "/boom":
        session["a"] = "changed"
        return Reply({"error": True}, status=500)
    elif path == "/set-unset":
        session["tmp"] = 1
        del session["tmp"]
    return {"ok": True}


def the_cookie(response: httpx.Response) -> str:
    (value,) = response.headers.get_list("set-cookie")
    return value


def start(client: httpx.Client) -> str:
    """Create a stored session; return its id as the cookie carries it."""
    response = client.get("/set")
    return cookie_value(the_cookie(response))


def get(client: httpx.Client, path: str, token: str | None) -> httpx.Response:
    headers = {"Cookie": f"session={token}"} if token is not None else {}
    return client.get(path, headers=headers)


# -- laziness ----------------------------------------------------------------------------


def test_untouched_request_calls_no_store_and_sets_no_headers(
    serve: Serve, store: CountingStore
) -> None:
    client = serve(lambda session, env: "plain page")
    token = start(serve(view_actions))
    store.reset()
    response = get(client, "/", token)
    assert response.json() == "plain page"
    assert store.calls == {}
    assert "set-cookie" not in response.headers
    assert "vary" not in response.headers


def test_first_touch_loads_exactly_once_and_reads_save_nothing(
    serve: Serve, store: CountingStore, clock: FakeClock
) -> None:
    client = serve(view_actions)
    token = start(client)
    store.reset()
    clock.advance(TOUCH - 1)
    response = get(client, "/read", token)
    assert response.json() == {"a": 1, "len": 2, "has": True}
    assert store.calls == {"load": 1}
    assert "set-cookie" not in response.headers
    assert response.headers["vary"] == "Cookie"


def test_change_is_saved_once_with_a_fresh_cookie(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    token = start(client)
    store.reset()
    response = get(client, "/flash", token)
    assert store.calls == {"load": 1, "save": 1}
    set_cookie = the_cookie(response)
    assert cookie_value(set_cookie) == token
    assert cookie_attributes(set_cookie)["max-age"] == str(IDLE)


def test_touch_not_save_once_touch_interval_passed(
    serve: Serve, store: CountingStore, clock: FakeClock
) -> None:
    client = serve(view_actions)
    token = start(client)
    clock.advance(TOUCH + 1)
    store.reset()
    response = get(client, "/read", token)
    assert response.json()["a"] == 1
    assert store.calls == {"load": 1, "touch": 1}
    set_cookie = the_cookie(response)
    assert cookie_value(set_cookie) == token
    assert cookie_attributes(set_cookie)["max-age"] == str(IDLE)
    entry = store.inner.load(hash_id(token))
    assert entry is not None
    assert entry.expires == clock.now + IDLE
    assert entry.last_seen == clock.now


def test_in_place_mutation_is_saved(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    token = start(client)
    store.reset()
    get(client, "/append", token)
    assert store.calls["save"] == 1
    assert get(client, "/dict", token).json()["data"]["cart"] == [1, 2, 3]


# -- empty sessions ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/read", "/dict", "/set-unset", "/pop"])
def test_empty_new_session_is_never_stored(serve: Serve, store: CountingStore, path: str) -> None:
    client = serve(view_actions)
    response = client.get(path)
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert store.calls["save"] == 0
    assert len(store.inner) == 0


def test_flash_alone_makes_the_session_stored(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    token = cookie_value(the_cookie(client.get("/flash")))
    assert len(store.inner) == 1
    assert get(client, "/pop", token).json()["flashes"] == [["info", "hello"]]
    # Popping the only flash empties the session: the record goes, the cookie is cleared.
    assert get(client, "/pop", token).json()["flashes"] == []
    assert len(store.inner) == 0


def test_csrf_token_alone_makes_the_session_stored(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    response = client.get("/csrf")
    token = cookie_value(the_cookie(response))
    assert len(store.inner) == 1
    assert get(client, "/csrf", token).json() == response.json()


# -- strict ids --------------------------------------------------------------------------


def test_unknown_well_formed_id_is_never_adopted(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    planted = "A" * 43
    response = get(client, "/read", planted)
    assert response.json() == {"a": None, "len": 0, "has": False}
    # The stale cookie is removed rather than kept around.
    assert cookie_attributes(the_cookie(response))["max-age"] == "0"
    issued = cookie_value(the_cookie(get(client, "/set", planted)))
    assert issued != planted
    assert store.inner.load(hash_id(planted)) is None
    assert store.inner.load(hash_id(issued)) is not None


@pytest.mark.parametrize(
    "token",
    ["short", "A" * 42, "A" * 44, "A" * 42 + "!", "A" * 42 + ".", "A" * 42 + "=", "A" * 200],
)
def test_malformed_id_never_reaches_the_store_and_is_logged(
    serve: Serve, store: CountingStore, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    client = serve(view_actions)
    with caplog.at_level(logging.WARNING, logger="websession.security"):
        response = get(client, "/read", token)
    assert response.json() == {"a": None, "len": 0, "has": False}
    assert store.calls["load"] == 0
    records = [r for r in caplog.records if r.name == "websession.security"]
    assert records
    assert records[0].levelno == logging.WARNING
    assert token not in caplog.text


# -- expiry ------------------------------------------------------------------------------


def test_idle_timeout_expires_the_session(
    serve: Serve, store: CountingStore, clock: FakeClock
) -> None:
    client = serve(view_actions)
    token = start(client)
    clock.advance(IDLE + 1)
    assert get(client, "/dict", token).json() == {"data": {}, "user": None, "new": True}
    new = cookie_value(the_cookie(get(client, "/set", token)))
    assert new != token
    # The expired record is not resurrected and goes with the next sweep.
    assert store.inner.load(hash_id(token)) is None
    assert store.inner.delete_expired() == 1
    assert len(store.inner) == 1


def test_activity_renews_the_idle_timeout(serve: Serve, clock: FakeClock) -> None:
    client = serve(view_actions)
    token = start(client)
    for _ in range(5):
        clock.advance(IDLE - 100)
        assert get(client, "/read", token).json()["a"] == 1


def test_absolute_timeout_caps_renewal(
    serve: Serve, store: CountingStore, clock: FakeClock
) -> None:
    client = serve(view_actions, absolute_timeout=3600)
    token = start(client)
    clock.advance(1000)
    assert cookie_attributes(the_cookie(get(client, "/read", token)))["max-age"] == str(IDLE)
    clock.advance(1000)
    assert cookie_attributes(the_cookie(get(client, "/read", token)))["max-age"] == "1600"
    clock.advance(1000)
    response = get(client, "/read", token)
    assert cookie_attributes(the_cookie(response))["max-age"] == "600"
    entry = store.inner.load(hash_id(token))
    assert entry is not None
    assert entry.expires == entry.created + 3600
    clock.advance(600)
    assert get(client, "/read", token).json()["a"] is None


def test_expired_record_seen_by_the_flow_is_deleted(serve: Serve, clock: FakeClock) -> None:
    # A store whose clock lags (or that does not filter expired rows) still
    # hands the entry over; the flow must refuse it and delete the record.
    lagging = CountingStore(MemoryStore(clock=FakeClock(clock.now)))
    client = serve(view_actions, store=lagging, absolute_timeout=3600)
    token = start(client)
    clock.advance(3601)
    lagging.reset()
    assert get(client, "/read", token).json()["a"] is None
    assert lagging.calls == {"load": 1, "delete": 1}
    assert len(lagging.inner) == 0


@pytest.mark.parametrize(("path", "seconds"), [("/remember", 600), ("/remember-td", 300)])
def test_set_expiry_sets_max_age_and_server_ttl(
    serve: Serve, store: CountingStore, clock: FakeClock, path: str, seconds: int
) -> None:
    client = serve(view_actions)
    token = start(client)
    response = get(client, path, token)
    assert cookie_attributes(the_cookie(response))["max-age"] == str(seconds)
    entry = store.inner.load(hash_id(token))
    assert entry is not None
    assert entry.expires == clock.now + seconds
    clock.advance(seconds + 1)
    assert get(client, "/read", token).json()["a"] is None


def test_set_expiry_none_gives_a_browser_session_cookie(
    serve: Serve, store: CountingStore, clock: FakeClock
) -> None:
    client = serve(view_actions)
    token = start(client)
    set_cookie = the_cookie(get(client, "/browser", token))
    attributes = cookie_attributes(set_cookie)
    assert "max-age" not in attributes
    assert "expires" not in attributes
    entry = store.inner.load(hash_id(token))
    assert entry is not None
    assert entry.expires == clock.now + IDLE
    # A touch renews the server TTL; the browser-session cookie needs no refresh.
    clock.advance(TOUCH + 1)
    store.reset()
    response = get(client, "/read", token)
    assert store.calls["touch"] == 1
    assert "set-cookie" not in response.headers


# -- identity ----------------------------------------------------------------------------


def test_login_rotates_the_id_and_keeps_the_data(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    old = start(client)
    response = get(client, "/login", old)
    csrf = response.json()
    assert csrf["before"] != csrf["after"]
    new = cookie_value(the_cookie(response))
    assert new != old
    assert store.inner.load(hash_id(old)) is None
    entry = store.inner.load(hash_id(new))
    assert entry is not None
    assert entry.user_id == "42"
    assert get(client, "/dict", new).json() == {
        "data": {"a": 1, "cart": [1, 2]},
        "user": "42",
        "new": False,
    }
    assert get(client, "/dict", old).json() == {"data": {}, "user": None, "new": True}


def test_logout_deletes_the_record_and_clears_the_cookie(
    serve: Serve, store: CountingStore
) -> None:
    client = serve(view_actions)
    token = start(client)
    token = cookie_value(the_cookie(get(client, "/login", token)))
    response = get(client, "/logout", token)
    set_cookie = the_cookie(response)
    assert cookie_value(set_cookie) == ""
    assert cookie_attributes(set_cookie)["max-age"] == "0"
    assert len(store.inner) == 0
    assert get(client, "/dict", token).json() == {"data": {}, "user": None, "new": True}


def test_flash_after_logout_arrives_in_a_fresh_session(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    old = start(client)
    response = get(client, "/logout-flash", old)
    new = cookie_value(the_cookie(response))
    assert new not in ("", old)
    assert store.inner.load(hash_id(old)) is None
    page = get(client, "/pop", new).json()
    assert page == {"flashes": [["message", "signed out"]], "data": {}}


def test_regenerate_rotates_the_id_only(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    old = start(client)
    new = cookie_value(the_cookie(get(client, "/regenerate", old)))
    assert new != old
    assert store.inner.load(hash_id(old)) is None
    assert get(client, "/dict", new).json() == {
        "data": {"a": 1, "cart": [1, 2]},
        "user": None,
        "new": False,
    }


# -- failures ----------------------------------------------------------------------------


def test_nothing_is_saved_on_a_5xx_response(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    token = start(client)
    store.reset()
    response = get(client, "/boom", token)
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert store.calls == {"load": 1}
    assert get(client, "/read", token).json()["a"] == 1


def test_nothing_is_created_on_a_5xx_response(serve: Serve, store: CountingStore) -> None:
    client = serve(view_actions)
    response = client.get("/boom")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert len(store.inner) == 0


@pytest.mark.parametrize("change", [True, False])
def test_session_deleted_meanwhile_is_never_resurrected(
    serve: Serve, store: CountingStore, clock: FakeClock, change: bool
) -> None:
    def view(session: Session, env: dict[str, Any]) -> Any:
        assert session["a"] == 1
        store.inner.delete(hash_id(session_token))  # e.g. "log out everywhere" elsewhere
        if change:
            session["a"] = 2
        return "done"

    session_token = start(serve(view_actions))
    clock.advance(TOUCH + 1)  # without a change, a touch is due
    response = get(serve(view), "/", session_token)
    assert response.status_code == 200
    assert cookie_attributes(the_cookie(response))["max-age"] == "0"
    assert len(store.inner) == 0


def test_empty_cookie_value_is_no_session_and_no_alarm(
    serve: Serve, store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(view_actions)
    with caplog.at_level(logging.WARNING, logger="websession.security"):
        response = client.get("/read", headers={"Cookie": "session="})
    assert response.json() == {"a": None, "len": 0, "has": False}
    assert "set-cookie" not in response.headers
    assert store.calls == {}
    assert not caplog.records


def test_cookie_store_login_and_logout(serve: Serve, clock: FakeClock) -> None:
    client = serve(view_actions, store=CookieStore(["a-secret-long-enough-for-tests"], clock=clock))
    first = start(client)
    after_login = cookie_value(the_cookie(get(client, "/login", first)))
    assert after_login != first
    assert get(client, "/dict", after_login).json()["user"] == "42"
    response = get(client, "/logout-flash", after_login)
    fresh = cookie_value(the_cookie(response))
    assert get(client, "/pop", fresh).json() == {"flashes": [["message", "signed out"]], "data": {}}
    cleared = get(client, "/logout", after_login)
    assert cookie_attributes(the_cookie(cleared))["max-age"] == "0"
