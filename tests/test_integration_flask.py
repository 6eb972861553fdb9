"""websession.integrations.flask under Flask's own test client.

Covers what a Flask app relies on (``flask.session``, ``permanent``, flashes,
``session_transaction``, the ``SESSION_COOKIE_*`` settings), the signed-cookie
drop-in for Flask's default, server-side stores (memory, SQLite, Redis) and
the migration of Flask's own signed cookies. Several tests are Flask's own
session tests (tests/test_basic.py, tests/test_testing.py of Flask 3.1),
rewritten for this interface; where websession deliberately differs the test
says so.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import pytest
from flask.globals import request_ctx
from flask.testing import FlaskClient
from markupsafe import Markup

from helpers import (
    FakeClock,
    SlowAsyncStore,
    cookie_attributes,
    count_of,
    csrf_of,
    load_example,
)
from services import REDIS_URL, redis_scope, requires, run_prefix
from websession import SessionConfig
from websession.errors import SessionConfigError, SessionStateError, StoreUnavailable
from websession.identity import TooManySessions, UserIndexMissing
from websession.ids import handle_of, hash_id, is_valid_id
from websession.integrations.flask import FlaskSession, SessionInterface, current_session, login
from websession.integrations.flask import logout as ws_logout
from websession.stores import MemoryStore, SQLiteStore
from websession.stores.base import Entry, Meta

SECRET = "flask-test-secret-key-that-is-long-enough"
RUN_PREFIX = run_prefix("flask")


def make_app(interface: SessionInterface, **config: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.update(config)
    app.session_interface = interface
    return app


def set_cookie_header(response: Any) -> str:
    (value,) = response.headers.getlist("Set-Cookie")
    return str(value)


def session_cookie(client: FlaskClient, name: str = "session") -> str | None:
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


# -- stores ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis server the tests may write to; every key starts with this run's prefix."""
    with redis_scope(RUN_PREFIX):
        yield REDIS_URL


BACKENDS = ["cookie", "memory", "sqlite", "redis"]
SERVER_BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The store for a backend name: None (signed cookies), or a server-side store."""
    name = request.param
    if name == "cookie":
        yield None
    elif name == "memory":
        yield MemoryStore()
    elif name == "sqlite":
        sqlite = SQLiteStore(tmp_path / "sessions.db")
        yield sqlite
        sqlite.close()
    else:
        url = request.getfixturevalue("redis_url")
        from websession.stores import RedisStore

        store = RedisStore(url, prefix=f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}:")
        yield store
        store.close()


def counter_app(store: Any) -> flask.Flask:
    app = make_app(SessionInterface(store))

    @app.get("/inc")
    def inc() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    return app


# -- the basics, on every backend -----------------------------------------------------------


@pytest.mark.parametrize("backend_store", BACKENDS, indirect=True)
def test_counter_survives_requests_and_is_per_visitor(backend_store: Any) -> None:
    app = counter_app(backend_store)
    client = app.test_client()
    assert [client.get("/inc").text for _ in range(3)] == ["1", "2", "3"]
    assert app.test_client().get("/inc").text == "1"
    token = session_cookie(client)
    assert token is not None
    if backend_store is not None:
        # Server-side: the cookie is an opaque id, the data is in the store.
        assert is_valid_id(token)


@pytest.mark.parametrize("backend_store", BACKENDS, indirect=True)
def test_value_types_flask_round_trips_survive_a_request(backend_store: Any) -> None:
    """Flask's test_session_special_types, read back in a second request (a real load)."""
    now = datetime.now(UTC).replace(microsecond=0)
    the_uuid = uuid.uuid4()
    app = make_app(SessionInterface(backend_store))

    @app.get("/set")
    def set_values() -> tuple[str, int]:
        flask.session["t"] = (1, 2, 3)
        flask.session["b"] = b"\xff"
        flask.session["m"] = Markup("<html>")
        flask.session["u"] = the_uuid
        flask.session["d"] = now
        flask.session["t_tag"] = {" t": "not-a-tuple"}
        flask.session["di_t_tag"] = {" t__": "not-a-tuple"}
        flask.session["di_tag"] = {" di": "not-a-dict"}
        flask.session["nested"] = {"when": [now, (b"x", the_uuid)]}
        return "", 204

    @app.get("/read")
    def read() -> str:
        return "ok"

    client = app.test_client()
    client.get("/set")
    with client:
        client.get("/read")
        s = request_ctx._session
        assert s is not None
        assert s["t"] == (1, 2, 3)
        assert type(s["b"]) is bytes
        assert s["b"] == b"\xff"
        assert type(s["m"]) is Markup
        assert s["m"] == Markup("<html>")
        assert s["u"] == the_uuid
        assert s["d"] == now
        assert s["t_tag"] == {" t": "not-a-tuple"}
        assert s["di_t_tag"] == {" t__": "not-a-tuple"}
        assert s["di_tag"] == {" di": "not-a-dict"}
        assert s["nested"] == {"when": [now, (b"x", the_uuid)]}


def flash_app(store: Any) -> flask.Flask:
    app = make_app(SessionInterface(store))

    @app.get("/")
    def index() -> str:
        flask.flash("Hello World")
        flask.flash("Hello World", "error")
        flask.flash(Markup("<em>Testing</em>"), "warning")
        return ""

    @app.get("/all")
    def all_messages() -> Any:
        return repr(flask.get_flashed_messages(with_categories=True))

    @app.get("/filter")
    def filtered() -> Any:
        first = flask.get_flashed_messages(category_filter=["message", "warning"])
        # Flask caches the popped list for the request: a second call sees the same.
        again = flask.get_flashed_messages(with_categories=True, category_filter=["error"])
        return repr((first, again))

    return app


@pytest.mark.parametrize("backend_store", BACKENDS, indirect=True)
def test_flash_and_get_flashed_messages_with_categories(backend_store: Any) -> None:
    """Flask's test_extended_flashing: categories, filters, Markup, shown once."""
    app = flash_app(backend_store)
    client = app.test_client()
    client.get("/")
    assert client.get("/all").text == repr(
        [
            ("message", "Hello World"),
            ("error", "Hello World"),
            ("warning", Markup("<em>Testing</em>")),
        ]
    )
    assert client.get("/all").text == "[]"

    client = app.test_client()
    client.get("/")
    assert client.get("/filter").text == repr(
        (["Hello World", Markup("<em>Testing</em>")], [("error", "Hello World")])
    )
    assert client.get("/all").text == "[]"  # filtering still consumed them all, as in Flask


@pytest.mark.parametrize("backend_store", BACKENDS, indirect=True)
def test_session_transaction_reads_and_writes_the_clients_session(backend_store: Any) -> None:
    """Flask's test_session_transactions."""
    app = make_app(SessionInterface(backend_store))

    @app.get("/")
    def index() -> str:
        return str(flask.session["foo"])

    client = app.test_client()
    with client:
        with client.session_transaction() as sess:
            assert len(sess) == 0
            sess["foo"] = [42]
            assert len(sess) == 1
        assert client.get("/").text == "[42]"
        with client.session_transaction() as sess:
            assert len(sess) == 1
            assert sess["foo"] == [42]
            sess.permanent = True
            flask_session = sess
        assert isinstance(flask_session, FlaskSession)
    response = client.get("/")
    assert response.text == "[42]"


@pytest.mark.parametrize("backend_store", SERVER_BACKENDS, indirect=True)
def test_login_helper_rotates_the_id_and_logout_destroys_it(backend_store: Any) -> None:
    app = make_app(SessionInterface(backend_store))

    @app.post("/login")
    def do_login() -> str:
        login(flask.request.form["user"])
        return "in"

    @app.post("/logout")
    def do_logout() -> str:
        ws_logout()
        flask.flash("bye")
        return "out"

    @app.get("/")
    def index() -> Any:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return {
            "n": flask.session["n"],
            "user": current_session().user_id,
            "flashes": flask.get_flashed_messages(),
        }

    client = app.test_client()
    client.get("/")
    before = session_cookie(client)
    client.post("/login", data={"user": "alice"})
    after = session_cookie(client)
    assert after is not None
    assert after != before
    assert client.get("/").json == {"n": 2, "user": "alice", "flashes": []}

    # The pre-login id was deleted at login: whoever planted it gets nothing.
    planted = app.test_client()
    planted.set_cookie("session", before or "")
    assert planted.get("/").json == {"n": 1, "user": None, "flashes": []}

    client.post("/logout")
    assert client.get("/").json == {"n": 1, "user": None, "flashes": ["bye"]}
    old = app.test_client()
    old.set_cookie("session", after)
    assert old.get("/").json == {"n": 1, "user": None, "flashes": []}


def test_concurrent_flashes_on_one_session_merge() -> None:
    """Two requests that each flash, saved one after the other, lose neither message."""
    interface = SessionInterface(MemoryStore())
    app = make_app(interface)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"] = "alice"
    cookie = f"session={session_cookie(client)}"

    def open_request() -> tuple[Any, FlaskSession]:
        ctx = app.test_request_context("/", headers={"Cookie": cookie})
        ctx.push()
        session = interface.open_session(app, ctx.request)
        assert session is not None
        ctx.pop()
        return ctx, session

    (ctx_a, first), (ctx_b, second) = open_request(), open_request()
    for ctx, session, message in ((ctx_a, first, "from A"), (ctx_b, second, "from B")):
        with ctx:
            assert session["user"] == "alice"
            session["_flashes"] = [*session.get("_flashes", []), ("message", message)]
    for ctx, session in ((ctx_a, first), (ctx_b, second)):
        with ctx:
            interface.save_session(app, session, app.response_class())

    @app.get("/")
    def index() -> Any:
        return flask.get_flashed_messages()

    assert client.get("/").json == ["from A", "from B"]


# -- Flask's own session tests, rewritten ------------------------------------------------------


@pytest.fixture
def app() -> flask.Flask:
    return make_app(SessionInterface(MemoryStore()))


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return app.test_client()


def test_session_accessed_and_vary(app: flask.Flask, client: FlaskClient) -> None:
    @app.post("/")
    def do_set() -> str:
        flask.session["value"] = flask.request.form["value"]
        return "value set"

    @app.get("/")
    def do_get() -> str:
        return str(flask.session.get("value", "None"))

    @app.get("/nothing")
    def do_nothing() -> str:
        return ""

    def session_flags() -> tuple[bool, bool]:
        session = request_ctx._session
        assert session is not None
        return session.accessed, session.modified

    with client:
        rv = client.get("/nothing")
        assert "cookie" not in rv.vary
        assert session_flags() == (False, False)
    with client:
        rv = client.post(data={"value": "42"})
        assert rv.text == "value set"
        assert "cookie" in rv.vary
        assert session_flags() == (True, True)
    with client:
        rv = client.get()
        assert rv.text == "42"
        assert "cookie" in rv.vary
        assert session_flags() == (True, False)
    rv = client.get("/nothing")
    assert "cookie" not in rv.vary
    assert "Set-Cookie" not in rv.headers


def test_new_is_true_until_the_session_is_stored(app: flask.Flask, client: FlaskClient) -> None:
    @app.get("/")
    def index() -> str:
        was_new = flask.session.new
        flask.session["a"] = 1
        return str(was_new)

    assert [client.get("/").text for _ in range(2)] == ["True", "False"]


def test_session_vary_header_is_merged(app: flask.Flask, client: FlaskClient) -> None:
    @app.get("/set")
    def set_session() -> str:
        flask.session["test"] = "test"
        return ""

    @app.get("/clear")
    def clear() -> str:
        flask.session.clear()
        return ""

    @app.get("/vary-cookie-header-set")
    def vary_cookie_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.add("Cookie")
        flask.session["test"] = "test"
        return response

    @app.get("/vary-header-set")
    def vary_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        flask.session["test"] = "test"
        return response

    def expect(path: str, value: str | None = "Cookie") -> None:
        rv = client.get(path)
        if value is None:
            assert "Vary" not in rv.headers
        else:
            assert rv.headers.getlist("Vary") == [value]

    expect("/set")
    expect("/clear")
    expect("/vary-cookie-header-set")
    expect("/vary-header-set", "Accept-Encoding, Accept-Language, Cookie")


def test_session_stored_last(app: flask.Flask, client: FlaskClient) -> None:
    @app.after_request
    def modify_session(response: flask.Response) -> flask.Response:
        flask.session["foo"] = 42
        return response

    @app.get("/")
    def dump() -> str:
        return repr(flask.session.get("foo"))

    assert client.get("/").text == "None"
    assert client.get("/").text == "42"


def test_session_expiration_uses_max_age(app: flask.Flask, client: FlaskClient) -> None:
    """Flask's test_session_expiration; websession sends Max-Age where Flask sends Expires."""
    app.permanent_session_lifetime = timedelta(hours=2)
    permanent = True

    @app.get("/")
    def index() -> str:
        flask.session["test"] = 42
        flask.session.permanent = permanent
        return ""

    @app.get("/test")
    def test() -> str:
        return str(flask.session.permanent)

    attrs = cookie_attributes(set_cookie_header(client.get("/")))
    assert attrs["max-age"] == str(2 * 3600)
    assert client.get("/test").text == "True"

    permanent = False
    attrs = cookie_attributes(set_cookie_header(client.get("/")))
    assert "max-age" not in attrs
    assert "expires" not in attrs
    assert client.get("/test").text == "False"


def test_new_sessions_are_browser_session_cookies(client: FlaskClient, app: flask.Flask) -> None:
    @app.get("/")
    def index() -> str:
        flask.session["x"] = 1
        return str(flask.session.permanent)

    response = client.get("/")
    assert response.text == "False"
    assert "max-age" not in cookie_attributes(set_cookie_header(response))


def test_flashes_in_one_request(app: flask.Flask) -> None:
    """Flask's test_flashes."""
    with app.test_request_context():
        assert not flask.session.modified
        flask.flash("Zap")
        flask.session.modified = False
        flask.flash("Zip")
        assert flask.session.modified
        assert list(flask.get_flashed_messages()) == ["Zap", "Zip"]


def test_old_style_setdefault_append_flash_still_works(
    app: flask.Flask, client: FlaskClient
) -> None:
    @app.get("/")
    def index() -> str:
        flask.session.setdefault("_flashes", []).append(("info", "appended"))
        return ""

    @app.get("/show")
    def show() -> Any:
        return flask.get_flashed_messages(with_categories=True)

    client.get("/")
    assert client.get("/show").json == [["info", "appended"]]


def test_redirect_session(app: flask.Flask, client: FlaskClient) -> None:
    """Flask's test_redirect_session."""

    @app.get("/redirect")
    def index() -> Any:
        flask.session["redirect"] = True
        return flask.redirect("/target")

    @app.get("/target")
    def target() -> str:
        flask.session["target"] = True
        return ""

    with client:
        client.get("/redirect", follow_redirects=True)
        assert flask.session["redirect"] is True
        assert flask.session["target"] is True


def test_session_clear_removes_the_cookie(app: flask.Flask, client: FlaskClient) -> None:
    @app.get("/set")
    def set_value() -> str:
        flask.session["a"] = 1
        flask.flash("pending")
        flask.session.permanent = True
        return ""

    @app.get("/clear")
    def clear() -> str:
        flask.session.clear()
        return repr((dict(flask.session), flask.session.permanent, "_flashes" in flask.session))

    client.get("/set")
    response = client.get("/clear")
    assert response.text == repr(({}, False, False))
    assert "Max-Age=0" in set_cookie_header(response)
    assert session_cookie(client) is None


def test_session_settings_shape_the_cookie(app: flask.Flask, client: FlaskClient) -> None:
    """Flask's test_session_using_session_settings."""
    app.config.update(
        SERVER_NAME="www.example.com:8080",
        APPLICATION_ROOT="/test",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_PARTITIONED=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
    )

    @app.get("/")
    def index() -> str:
        flask.session["testing"] = 42
        return "Hello World"

    @app.get("/clear")
    def clear() -> str:
        flask.session.pop("testing", None)
        return "Goodbye World"

    for path in ("/", "/clear"):
        cookie = set_cookie_header(client.get(path, "http://www.example.com:8080/test/"))
        attrs = cookie_attributes(cookie)
        assert attrs["domain"] == "example.com"  # as Werkzeug renders ".example.com"
        assert attrs["path"] == "/"
        assert "secure" in attrs
        assert "httponly" not in attrs
        assert attrs["samesite"] == "Lax"
        assert "partitioned" in attrs
    assert cookie.startswith("session=;")


def test_cookie_name_and_application_root_path(app: flask.Flask, client: FlaskClient) -> None:
    """Flask's test_session_path, plus SESSION_COOKIE_NAME."""
    app.config.update(APPLICATION_ROOT="/foo", SESSION_COOKIE_NAME="sid")

    @app.get("/")
    def index() -> str:
        flask.session["testing"] = 42
        return "Hello World"

    cookie = set_cookie_header(client.get("/", "http://example.com:8080/foo"))
    assert cookie.startswith("sid=")
    assert cookie_attributes(cookie)["path"] == "/foo"

    # A __Host- cookie must have Path=/; Flask would send one that browsers drop,
    # websession refuses the combination with a message naming it.
    app.config.update(SESSION_COOKIE_NAME="__Host-sid")
    with pytest.raises(SessionConfigError, match="__Host-"):
        client.get("/", "http://example.com:8080/foo")


def test_samesite_setting(app: flask.Flask, client: FlaskClient) -> None:
    """Flask's test_session_using_samesite_attribute; settings are re-read when they change.

    Deliberate difference: Flask's default ``SESSION_COOKIE_SAMESITE = None`` keeps
    websession's ``SameSite=Lax`` (browsers' own default); ``cookie_samesite=None``
    as a keyword drops the attribute.
    """

    @app.get("/")
    def index() -> str:
        # A changed value: websession sets the cookie only when there is something to save.
        flask.session["testing"] = flask.session.get("testing", 0) + 1
        return "Hello World"

    app.config.update(SESSION_COOKIE_SAMESITE="invalid")
    with pytest.raises(ValueError, match="cookie_samesite"):
        client.get("/")
    for value, expected in ((None, "Lax"), ("Strict", "Strict"), ("Lax", "Lax")):
        app.config.update(SESSION_COOKIE_SAMESITE=value)
        assert cookie_attributes(set_cookie_header(client.get("/")))["samesite"] == expected

    plain = make_app(SessionInterface(MemoryStore(), cookie_samesite=None))
    plain.add_url_rule("/", view_func=index)
    assert "samesite" not in cookie_attributes(set_cookie_header(plain.test_client().get("/")))


def test_secure_follows_https_and_partitioned_needs_it(app: flask.Flask) -> None:
    app.config.update(SESSION_COOKIE_PARTITIONED=True)

    @app.get("/")
    def index() -> str:
        flask.session["a"] = 1
        return ""

    plain = cookie_attributes(set_cookie_header(app.test_client().get("/")))
    assert "secure" not in plain
    assert "partitioned" not in plain
    tls = cookie_attributes(
        set_cookie_header(app.test_client().get("/", base_url="https://localhost"))
    )
    assert "secure" in tls
    assert "partitioned" in tls


@pytest.mark.parametrize("backend_store", ["cookie", "memory"], indirect=True)
def test_refresh_each_request(backend_store: Any) -> None:
    """Flask's test_session_cookie_setting: only permanent sessions are refreshed, if asked."""
    app = make_app(SessionInterface(backend_store))
    permanent = {"value": True}

    @app.get("/bump")
    def bump() -> str:
        rv = flask.session["foo"] = flask.session.get("foo", 0) + 1
        flask.session.permanent = permanent["value"]
        return str(rv)

    @app.get("/read")
    def read() -> str:
        return str(flask.session.get("foo", 0))

    def run(expect_header: bool) -> None:
        with app.test_client() as c:
            assert [c.get("/bump").text for _ in range(3)] == ["1", "2", "3"]
            rv = c.get("/read")
            assert ("Set-Cookie" in rv.headers) == expect_header
            assert rv.text == "3"
            if expect_header:
                # The absolute cap equals the lifetime and has run for a moment already.
                max_age = int(cookie_attributes(rv.headers["Set-Cookie"])["max-age"])
                assert 31 * 86400 - 2 <= max_age <= 31 * 86400

    for permanent["value"], refresh, expected in (
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, False),
    ):
        app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh
        run(expected)


def test_touch_interval_keyword_throttles_refresh() -> None:
    clock = FakeClock()
    app = make_app(SessionInterface(MemoryStore(clock=clock), clock=clock, touch_interval=60))

    @app.get("/login")
    def do_login() -> str:
        flask.session["user"] = "u"
        flask.session.permanent = True
        return ""

    @app.get("/read")
    def read() -> str:
        return str(flask.session.get("user"))

    client = app.test_client()
    client.get("/login")
    clock.advance(10)
    assert "Set-Cookie" not in client.get("/read").headers
    clock.advance(60)
    assert "Set-Cookie" in client.get("/read").headers


def test_lifetime_is_the_idle_timeout_and_the_absolute_cap() -> None:
    clock = FakeClock()
    app = counter_app(None)
    app.session_interface = SessionInterface(MemoryStore(clock=clock), clock=clock)
    app.permanent_session_lifetime = timedelta(days=2)
    client = app.test_client()
    assert client.get("/inc").text == "1"
    # Past websession's own 12-hour absolute cap: a 2-day Flask lifetime raises it...
    for expected in ("2", "3"):
        clock.advance(20 * 3600)
        assert client.get("/inc").text == expected
    # ... to the lifetime: 2 days after it began, even an active session is over.
    clock.advance(8 * 3600 + 1)
    assert client.get("/inc").text == "1"
    # Idle for longer than the lifetime: over.
    clock.advance(2 * 86400 + 1)
    assert client.get("/inc").text == "1"


def test_absolute_timeout_none_gives_flasks_endless_sliding_sessions() -> None:
    clock = FakeClock()
    app = counter_app(None)
    app.session_interface = SessionInterface(
        MemoryStore(clock=clock), clock=clock, absolute_timeout=None
    )
    app.permanent_session_lifetime = timedelta(days=2)
    client = app.test_client()
    for expected in range(1, 6):
        assert client.get("/inc").text == str(expected)
        clock.advance(40 * 3600)


def test_missing_secret_key_gives_flasks_null_session() -> None:
    """Flask's test_missing_session and test_session_transactions_no_null_sessions."""
    app = make_app(SessionInterface(), SECRET_KEY=None)

    @app.get("/write")
    def write() -> str:
        flask.session["foo"] = 42
        return ""

    with app.test_request_context():
        assert flask.session.get("missing_key") is None
        with pytest.raises(RuntimeError, match="session is unavailable"):
            flask.session["foo"] = 42
        with pytest.raises(RuntimeError, match="session is unavailable"):
            flask.session.pop("foo")
    with app.test_client() as c:
        with pytest.raises(RuntimeError, match="Session backend did not open a session"):  # noqa: SIM117
            with c.session_transaction():
                pass
        with pytest.raises(RuntimeError, match="no secret key was set"):
            c.get("/write")


def test_secret_key_fallbacks_keep_cookie_sessions(app: flask.Flask) -> None:
    """Flask's test_session_secret_key_fallbacks, with keys long enough for websession."""
    app = make_app(SessionInterface())
    client = app.test_client()

    @app.post("/")
    def set_session() -> str:
        flask.session["a"] = 1
        return ""

    @app.get("/")
    def get_session() -> dict[str, Any]:
        return dict(flask.session)

    key = "{} key, long enough to be accepted".format
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = key(0), [key(-1), key(-2)]
    client.post()
    assert client.get().json == {"a": 1}
    app.secret_key = key("?")
    assert client.get().json == {}
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = key(1), [key(0), key(-1)]
    client.set_cookie("session", "")  # the failed read above cleared the cookie
    client.post()
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = key(2), [key(1)]
    assert client.get().json == {"a": 1}


def test_short_secret_key_is_refused_clearly() -> None:
    app = make_app(SessionInterface(), SECRET_KEY="dev")

    @app.get("/")
    def index() -> str:
        return str(flask.session.get("a"))

    with pytest.raises(SessionConfigError, match="at least 16"):
        app.test_client().get("/")


def test_cookie_mode_data_is_signed_not_readable_by_flask() -> None:
    app = make_app(SessionInterface())

    @app.get("/")
    def index() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    client = app.test_client()
    client.get("/")
    token = session_cookie(client)
    assert token is not None
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    client.set_cookie("session", forged)
    response = client.get("/")
    assert response.text == "1"  # a forged cookie is an empty session, never an error


def test_keywords_win_over_flask_config_and_config_object() -> None:
    interface = SessionInterface(
        MemoryStore(), SessionConfig(cookie_name="from-config"), cookie_path="/kw"
    )
    app = make_app(interface, SESSION_COOKIE_NAME="from-flask", SESSION_COOKIE_PATH="/flask")

    @app.get("/")
    def index() -> str:
        flask.session["a"] = 1
        return ""

    cookie = set_cookie_header(app.test_client().get("/"))
    assert cookie.startswith("from-flask=")
    assert cookie_attributes(cookie)["path"] == "/kw"

    untouched = make_app(interface)  # Flask's default name leaves config= in charge
    untouched.add_url_rule("/", view_func=index)
    assert set_cookie_header(untouched.test_client().get("/")).startswith("from-config=")


def test_one_interface_shared_by_two_apps() -> None:
    interface = SessionInterface()
    first = make_app(interface, SESSION_COOKIE_NAME="one")
    second = make_app(interface, SESSION_COOKIE_NAME="two", SECRET_KEY="another key, also long")
    for app in (first, second):
        app.add_url_rule("/inc", view_func=counter_app(None).view_functions["inc"])
    a, b = first.test_client(), second.test_client()
    assert [a.get("/inc").text, a.get("/inc").text, b.get("/inc").text] == ["1", "2", "1"]
    assert a.get_cookie("one") is not None
    assert b.get_cookie("two") is not None


def test_header_transport() -> None:
    app = make_app(SessionInterface(MemoryStore(), transport="header"))

    @app.get("/inc")
    def inc() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    client = app.test_client(use_cookies=False)
    first = client.get("/inc")
    token = first.headers["X-Session-Token"]
    assert first.headers["Vary"] == "X-Session-Token"
    assert client.get("/inc", headers={"X-Session-Token": token}).text == "2"


# -- configuration errors --------------------------------------------------------------------


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(SessionConfigError, match="timezone-aware"):
        SessionInterface(legacy_cookie_cutoff=datetime(2030, 1, 1))
    with pytest.raises(SessionConfigError, match="unknown setting"):
        SessionInterface(cookie_nmae="x")  # type: ignore[call-arg]
    with pytest.raises(SessionConfigError, match="async store"):
        SessionInterface(SlowAsyncStore(MemoryStore()))


def test_current_session_needs_websessions_interface() -> None:
    with pytest.raises(SessionStateError, match="inside a Flask request"):
        current_session()
    app = flask.Flask(__name__)
    app.secret_key = SECRET
    with app.test_request_context(), pytest.raises(SessionStateError, match="session_interface"):
        login("alice")


# -- store failure ---------------------------------------------------------------------------


class FailingStore(MemoryStore):
    """Loads fine, cannot save: the store went away mid-request."""

    def save(
        self, key: str, payload: bytes, *, expected_version: int | None, ttl: float, meta: Meta
    ) -> int:
        raise StoreUnavailable("FailingStore is down")

    def load(self, key: str) -> Entry | None:
        return super().load(key)


def test_store_failure_at_save_answers_503() -> None:
    app = counter_app(FailingStore())
    response = app.test_client().get("/inc")
    assert response.status_code == 503
    assert "Set-Cookie" not in response.headers
    assert response.headers["Retry-After"] == "5"


# -- migration from Flask's own signed cookie sessions ------------------------------------------


def flask_cookie(data: dict[str, Any], secret: str = SECRET, permanent: bool = False) -> str:
    """A session cookie made by Flask's default interface (SecureCookieSessionInterface)."""
    app = flask.Flask(__name__)
    app.secret_key = secret

    @app.get("/")
    def index() -> str:
        flask.session.update(data)
        flask.session.permanent = permanent
        flask.flash("carried over", "info")
        return ""

    client = app.test_client()
    client.get("/")
    value = session_cookie(client)
    assert value is not None
    assert value.count(".") >= 2  # Flask's payload.timestamp.signature
    return value


def legacy_app(store: Any, cutoff: datetime) -> flask.Flask:
    app = make_app(SessionInterface(store, legacy_cookie_cutoff=cutoff))

    @app.get("/")
    def index() -> str:
        return repr(
            (
                sorted(flask.session.items()),  # Flask's cookie sorts its keys
                flask.session.permanent,
                flask.get_flashed_messages(with_categories=True),
            )
        )

    @app.get("/nothing")
    def nothing() -> str:
        return ""

    return app


FUTURE = datetime.now(UTC) + timedelta(days=30)
PAST = datetime.now(UTC) - timedelta(days=1)
LEGACY_DATA = {"user_id": 7, "cart": (1, 2), "note": Markup("<b>hi</b>"), "raw": b"\x00"}


@pytest.mark.parametrize("backend_store", ["cookie", "memory", "sqlite"], indirect=True)
def test_flask_cookie_is_carried_over_before_the_cutoff(backend_store: Any) -> None:
    app = legacy_app(backend_store, FUTURE)
    client = app.test_client()
    legacy = flask_cookie(LEGACY_DATA, permanent=True)
    client.set_cookie("session", legacy)
    response = client.get("/")
    assert response.text == repr((sorted(LEGACY_DATA.items()), True, [("info", "carried over")]))
    new_cookie = set_cookie_header(response)
    assert cookie_attributes(new_cookie)["max-age"] == str(31 * 86400)  # still permanent
    token = session_cookie(client)
    assert token is not None
    assert token != legacy  # ours now
    # The data lives on in the websession session; the flash was shown once.
    assert client.get("/").text == repr((sorted(LEGACY_DATA.items()), True, []))


def test_flask_cookie_is_migrated_even_by_a_request_that_ignores_the_session() -> None:
    app = legacy_app(MemoryStore(), FUTURE)
    client = app.test_client()
    client.set_cookie("session", flask_cookie({"a": 1}))
    response = client.get("/nothing")
    assert is_valid_id(session_cookie(client) or "")
    assert "max-age" not in cookie_attributes(set_cookie_header(response))  # not permanent
    assert client.get("/").text == repr(([("a", 1)], False, [("info", "carried over")]))


def test_flask_cookie_signed_with_a_fallback_key_is_carried_over() -> None:
    old_key = "the key we used last year, long enough"
    app = legacy_app(MemoryStore(), FUTURE)
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    client = app.test_client()
    client.set_cookie("session", flask_cookie({"a": 1}, secret=old_key))
    assert client.get("/").text == repr(([("a", 1)], False, [("info", "carried over")]))


def test_compressed_flask_cookie_is_carried_over() -> None:
    app = legacy_app(MemoryStore(), FUTURE)
    client = app.test_client()
    legacy = flask_cookie({"text": "repetitive " * 100})
    assert legacy.startswith(".")  # itsdangerous zlib-compressed it
    client.set_cookie("session", legacy)
    expected = ([("text", "repetitive " * 100)], False, [("info", "carried over")])
    assert client.get("/").text == repr(expected)


def test_flask_cookie_is_ignored_after_the_cutoff() -> None:
    app = legacy_app(MemoryStore(), PAST)
    client = app.test_client()
    client.set_cookie("session", flask_cookie(LEGACY_DATA))
    response = client.get("/")
    assert response.text == repr(([], False, []))
    assert "Max-Age=0" in set_cookie_header(response)  # the old cookie is removed
    assert session_cookie(client) is None


def test_flask_cookie_is_ignored_without_a_cutoff_and_when_forged() -> None:
    app = make_app(SessionInterface(MemoryStore()))
    app.add_url_rule("/", view_func=legacy_app(None, FUTURE).view_functions["index"])
    client = app.test_client()
    client.set_cookie("session", flask_cookie({"a": 1}))
    assert client.get("/").text == repr(([], False, []))

    app = legacy_app(MemoryStore(), FUTURE)
    client = app.test_client()
    client.set_cookie("session", flask_cookie({"a": 1}, secret="somebody else's key, long"))
    assert client.get("/").text == repr(([], False, []))


def test_the_cutoff_follows_the_clock() -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    cutoff = datetime(2030, 1, 2, tzinfo=UTC)
    app = legacy_app(None, cutoff)
    app.session_interface = SessionInterface(legacy_cookie_cutoff=cutoff, clock=clock)
    legacy = flask_cookie({"a": 1})
    before = app.test_client()
    before.set_cookie("session", legacy)
    clock.advance(86400 - 1)
    assert before.get("/").text == repr(([("a", 1)], False, [("info", "carried over")]))
    after = app.test_client()
    after.set_cookie("session", legacy)
    clock.advance(1)
    assert after.get("/").text == repr(([], False, []))


# -- the example app ---------------------------------------------------------------------------


def test_example_app_counter_login_remember_logout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("flask_app", tmp_path, monkeypatch)
    example.app.config["TESTING"] = True
    client = example.app.test_client()

    page = client.get("/").text
    assert [count_of(client.get("/").text) for _ in range(2)] == [2, 3]
    anonymous = session_cookie(client)
    assert client.post("/login", data={"user": "ann", "csrf": "forged"}).status_code == 403

    response = client.post("/login", data={"user": "ann", "csrf": csrf_of(page), "remember": "on"})
    assert response.status_code == 303
    assert "max-age" in cookie_attributes(set_cookie_header(response))
    assert session_cookie(client) != anonymous
    page = client.get("/").text
    assert "Welcome, ann." in page
    assert "Logged in as ann." in page
    assert count_of(page) == 4

    assert client.post("/logout", data={"csrf": csrf_of(page)}).status_code == 303
    page = client.get("/").text
    assert "You are logged out." in page
    assert count_of(page) == 1
    assert (tmp_path / "sessions.db").exists()


# -- Flask-Login ------------------------------------------------------------------------------


@pytest.fixture
def flask_login() -> ModuleType:
    with requires("flask-login"):
        import flask_login
    return flask_login


def flask_login_app(
    flask_login: ModuleType, interface: SessionInterface, **config: Any
) -> flask.Flask:
    """An app that signs in with nothing but Flask-Login's login_user() and logout_user()."""
    app = make_app(interface, **config)
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):  # type: ignore[misc, name-defined]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    @manager.user_loader
    def load_user(user_id: str) -> Any:
        return User(user_id) if user_id in {"1", "2"} else None

    @app.post("/login")
    def do_login() -> str:
        form = flask.request.form
        flask_login.login_user(User(form["user"]), remember="remember" in form)
        return "in"

    @app.post("/logout")
    def do_logout() -> str:
        flask_login.logout_user()
        return "out"

    @app.get("/")
    def index() -> Any:
        flask.session["n"] = flask.session.get("n", 0) + 1
        user = flask_login.current_user
        return {
            "n": flask.session["n"],
            "user": user.get_id() if user.is_authenticated else None,
            "bound": current_session().user_id,
            "csrf": current_session().csrf_token(),
        }

    return app


def stored_user(store: Any, client: FlaskClient) -> str | None:
    """The user the store keeps beside the client's session (outside the payload)."""
    cookie = session_cookie(client)
    assert cookie is not None
    entry = store.load(hash_id(cookie))
    assert entry is not None, "the client's session is not in the store"
    return entry.user_id


@pytest.mark.parametrize("backend_store", SERVER_BACKENDS, indirect=True)
def test_flask_login_login_user_binds_the_user_and_rotates_the_id(
    flask_login: ModuleType, backend_store: Any
) -> None:
    interface = SessionInterface(backend_store)
    app = flask_login_app(flask_login, interface)
    client = app.test_client()
    before = client.get("/").json
    anonymous = session_cookie(client)
    assert before["user"] is None
    assert stored_user(backend_store, client) is None

    client.post("/login", data={"user": "1"})
    signed_in = session_cookie(client)
    after = client.get("/").json

    assert signed_in != anonymous  # a new id at login: fixation defence
    assert after == {"n": 2, "user": "1", "bound": "1", "csrf": after["csrf"]}
    assert after["csrf"] != before["csrf"]
    assert stored_user(backend_store, client) == "1"
    (listed,) = interface.sessions_for("1")
    assert listed.handle == handle_of(hash_id(signed_in or ""))
    # The id a planted cookie named before the login no longer loads anything.
    planted = app.test_client()
    planted.set_cookie("session", anonymous or "")
    assert planted.get("/").json["n"] == 1


@pytest.mark.parametrize("backend_store", SERVER_BACKENDS, indirect=True)
def test_flask_login_logout_user_unbinds_the_user_and_rotates_the_id(
    flask_login: ModuleType, backend_store: Any
) -> None:
    interface = SessionInterface(backend_store)
    app = flask_login_app(flask_login, interface)
    client = app.test_client()
    client.post("/login", data={"user": "1"})
    client.get("/")
    signed_in = session_cookie(client)

    client.post("/logout")
    page = client.get("/").json

    assert page["user"] is None
    assert page["bound"] is None
    assert page["n"] == 2  # Flask-Login leaves the rest of the session alone, and so do we
    assert session_cookie(client) != signed_in
    assert stored_user(backend_store, client) is None
    assert interface.sessions_for("1") == []
    # The signed-in id is gone: a copy of that cookie is a stranger's.
    copied = app.test_client()
    copied.set_cookie("session", signed_in or "")
    stranger = copied.get("/").json
    assert (stranger["n"], stranger["user"]) == (1, None)


def test_flask_login_switching_users_moves_the_binding(flask_login: ModuleType) -> None:
    store = MemoryStore()
    interface = SessionInterface(store)
    client = flask_login_app(flask_login, interface).test_client()
    client.post("/login", data={"user": "1"})
    first = session_cookie(client)
    client.post("/login", data={"user": "2"})

    assert session_cookie(client) != first
    assert stored_user(store, client) == "2"
    assert interface.sessions_for("1") == []
    assert len(interface.sessions_for("2")) == 1


def test_flask_login_repeated_login_of_the_same_user_keeps_the_id(
    flask_login: ModuleType,
) -> None:
    client = flask_login_app(flask_login, SessionInterface(MemoryStore())).test_client()
    client.post("/login", data={"user": "1"})
    cookie = session_cookie(client)
    client.post("/login", data={"user": "1"})
    assert session_cookie(client) == cookie


def test_flask_login_remember_cookie_is_left_to_flask_login(flask_login: ModuleType) -> None:
    store = MemoryStore()
    interface = SessionInterface(store)
    client = flask_login_app(flask_login, interface).test_client()
    response = client.post("/login", data={"user": "1", "remember": "on"})
    remember = client.get_cookie("remember_token")
    assert remember is not None
    # Flask-Login's own cookie, as Flask-Login writes it; websession adds or changes nothing.
    headers = response.headers.getlist("Set-Cookie")
    (remember_header,) = [h for h in headers if h.startswith("remember_token=")]
    assert "httponly" in cookie_attributes(remember_header)
    assert "samesite" not in cookie_attributes(remember_header)

    # Revoking every session ends the session, not the remember-me cookie: Flask-Login
    # signs the user back in from it, and that new session is bound and listed again.
    assert interface.revoke_user("1") == 1
    page = client.get("/").json
    assert page["user"] == "1"
    assert page["bound"] == "1"
    assert len(interface.sessions_for("1")) == 1
    still = client.get_cookie("remember_token")
    assert still is not None
    assert still.value == remember.value

    client.post("/logout")
    assert client.get_cookie("remember_token") is None  # Flask-Login's logout clears it
    assert client.get("/").json["user"] is None
    assert interface.sessions_for("1") == []


def test_flask_login_strong_protection_unbinds_when_it_signs_out(
    flask_login: ModuleType,
) -> None:
    interface = SessionInterface(MemoryStore())
    app = flask_login_app(flask_login, interface, SESSION_PROTECTION="strong")
    client = app.test_client()
    client.post("/login", data={"user": "1"}, headers={"User-Agent": "Laptop/1.0"})
    assert client.get("/", headers={"User-Agent": "Laptop/1.0"}).json["user"] == "1"

    # Another User-Agent with the same cookie: Flask-Login's strong mode pops its keys.
    page = client.get("/", headers={"User-Agent": "Elsewhere/2.0"}).json
    assert page["user"] is None
    assert page["bound"] is None
    assert interface.sessions_for("1") == []


def test_session_transaction_with_flask_logins_key_signs_in(flask_login: ModuleType) -> None:
    interface = SessionInterface(MemoryStore())
    client = flask_login_app(flask_login, interface).test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "2"
    assert client.get("/").json["user"] == "2"
    assert len(interface.sessions_for("2")) == 1


def test_flask_login_with_cookie_sessions(flask_login: ModuleType) -> None:
    """Signed-cookie mode: the login still rotates; there is no index to list."""
    interface = SessionInterface()
    client = flask_login_app(flask_login, interface).test_client()
    client.get("/")
    anonymous = session_cookie(client)
    client.post("/login", data={"user": "1"})
    assert session_cookie(client) != anonymous
    assert client.get("/").json["bound"] == "1"
    client.post("/logout")
    assert client.get("/").json["bound"] is None
    with pytest.raises(UserIndexMissing):
        interface.sessions_for("1")


def test_flask_login_refused_over_the_session_limit(flask_login: ModuleType) -> None:
    interface = SessionInterface(MemoryStore(), max_sessions_per_user=1, session_limit="refuse")
    app = flask_login_app(flask_login, interface)

    @app.errorhandler(TooManySessions)
    def too_many(exc: TooManySessions) -> tuple[str, int]:
        return f"limit {exc.limit}", 409

    first, second = app.test_client(), app.test_client()
    assert first.post("/login", data={"user": "1"}).status_code == 200
    response = second.post("/login", data={"user": "1"})
    assert (response.status_code, response.text) == (409, "limit 1")
    assert second.get("/").json["user"] is None
    assert first.get("/").json["user"] == "1"


def test_non_string_flask_login_id_is_refused_clearly() -> None:
    app = make_app(SessionInterface(MemoryStore()))
    with app.test_request_context("/"):
        session = current_session()
        with pytest.raises(TypeError, match="get_id"):
            session["_user_id"] = ["1"]
        assert "_user_id" not in session
        assert session.user_id is None


def test_sessions_for_marks_flask_session_as_current() -> None:
    interface = SessionInterface(MemoryStore())
    app = make_app(interface)

    @app.post("/login")
    def do_login() -> str:
        login("ann")
        return "in"

    @app.get("/devices")
    def devices() -> Any:
        return [
            [info.handle, info.current] for info in interface.sessions_for("ann", flask.session)
        ]

    @app.post("/elsewhere")
    def elsewhere() -> str:
        return str(interface.revoke_user("ann", keep=flask.session))

    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login")
    phone.post("/login")
    listed = laptop.get("/devices").json
    assert sorted(current for _, current in listed) == [False, True]
    assert laptop.post("/elsewhere").text == "1"
    assert [current for _, current in laptop.get("/devices").json] == [True]
    other = next(handle for handle, current in listed if not current)
    assert interface.revoke("ann", other) is False  # already gone


# -- a real server ------------------------------------------------------------------------------


def test_over_real_http_with_threads(tmp_path: Path) -> None:
    """The interface under a threaded WSGI server, with SQLite, from several clients at once."""
    import http.client
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class ThreadedServer(WSGIServer):
        def process_request(self, request: Any, client_address: Any) -> None:
            thread = threading.Thread(
                target=self._handle, args=(request, client_address), daemon=True
            )
            thread.start()

        def _handle(self, request: Any, client_address: Any) -> None:
            try:
                self.finish_request(request, client_address)
            finally:
                self.shutdown_request(request)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    store = SQLiteStore(tmp_path / "http.db")
    app = counter_app(store)
    server = make_server(
        "127.0.0.1", 0, app, server_class=ThreadedServer, handler_class=QuietHandler
    )
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    port = server.server_address[1]
    try:

        def visitor(results: list[str]) -> None:
            cookie = None
            for _ in range(5):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/inc", headers={"Cookie": cookie} if cookie else {})
                response = conn.getresponse()
                results.append(response.read().decode())
                set_cookie = response.getheader("Set-Cookie")
                if set_cookie:
                    cookie = set_cookie.split(";")[0]
                conn.close()

        outcomes: list[list[str]] = [[] for _ in range(4)]
        threads = [threading.Thread(target=visitor, args=(out,)) for out in outcomes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert outcomes == [["1", "2", "3", "4", "5"]] * 4
    finally:
        server.shutdown()
        server.server_close()
        store.close()
