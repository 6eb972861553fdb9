"""Pyramid integration: ISession on websession, CSRF through Pyramid's policy, ini settings.

Driven through WebTest (a cookie-keeping client over the WSGI app) and, once,
through a real wsgiref server on a loopback port.
"""

from __future__ import annotations

import configparser
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from pyramid.config import Configurator
from pyramid.csrf import LegacySessionCSRFStoragePolicy, check_csrf_token
from pyramid.interfaces import ISession
from pyramid.response import Response
from webtest import TestApp
from zope.interface.verify import verifyObject

from helpers import cookie_attributes, count_of, csrf_of, load_example
from websession import SessionConfigError, StoreUnavailable
from websession.ids import hash_id
from websession.integrations.pyramid import (
    PyramidSession,
    session_factory,
    session_factory_from_settings,
)
from websession.stores import MemoryStore, SQLiteStore
from websession.stores.base import Entry, Meta

View = Callable[[Any], Any]


def make_app(
    views: dict[str, View],
    factory: Any = None,
    *,
    include: dict[str, str] | None = None,
    csrf_policy: bool = False,
) -> TestApp:
    """A Pyramid app with one route per view (``/name``), its session from ``factory``
    or, with ``include``, from those settings through ``config.include``."""
    with Configurator(settings=include or {}) as config:
        if include is not None:
            config.include("websession.integrations.pyramid")
        else:
            config.set_session_factory(factory)
        if csrf_policy:
            config.set_csrf_storage_policy(LegacySessionCSRFStoragePolicy())
        for name, view in views.items():
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, renderer="json")
        wsgi = config.make_wsgi_app()
    return TestApp(wsgi)


def session_cookie(response: Any, name: str = "session") -> str:
    (header,) = [v for k, v in response.headerlist if k == "Set-Cookie" and v.startswith(name)]
    return str(header)


@pytest.fixture
def store() -> MemoryStore:
    """A memory store on the real clock, like the factories' default one."""
    return MemoryStore()


# -- the example app ---------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_example("pyramid_app", tmp_path, monkeypatch)


def test_example_counter_persists_in_sqlite(example: ModuleType, tmp_path: Path) -> None:
    browser = TestApp(example.app)
    first = browser.get("/")
    assert count_of(first.text) == 1
    attrs = cookie_attributes(session_cookie(first))
    assert "httponly" in attrs
    assert attrs["max-age"] == "1800"  # session.idle_timeout from the settings
    assert "Cookie" in first.headers["Vary"]
    assert [count_of(browser.get("/").text) for _ in range(3)] == [2, 3, 4]
    assert (tmp_path / "sessions.db").exists()
    assert count_of(TestApp(example.app).get("/").text) == 1  # another visitor


def test_example_login_and_logout_with_flash_queues(example: ModuleType) -> None:
    browser = TestApp(example.app)
    page = browser.get("/").text
    anonymous = browser.cookies["session"]

    browser.post("/login", {"user": "alice", "csrf_token": "forged"}, status=400)
    response = browser.post(
        "/login", {"user": "alice", "csrf_token": csrf_of(page, "csrf_token")}, status=303
    )
    assert browser.cookies["session"] != anonymous  # rotated on login
    page = response.follow().text
    assert "<em>Welcome, alice.</em>" in page
    assert "Logged in as alice." in page
    assert count_of(page) == 2  # the data survived the login
    assert "Welcome" not in browser.get("/").text  # a flash is shown once

    page = browser.get("/").text
    browser.post("/logout", {"csrf_token": csrf_of(page, "csrf_token")}, status=303)
    page = browser.get("/").text
    assert "<strong>You are logged out.</strong>" in page  # the "warn" queue
    assert count_of(page) == 1

    stale = TestApp(example.app)
    stale.set_cookie("session", anonymous)
    assert count_of(stale.get("/").text) == 1  # the pre-login id is dead


def test_ini_file_settings_configure_the_example(example: ModuleType, tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text(
        "[app:main]\n"
        "session.url = sqlite:///%(here)s/from-ini.db\n"
        "session.cookie_name = pyramid_sid\n"
        "session.idle_timeout = 900\n"
        "session.cookie_samesite = strict\n"
    )
    parser = configparser.ConfigParser(defaults={"here": str(tmp_path)})
    parser.read(ini)
    settings = {k: v for k, v in parser.items("app:main") if k.startswith("session.")}
    browser = TestApp(example.main({}, **settings))
    response = browser.get("/")
    attrs = cookie_attributes(session_cookie(response, "pyramid_sid"))
    assert (attrs["max-age"], attrs["samesite"]) == ("900", "Strict")
    assert count_of(browser.get("/").text) == 2
    assert (tmp_path / "from-ini.db").exists()


def test_example_runs_under_a_real_wsgi_server(example: ModuleType) -> None:
    with serve(example.app) as base_url, httpx.Client(base_url=base_url) as client:
        assert [count_of(client.get("/").text) for _ in range(3)] == [1, 2, 3]
        page = client.get("/").text
        response = client.post(
            "/login", data={"user": "bob", "csrf_token": csrf_of(page, "csrf_token")}
        )
        assert response.status_code == 303
        assert "Logged in as bob." in client.get("/").text


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class serve:
    """A wsgiref server on a free loopback port, in a thread, for one ``with`` block."""

    def __init__(self, app: Any) -> None:
        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# -- ISession ----------------------------------------------------------------------


def test_session_provides_pyramid_isession(store: MemoryStore) -> None:
    seen: list[Any] = []

    def view(request: Any) -> dict[str, Any]:
        seen.append(request.session)
        return {}

    make_app({"v": view}, session_factory(store)).get("/v")
    (session,) = seen
    assert isinstance(session, PyramidSession)
    assert verifyObject(ISession, session)


def test_counter_created_and_new(memory_store: MemoryStore, clock: Any) -> None:
    def count(request: Any) -> dict[str, Any]:
        session = request.session
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"], "new": session.new, "created": session.created}

    browser = make_app({"count": count}, session_factory(memory_store, clock=clock))
    first = browser.get("/count").json
    assert first == {"n": 1, "new": True, "created": clock.now}
    clock.advance(5)
    second = browser.get("/count").json
    assert second == {"n": 2, "new": False, "created": clock.now - 5}
    assert len(memory_store) == 1


def test_flash_queues_peek_pop_and_duplicates(store: MemoryStore) -> None:
    def push(request: Any) -> dict[str, Any]:
        session = request.session
        session.flash("saved")
        session.flash("saved", allow_duplicate=False)  # already queued: skipped
        session.flash("saved")  # duplicates are allowed by default
        session.flash("disk almost full", "warn")
        session.flash("disk almost full", "warn", allow_duplicate=False)
        return {}

    def show(request: Any) -> dict[str, Any]:
        session = request.session
        return {
            "peek_warn": session.peek_flash("warn"),
            "pop_default": session.pop_flash(),
            "pop_again": session.pop_flash(),
            "pop_warn": session.pop_flash("warn"),
        }

    browser = make_app({"push": push, "show": show}, session_factory(store))
    browser.get("/push")
    assert browser.get("/show").json == {
        "peek_warn": ["disk almost full"],
        "pop_default": ["saved", "saved"],
        "pop_again": [],
        "pop_warn": ["disk almost full"],
    }
    assert browser.get("/show").json["peek_warn"] == []  # popped flashes stay gone


def test_flash_queue_is_the_core_category(store: MemoryStore) -> None:
    def push(request: Any) -> dict[str, Any]:
        request.session.flash("hello", "info")
        return {}

    def core(request: Any) -> dict[str, Any]:
        return {"flashes": request.session.pop_flashes()}

    browser = make_app({"push": push, "core": core}, session_factory(store))
    browser.get("/push")
    assert browser.get("/core").json == {"flashes": [["info", "hello"]]}


def test_invalidate_destroys_the_stored_session(store: MemoryStore) -> None:
    def put(request: Any) -> dict[str, Any]:
        request.session["secret"] = "s3"
        return {}

    def invalidate(request: Any) -> dict[str, Any]:
        session = request.session
        session.invalidate()
        gone = "secret" not in session
        session["after"] = True  # goes to a brand-new session
        return {"gone": gone}

    def show(request: Any) -> dict[str, Any]:
        return {"data": dict(request.session)}

    factory = session_factory(store)
    browser = make_app({"put": put, "invalidate": invalidate, "show": show}, factory)
    browser.get("/put")
    before = browser.cookies["session"]
    assert browser.get("/invalidate").json == {"gone": True}
    assert browser.cookies["session"] != before
    assert browser.get("/show").json == {"data": {"after": True}}
    assert store.load(hash_id(before)) is None
    stale = make_app({"show": show}, factory)
    stale.set_cookie("session", before)
    assert stale.get("/show").json == {"data": {}}


def test_invalidate_of_everything_clears_the_cookie(store: MemoryStore) -> None:
    def put(request: Any) -> dict[str, Any]:
        request.session["x"] = 1
        return {}

    def invalidate(request: Any) -> dict[str, Any]:
        request.session.invalidate()
        return {}

    browser = make_app({"put": put, "invalidate": invalidate}, session_factory(store))
    browser.get("/put")
    response = browser.get("/invalidate")
    assert cookie_attributes(session_cookie(response))["max-age"] == "0"
    assert len(store) == 0


def test_changed_saves_an_in_place_mutation(store: MemoryStore) -> None:
    def start(request: Any) -> dict[str, Any]:
        request.session["prefs"] = {"theme": "light"}
        return {}

    def mutate(request: Any) -> dict[str, Any]:
        # Reaching the value through the underlying dict hides it from websession's
        # own detection; changed() is Pyramid's way to say so.
        values = list(request.session.values())
        values[0]["theme"] = "dark"
        request.session.changed()
        return {}

    def show(request: Any) -> dict[str, Any]:
        return dict(request.session)

    browser = make_app({"start": start, "mutate": mutate, "show": show}, session_factory(store))
    browser.get("/start")
    browser.get("/mutate")
    assert browser.get("/show").json == {"prefs": {"theme": "dark"}}


# -- CSRF --------------------------------------------------------------------------


def test_csrf_through_the_legacy_session_policy(store: MemoryStore) -> None:
    def token(request: Any) -> dict[str, Any]:
        return {"token": request.session.get_csrf_token()}

    def rotate(request: Any) -> dict[str, Any]:
        return {"token": request.session.new_csrf_token()}

    def guarded(request: Any) -> dict[str, Any]:
        check_csrf_token(request)  # raises BadCSRFToken (a 400) on a mismatch
        return {"ok": True}

    browser = make_app(
        {"token": token, "rotate": rotate, "guarded": guarded},
        session_factory(store),
        csrf_policy=True,
    )
    first = browser.get("/token").json["token"]
    assert browser.get("/token").json["token"] == first  # stable across requests

    browser.post("/guarded", headers={"X-CSRF-Token": "wrong"}, status=400)
    browser.post("/guarded", status=400)
    assert browser.post("/guarded", headers={"X-CSRF-Token": first}).json == {"ok": True}
    assert browser.post("/guarded", {"csrf_token": first}).json == {"ok": True}

    rotated = browser.get("/rotate").json["token"]
    assert rotated != first
    browser.post("/guarded", headers={"X-CSRF-Token": first}, status=400)
    assert browser.post("/guarded", headers={"X-CSRF-Token": rotated}).json == {"ok": True}

    stranger = make_app({"guarded": guarded}, session_factory(store), csrf_policy=True)
    stranger.post("/guarded", headers={"X-CSRF-Token": first}, status=400)


def test_login_rotates_id_and_csrf_token(store: MemoryStore) -> None:
    def token(request: Any) -> dict[str, Any]:
        return {"token": request.session.get_csrf_token(), "user": request.session.user_id}

    def login(request: Any) -> dict[str, Any]:
        request.session.login("carol")
        return {}

    browser = make_app({"token": token, "login": login}, session_factory(store))
    before = browser.get("/token").json["token"]
    cookie = browser.cookies["session"]
    browser.get("/login")
    after = browser.get("/token").json
    assert after["user"] == "carol"
    assert after["token"] != before
    assert browser.cookies["session"] != cookie


# -- configuration -----------------------------------------------------------------


def test_settings_drive_the_factory(tmp_path: Path) -> None:
    settings = {
        "session.url": f"sqlite:///{tmp_path / 'settings.db'}",
        "session.cookie_name": "sid",
        "session.idle_timeout": "600",
        "session.cookie_secure": "true",
        "other.setting": "ignored",
    }

    def put(request: Any) -> dict[str, Any]:
        request.session["k"] = "v"
        return {}

    browser = make_app({"put": put}, include=settings)
    response = browser.get("/put")
    attrs = cookie_attributes(session_cookie(response, "sid"))
    assert attrs["max-age"] == "600"
    assert "secure" in attrs
    assert (tmp_path / "settings.db").exists()

    factory = session_factory_from_settings(settings)
    assert isinstance(factory.store, SQLiteStore)
    assert (factory.config.cookie_name, factory.config.idle_timeout) == ("sid", 600.0)


def test_unknown_session_setting_is_refused(tmp_path: Path) -> None:
    settings = {"session.url": "memory://", "session.cookie_nmae": "oops"}
    with pytest.raises(SessionConfigError, match=r"session\.cookie_nmae"):
        make_app({}, include=settings)
    with pytest.raises(SessionConfigError, match=r"session\.cookie_nmae"):
        session_factory_from_settings(settings)


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(SessionConfigError, match="idle_timout"):
        session_factory("memory://", idle_timout=5)  # type: ignore[call-arg]


def test_sqlite_store_keeps_the_data_server_side(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sessions.db")

    def put(request: Any) -> dict[str, Any]:
        request.session["basket"] = ["apple", "pear"]
        request.session.login(7)
        return {}

    def show(request: Any) -> dict[str, Any]:
        return {"basket": request.session["basket"], "user": request.session.user_id}

    browser = make_app({"put": put, "show": show}, session_factory(store))
    browser.get("/put")
    token = browser.cookies["session"]
    assert "apple" not in token  # only the id travels
    entry = store.load(hash_id(token))
    assert entry is not None
    assert entry.user_id == "7"
    assert b"apple" in entry.payload
    assert browser.get("/show").json == {"basket": ["apple", "pear"], "user": "7"}


def test_untouched_session_sends_no_cookie_and_no_vary(store: MemoryStore) -> None:
    def plain(request: Any) -> dict[str, Any]:
        return {"ok": True}

    def reader(request: Any) -> dict[str, Any]:
        return {"x": request.session.get("x")}

    browser = make_app({"plain": plain, "reader": reader}, session_factory(store))
    response = browser.get("/plain")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    response = browser.get("/reader")
    assert "Set-Cookie" not in response.headers  # read-only and empty: nothing stored
    assert response.headers["Vary"] == "Cookie"


def test_server_error_saves_nothing(store: MemoryStore) -> None:
    def broken(request: Any) -> Response:
        request.session["half"] = "done"
        return Response("oops", status=500)

    browser = make_app({"broken": broken}, session_factory(store))
    response = browser.get("/broken", status=500)
    assert "Set-Cookie" not in response.headers
    assert len(store) == 0


def test_header_transport(store: MemoryStore) -> None:
    def count(request: Any) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    browser = make_app({"count": count}, session_factory(store, transport="header"))
    first = browser.get("/count")
    token = first.headers["X-Session-Token"]
    assert "Set-Cookie" not in first.headers
    assert first.headers["Vary"] == "X-Session-Token"
    assert browser.get("/count", headers={"X-Session-Token": token}).json == {"n": 2}


# -- store failures ----------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store that fails like an unreachable server while ``down`` is set."""

    down = False

    def load(self, key: str) -> Entry | None:
        if self.down:
            raise StoreUnavailable("flaky store is down")
        return super().load(key)

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        if self.down:
            raise StoreUnavailable("flaky store is down")
        return super().save(key, payload, expected_version=expected_version, ttl=ttl, meta=meta)


@pytest.fixture
def flaky() -> FlakyStore:
    return FlakyStore()


def test_store_down_at_load_answers_503(flaky: FlakyStore) -> None:
    def count(request: Any) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    # include() adds the 503 exception view; the factory set after it wins.
    with Configurator() as config:
        config.include("websession.integrations.pyramid")
        config.set_session_factory(session_factory(flaky))
        config.add_route("count", "/count")
        config.add_view(count, route_name="count", renderer="json")
        browser = TestApp(config.make_wsgi_app())
    browser.get("/count")
    flaky.down = True
    response = browser.get("/count", status=503)
    assert response.headers["Retry-After"] == "5"
    assert "Set-Cookie" not in response.headers
    flaky.down = False
    assert browser.get("/count").json == {"n": 2}  # nothing was lost


def test_store_down_at_save_answers_503(flaky: FlakyStore) -> None:
    def put(request: Any) -> dict[str, Any]:
        request.session["k"] = "v"
        return {"saved": "maybe"}

    browser = make_app({"put": put}, session_factory(flaky))
    flaky.down = True
    response = browser.get("/put", status=503)
    assert b"session store" in response.body
    assert "Set-Cookie" not in response.headers
    assert len(flaky) == 0


def test_fail_open_serves_an_unsaved_session(flaky: FlakyStore) -> None:
    def count(request: Any) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    browser = make_app({"count": count}, session_factory(flaky, on_store_error="fail_open"))
    browser.get("/count")
    flaky.down = True
    assert browser.get("/count").json == {"n": 1}  # an empty, unsaved session
    flaky.down = False
    assert browser.get("/count").json == {"n": 2}
