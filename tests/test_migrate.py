"""``websession migrate``: real sessions of Django, Flask-Session and starsessions carried over.

Each source's sessions are made by that library itself (Django's db
SessionStore on SQLite, Flask-Session on SQLAlchemy/SQLite and on Redis,
starsessions' RedisStore with its JSON serializer). The command copies them
into a websession SQLite store; then a request that presents the old cookie to
a websession app configured with a legacy cutoff gets the migrated data, a
fresh websession cookie, and the old cookie is worthless afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import django_settings
from services import REDIS_URL, redis_scope, run_prefix
from websession.cli_migrate import LegacyRecord, Skipped, django_unsign, migrate, write_records
from websession.codecs import decode_payload
from websession.ids import hash_id, is_valid_id, legacy_key
from websession.stores import MemoryStore, SQLiteStore

django_settings.configure(__name__)

from django.contrib.sessions.backends.db import SessionStore as DjangoDbSession  # noqa: E402
from django.contrib.sessions.models import Session as DjangoSessionRow  # noqa: E402
from django.core import signing  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

SECRET = django_settings.SECRET_KEY
CUTOFF = datetime.now(UTC) + timedelta(days=30)


def run(*args: str) -> Any:
    return CliRunner().invoke(migrate, list(args), catch_exceptions=False)


def _payload(store: SQLiteStore, token: str) -> Any:
    entry = store.load(legacy_key(token))
    assert entry is not None, "no migrated record for this token"
    return entry, decode_payload(entry.payload)


# -- Django ---------------------------------------------------------------------------------------


@pytest.fixture
def django_sessions(tmp_path: Path) -> tuple[Path, list[str]]:
    """Sessions made by Django's own db backend, copied to an SQLite file under tmp_path."""
    made = []
    signed_in = DjangoDbSession()
    signed_in.update({"cart": [1, 2], "_auth_user_id": "7", "note": "café"})
    signed_in.create()
    made.append(signed_in.session_key)
    anonymous = DjangoDbSession()
    anonymous["visits"] = 3
    anonymous.create()
    made.append(anonymous.session_key)
    copy = tmp_path / "django.db"
    try:
        target = sqlite3.connect(copy)
        with target:
            connection.ensure_connection()
            connection.connection.backup(target)
        target.close()
    finally:
        for key in made:
            DjangoDbSession(key).delete()
    return copy, made


def test_django_unsign_reads_what_django_signs() -> None:
    value = signing.dumps(
        {"a": "x" * 200},
        salt="django.contrib.sessions.SessionStore",
        compress=True,
        key=SECRET,
    )
    assert value.startswith(".")  # compressed
    assert django_unsign(value, [SECRET]) == b'{"a":"' + b"x" * 200 + b'"}'
    with pytest.raises(PermissionError):
        django_unsign(value, ["another-secret-key-0123456789"])
    with pytest.raises(PermissionError):
        django_unsign(value[:-2] + "AA", [SECRET])


def test_django_db_sessions_migrate(
    django_sessions: tuple[Path, list[str]], tmp_path: Path
) -> None:
    database, (signed_in, anonymous) = django_sessions
    target = tmp_path / "ws.db"
    result = run(
        "django-db",
        "--from", str(database),
        "--secret-key", "an-old-rotated-secret-key-0123",
        "--secret-key", SECRET,
        "--store", f"sqlite:///{target}",
        "--cutoff", CUTOFF.strftime("%Y-%m-%d"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 migrated" in result.output
    store = SQLiteStore(target)
    entry, payload = _payload(store, signed_in)
    assert payload.d == {"cart": [1, 2], "_auth_user_id": "7", "note": "café"}
    assert entry.user_id == "7"
    # Capped at the cutoff (Django's default age is two weeks, shorter here).
    assert entry.expires <= CUTOFF.timestamp() + 1
    _, payload = _payload(store, anonymous)
    assert payload.d == {"visits": 3}
    # Only the legacy key holds it: the Django key is no websession key.
    assert store.load(hash_id(signed_in)) is None

    # A second run finds them there and changes nothing.
    again = run(
        "django-db", "--from", str(database), "--secret-key", SECRET,
        "--store", f"sqlite:///{target}",
    )  # fmt: skip
    assert "2 already migrated" in again.output


def test_django_wrong_secret_key_is_refused(
    django_sessions: tuple[Path, list[str]], tmp_path: Path
) -> None:
    database, _ = django_sessions
    result = run(
        "django-db", "--from", str(database), "--secret-key", "not-the-project-secret-key-01",
        "--store", f"sqlite:///{tmp_path / 'ws.db'}",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "2 bad signature" in result.output
    assert "is --secret-key the project's SECRET_KEY?" in result.output


def test_django_file_sessions_migrate(tmp_path: Path) -> None:
    from django.contrib.sessions.backends.file import SessionStore as DjangoFileSession

    folder = tmp_path / "django-sessions"
    folder.mkdir()
    with override_settings(SESSION_FILE_PATH=str(folder)):
        signed_in = DjangoFileSession()
        signed_in.update({"cart": [1, 2], "_auth_user_id": "7"})
        signed_in.create()
        remembered = DjangoFileSession()
        remembered["theme"] = "dark"
        remembered.set_expiry(600)
        remembered.create()
        stale = DjangoFileSession()
        stale["old"] = True
        stale.create()
    stale_file = folder / f"sessionid{stale.session_key}"
    two_weeks_ago = time.time() - 1209600 - 60
    os.utime(stale_file, (two_weeks_ago, two_weeks_ago))
    (folder / "sessionidnot-a-session-key").write_text("ignored")
    (folder / f"sessionid{'g' * 32}").write_text("garbage, not a signed value")
    target = tmp_path / "ws.db"
    started = time.time()
    result = run(
        "django-file", "--from", str(folder), "--secret-key", SECRET,
        "--store", f"sqlite:///{target}", "-v",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 migrated" in result.output
    assert "1 expired" in result.output
    assert "1 undecodable" in result.output
    store = SQLiteStore(target)
    entry, payload = _payload(store, signed_in.session_key or "")
    assert payload.d == {"cart": [1, 2], "_auth_user_id": "7"}
    assert entry.user_id == "7"
    assert entry.expires == pytest.approx(started + 1209600, abs=120)
    entry, payload = _payload(store, remembered.session_key or "")
    assert payload.d["theme"] == "dark"
    # set_expiry(600) counts from the file's last write, as Django's file backend does.
    assert entry.expires == pytest.approx(started + 600, abs=120)
    assert store.load(legacy_key(stale.session_key or "")) is None


def test_django_file_source_must_be_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        migrate,
        ["django-file", "--from", str(tmp_path / "missing"), "--secret-key", SECRET,
         "--store", f"sqlite:///{tmp_path / 'ws.db'}"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "missing" in result.output


def test_django_pickled_and_expired_rows_are_skipped(tmp_path: Path) -> None:
    class NotReallyPickle:
        # Bytes shaped like a protocol-5 pickle stream; the migrator must stop at the header.
        def dumps(self, obj: Any) -> bytes:
            return b"\x80\x05\x95" + b"\x00" * 40

    database = tmp_path / "django.db"
    with sqlite3.connect(database) as conn:
        conn.execute(
            "CREATE TABLE django_session (session_key TEXT, session_data TEXT, expire_date TEXT)"
        )
        salt = "django.contrib.sessions.SessionStore"
        pickled = signing.dumps({}, salt=salt, key=SECRET, serializer=NotReallyPickle)
        live = signing.dumps({"a": 1}, salt=salt, key=SECRET, compress=True)
        future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.executemany(
            "INSERT INTO django_session VALUES (?, ?, ?)",
            [
                ("p" * 32, pickled, future),
                ("e" * 32, live, past),
                ("l" * 32, live, future),
                ("g" * 32, "garbage", future),
                ("s" * 32, live[:-4] + "abcd", future),
            ],
        )
    conn.close()
    target = tmp_path / "ws.db"
    result = run(
        "django-db", "--from", str(database), "--secret-key", SECRET,
        "--store", f"sqlite:///{target}", "-v",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "1 migrated, 1 expired, 1 pickled (never read), 1 bad signature, 1 undecodable."
        in result.output
    )
    assert "never read (unpickling runs code)" in result.output
    store = SQLiteStore(target)
    assert store.load(legacy_key("p" * 32)) is None
    assert store.load(legacy_key("e" * 32)) is None
    assert store.load(legacy_key("l" * 32)) is not None


def django_cart(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"cart": request.session.get("cart"), "user": request.session.get("_auth_user_id")}
    )


urlpatterns = [path("cart", django_cart)]


def test_old_django_cookie_gets_the_migrated_session(
    django_sessions: tuple[Path, list[str]], tmp_path: Path
) -> None:
    database, (signed_in, _) = django_sessions
    target = tmp_path / "ws.db"
    run(
        "django-db",
        "--from",
        str(database),
        "--secret-key",
        SECRET,
        "--store",
        f"sqlite:///{target}",
    )
    store = SQLiteStore(target)
    settings = {
        "ROOT_URLCONF": __name__,
        "WEBSESSION_STORE": store,
        "WEBSESSION_LEGACY_SESSION_CUTOFF": CUTOFF,
    }
    with override_settings(**settings):
        client = Client()
        client.cookies["sessionid"] = signed_in
        assert client.get("/cart").json() == {"cart": [1, 2], "user": "7"}
        new_key = client.cookies["sessionid"].value
        assert is_valid_id(new_key)
        entry = store.load(hash_id(new_key))
        assert entry is not None
        assert entry.user_id == "7"
        # Moved, not copied: the old key loads nothing any more.
        assert store.load(legacy_key(signed_in)) is None
        assert client.get("/cart").json() == {"cart": [1, 2], "user": "7"}

        stranger = Client()
        stranger.cookies["sessionid"] = signed_in
        assert stranger.get("/cart").json() == {"cart": None, "user": None}

    # After the cutoff the lookup is off: a migrated record is not read.
    run(
        "django-db",
        "--from",
        str(database),
        "--secret-key",
        SECRET,
        "--store",
        f"sqlite:///{target}",
    )
    past = datetime.now(UTC) - timedelta(seconds=1)
    with override_settings(**{**settings, "WEBSESSION_LEGACY_SESSION_CUTOFF": past}):
        late = Client()
        late.cookies["sessionid"] = signed_in
        assert late.get("/cart").json() == {"cart": None, "user": None}


def test_django_rows_read_through_a_sqlalchemy_url(
    django_sessions: tuple[Path, list[str]], tmp_path: Path
) -> None:
    pytest.importorskip("sqlalchemy")
    database, (signed_in, _) = django_sessions
    target = tmp_path / "ws.db"
    result = run(
        "django-db", "--from", f"sqlite:///{database}", "--secret-key", SECRET,
        "--store", f"sqlite:///{target}", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 would migrate" in result.output
    assert SQLiteStore(target).load(legacy_key(signed_in)) is None


# -- Flask-Session --------------------------------------------------------------------------------


def _flask_session_app(**config: Any) -> Any:
    import flask
    from flask_session import Session as FlaskSession

    app = flask.Flask(__name__)
    app.secret_key = SECRET
    app.config.update(config)
    FlaskSession(app)

    @app.post("/sign-in")
    def sign_in() -> Any:
        flask.session["_user_id"] = "42"
        flask.session["cart"] = ["apple", "pear"]
        flask.flash("Welcome back", "info")
        return {"ok": True}

    @app.post("/browse")
    def browse() -> Any:
        flask.session.permanent = False
        flask.session["seen"] = 1
        return {"ok": True}

    return app


def _websession_flask_app(store: Any) -> Any:
    import flask

    from websession.integrations.flask import SessionInterface, current_session

    app = flask.Flask(__name__)
    app.secret_key = SECRET
    app.session_interface = SessionInterface(store, legacy_session_cutoff=CUTOFF)

    @app.get("/whoami")
    def whoami() -> Any:
        session = current_session()
        return {
            "user": session.user_id,
            "cart": session.get("cart"),
            "flashes": flask.get_flashed_messages(with_categories=True),
            "permanent": session.permanent,
        }

    return app


def _sid(response: Any) -> str:
    header = response.headers["Set-Cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def _check_flask_migration(store: SQLiteStore, signed_in: str) -> None:
    entry, payload = _payload(store, signed_in)
    assert entry.user_id == "42"
    assert payload.d == {"_user_id": "42", "cart": ["apple", "pear"]}
    assert payload.f == [("info", "Welcome back")]
    assert payload.b is False

    client = _websession_flask_app(store).test_client()
    client.set_cookie("session", signed_in)
    body = client.get("/whoami").get_json()
    assert body == {
        "user": "42",
        "cart": ["apple", "pear"],
        "flashes": [["info", "Welcome back"]],
        "permanent": True,
    }
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert cookie.value != signed_in
    assert store.load(legacy_key(signed_in)) is None
    assert client.get("/whoami").get_json()["cart"] == ["apple", "pear"]


def test_flask_session_sqlalchemy_sessions_migrate(tmp_path: Path) -> None:
    pytest.importorskip("flask_sqlalchemy")
    database = tmp_path / "flask.db"
    app = _flask_session_app(
        SESSION_TYPE="sqlalchemy",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
    )
    client = app.test_client()
    signed_in = _sid(client.post("/sign-in"))
    other = app.test_client()
    browsing = _sid(other.post("/browse"))
    assert is_valid_id(signed_in)  # Flask-Session ids have websession's shape: the miss path

    target = tmp_path / "ws.db"
    result = run(
        "flask-session", "--from", str(database), "--store", f"sqlite:///{target}",
        "--cutoff", CUTOFF.isoformat(timespec="seconds"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 migrated" in result.output
    store = SQLiteStore(target)
    _, payload = _payload(store, browsing)
    assert payload.d == {"seen": 1}
    assert payload.b is True  # not permanent: a browser-session cookie
    _check_flask_migration(store, signed_in)


@pytest.fixture
def redis_client() -> Iterator[Any]:
    prefix = run_prefix("migrate")
    with redis_scope(prefix) as client:
        client.test_prefix = prefix
        yield client


def test_flask_session_redis_sessions_migrate(redis_client: Any, tmp_path: Path) -> None:
    prefix = redis_client.test_prefix + "flask:"
    app = _flask_session_app(
        SESSION_TYPE="redis", SESSION_REDIS=redis_client, SESSION_KEY_PREFIX=prefix
    )
    signed_in = _sid(app.test_client().post("/sign-in"))
    target = tmp_path / "ws.db"
    result = run(
        "flask-session", "--from", REDIS_URL, "--key-prefix", prefix,
        "--store", f"sqlite:///{target}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 migrated." in result.output
    store = SQLiteStore(target)
    entry, _ = _payload(store, signed_in)
    # Redis's own TTL (PERMANENT_SESSION_LIFETIME, 31 days) carried over.
    assert entry.expires - entry.last_seen == pytest.approx(31 * 86400, abs=60)
    _check_flask_migration(store, signed_in)


def test_flask_session_pickle_records_are_never_read(tmp_path: Path) -> None:
    items = [
        LegacyRecord(token="t" * 20, data={"a": 1}, expires=None),
        Skipped("pickled (never read)", "old"),
    ]
    store = MemoryStore()
    counts = write_records(items, store)
    assert counts == {"migrated": 1, "pickled (never read)": 1}
    from websession.cli_migrate import _flask_session_data

    skipped = _flask_session_data(b"\x80\x04\x95\x10\x00")
    assert isinstance(skipped, Skipped)
    assert skipped.outcome == "pickled (never read)"


# -- starsessions ---------------------------------------------------------------------------------


def test_starsessions_redis_json_sessions_migrate(redis_client: Any, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient
    from starsessions import JsonSerializer, SessionAutoloadMiddleware
    from starsessions import SessionMiddleware as StarSessionMiddleware
    from starsessions.stores.redis import RedisStore as StarRedisStore

    from websession.integrations.starlette import SessionMiddleware, get_session

    prefix = redis_client.test_prefix + "star."

    async def sign_in(request: Request) -> JSONResponse:
        request.session["user"] = "ada"
        request.session["cart"] = {"apple": 2}
        return JSONResponse({"ok": True})

    old_app = Starlette(
        routes=[Route("/sign-in", sign_in, methods=["POST"])],
        middleware=[
            Middleware(
                StarSessionMiddleware,
                store=StarRedisStore(REDIS_URL, prefix=prefix),
                serializer=JsonSerializer(),
                lifetime=3600,
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )
    with TestClient(old_app) as client:
        assert client.post("/sign-in").status_code == 200
        old_cookie = client.cookies["session"]

    target = tmp_path / "ws.db"
    result = run(
        "starsessions", "--from", REDIS_URL, "--prefix", prefix, "--user-key", "user",
        "--store", f"sqlite:///{target}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 migrated." in result.output
    store = SQLiteStore(target)
    entry, payload = _payload(store, old_cookie)
    assert payload.d == {"user": "ada", "cart": {"apple": 2}}  # __metadata__ moved out
    assert entry.user_id == "ada"
    assert entry.created < entry.last_seen + 1
    assert 3500 < entry.expires - entry.last_seen <= 3600

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(
            {"user": get_session(request).user_id, "cart": request.session.get("cart")}
        )

    new_app = Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[
            Middleware(
                SessionMiddleware, secret_key=SECRET, store=store, legacy_session_cutoff=CUTOFF
            )
        ],
    )
    with TestClient(new_app) as client:
        # Where the jar files the app's own cookies, so the new one replaces it.
        client.cookies.set("session", old_cookie, domain="testserver.local")
        assert client.get("/whoami").json() == {"user": "ada", "cart": {"apple": 2}}
        assert client.cookies["session"] != old_cookie
        assert client.get("/whoami").json() == {"user": "ada", "cart": {"apple": 2}}
    assert store.load(legacy_key(old_cookie)) is None


# -- the generic middlewares, and the record's lifetime -------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["inline", "network"])
def test_asgi_middleware_finds_migrated_sessions(asynchronous: bool) -> None:
    from helpers import SlowAsyncStore
    from websession.asgi import SessionMiddleware
    from websession.stores.memory import AsyncMemoryStore

    memory = MemoryStore()
    # A network-like store is loaded eagerly (Driver.aload); memory lazily (Driver.load).
    store: Any = SlowAsyncStore(memory) if asynchronous else AsyncMemoryStore()
    if not asynchronous:
        memory = store.sync
    write_records([LegacyRecord(token="old-cookie-123", data={"n": 5}, expires=None)], memory)

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = str(scope["session"].get("n")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = SessionMiddleware(inner, store=store, legacy_session_cutoff=CUTOFF)

    async def go() -> tuple[str, str, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            client.cookies.set("session", "old-cookie-123", domain="t.local")
            first = (await client.get("/")).text
            second = (await client.get("/")).text
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as replay:
            replay.cookies.set("session", "old-cookie-123", domain="t.local")
            third = (await replay.get("/")).text
        return first, second, third

    assert asyncio.run(go()) == ("5", "5", "None")
    assert memory.load(legacy_key("old-cookie-123")) is None


def test_cutoff_caps_the_ttl_and_expired_sources_are_skipped() -> None:
    now = 1_700_000_000.0
    store = MemoryStore(clock=lambda: now)
    counts = write_records(
        [
            LegacyRecord(token="a" * 10, data={}, expires=now + 1000),
            LegacyRecord(token="b" * 10, data={}, expires=now - 1),
            LegacyRecord(token="c" * 10, data={}, expires=None),
        ],
        store,
        cutoff=now + 100,
        clock=lambda: now,
    )
    assert counts == {"migrated": 2, "expired": 1}
    entry = store.load(legacy_key("a" * 10))
    assert entry is not None
    assert entry.expires == now + 100
    late = write_records(
        [LegacyRecord(token="d" * 10, data={}, expires=None)],
        store,
        cutoff=now - 1,
        clock=lambda: now,
    )
    assert late == {"expired": 1}


def test_bad_target_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(
        "django-db", "--from", str(tmp_path / "none.db"), "--secret-key", SECRET,
        "--store", "memory://",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot receive migrated sessions" in result.output
    result = run(
        "django-db", "--from", str(tmp_path / "none.db"), "--secret-key", SECRET,
        "--store", f"sqlite:///{tmp_path / 'ws.db'}",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot open the SQLite database" in result.output


def test_table_names_are_checked() -> None:
    result = run(
        "django-db", "--from", "x.db", "--secret-key", SECRET, "--table", "s; DROP TABLE x",
        "--store", "sqlite:///ws.db",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "is not a table name" in result.output


def test_django_row_model_is_the_one_read() -> None:
    # The command's default table and columns are Django's.
    assert DjangoSessionRow._meta.db_table == "django_session"
    columns = {f.column for f in DjangoSessionRow._meta.get_fields()}
    assert {"session_key", "session_data", "expire_date"} <= columns
