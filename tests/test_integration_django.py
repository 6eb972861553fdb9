"""The Django session engine: Django's own backend tests, and a real app under the test client.

Django's ``SessionTestsMixin`` (``tests/sessions_tests/tests.py`` in Django's
source, which the wheel does not ship) is fetched at test time with ``pip
download`` of the installed Django's sdist into a temporary directory, read, and
run against this engine on SQLite and on Redis. Set ``WEBSESSION_DJANGO_SDIST``
to a downloaded sdist to skip the download. Without network the mixin classes
skip, except under CI (``CI=true``), where that is a failure; so does Redis.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest

import django_settings

django_settings.configure(__name__)

from django.contrib.auth import alogin, login, logout  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.base import UpdateError  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import AsyncClient, Client, SimpleTestCase, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from services import CI, REDIS_URL, delete_keys, redis_client, run_prefix  # noqa: E402
from websession.errors import PayloadTooLarge, SessionConfigError  # noqa: E402
from websession.ids import hash_id, is_valid_id  # noqa: E402
from websession.integrations import django as engine  # noqa: E402
from websession.integrations.django import SessionStore  # noqa: E402
from websession.stores import MemoryStore, SQLiteStore  # noqa: E402
from websession.stores.base import Meta  # noqa: E402

#: Every Redis key of this run starts with it; exactly these keys are deleted afterwards.
RUN_PREFIX = run_prefix("django")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app.py"


# -- the app ---------------------------------------------------------------------------------


def count(request: HttpRequest) -> HttpResponse:
    request.session["count"] = request.session.get("count", 0) + 1
    return HttpResponse(str(request.session["count"]))


def show(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session.items()))


def whoami(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.user.get_username() if request.user.is_authenticated else "-")


def signin(request: HttpRequest) -> HttpResponse:
    login(request, User.objects.get(username=request.POST["username"]))
    return HttpResponse("ok")


def signout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("bye")


def remember(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(int(request.GET["seconds"]))
    return HttpResponse("ok")


async def acount(request: HttpRequest) -> HttpResponse:
    value = await request.session.aget("count", 0) + 1
    await request.session.aset("count", value)
    return HttpResponse(str(value))


async def asignin(request: HttpRequest) -> HttpResponse:
    await alogin(request, await User.objects.aget(username=request.POST["username"]))
    return HttpResponse("ok")


urlpatterns = [
    path("count", count),
    path("acount", acount),
    path("show", show),
    path("whoami", whoami),
    path("signin", signin),
    path("asignin", asignin),
    path("signout", signout),
    path("remember", remember),
]


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _this_modules_urls() -> Iterator[None]:
    # Django settings are per process and another module may have configured them
    # first: the views these tests call live here.
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A fresh SQLite store in tmp_path, installed as WEBSESSION_STORE for the test."""
    sqlite_store = SQLiteStore(tmp_path / "sessions.db")
    with override_settings(WEBSESSION_STORE=sqlite_store):
        yield sqlite_store
    sqlite_store.close()


def make_user() -> User:
    """A new user whose password is ``pw``."""
    return User.objects.create_user(f"user-{uuid.uuid4().hex[:12]}", password="pw")


def cookie(client: Client) -> str:
    return client.cookies["sessionid"].value


# -- Django's own backend tests --------------------------------------------------------------


def _django_session_tests() -> tuple[str, str] | str:
    """(source, filename) of the installed Django's tests/sessions_tests/tests.py, or why not."""
    version = django.get_version()
    member = "tests/sessions_tests/tests.py"
    with tempfile.TemporaryDirectory(prefix="websession-django-sdist-") as tmp:
        given = os.environ.get("WEBSESSION_DJANGO_SDIST")
        if given:
            sdist = Path(given)
        else:
            done = subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", f"django=={version}",
                    "--no-binary", ":all:", "--no-deps", "--no-cache-dir", "--quiet",
                    "-d", tmp,
                ],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            found = sorted(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not found:
                return (
                    f"pip download django=={version} (sdist) failed: {done.stderr.strip()[-500:]}"
                )
            sdist = found[0]
        with tarfile.open(sdist) as archive:
            for info in archive:
                if info.name.endswith("/" + member) and info.name.count("/") == 3:
                    extracted = archive.extractfile(info)
                    if extracted is not None:
                        return extracted.read().decode("utf-8"), f"{info.name} in {sdist.name}"
    return f"{sdist} holds no {member}"


def _load_mixin() -> type | str:
    """Django's SessionTestsMixin class, built from its source; or why it is not available."""
    found = _django_session_tests()
    if isinstance(found, str):
        return found
    source, filename = found
    tree = ast.parse(source, filename)
    # Its absolute imports and the mixin itself: the rest of the module defines Django's
    # own backends' test classes and imports a models module of Django's test project.
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.Import)
        or (isinstance(node, ast.ImportFrom) and node.level == 0)
        or (isinstance(node, ast.ClassDef) and node.name == "SessionTestsMixin")
    ]
    if not any(isinstance(node, ast.ClassDef) for node in keep):
        return f"{filename} defines no SessionTestsMixin"
    namespace: dict[str, Any] = {"__name__": "django_sessions_tests"}
    exec(compile(ast.Module(body=keep, type_ignores=[]), filename, "exec"), namespace)
    mixin: type = namespace["SessionTestsMixin"]
    return mixin


MIXIN = _load_mixin()

#: Django's tests this engine fails on purpose, and why.
EXPECTED_FAILURES: dict[str, str] = {}


def _engine_tests(store_factory: Callable[[type], Any]) -> type:
    """A TestCase running Django's SessionTestsMixin with the store ``store_factory`` makes."""
    if isinstance(MIXIN, str):
        reason = MIXIN

        class Unavailable(SimpleTestCase):
            def test_django_session_tests_available(self) -> None:
                if CI:
                    self.fail(reason)
                self.skipTest(reason)

        return Unavailable

    class EngineTests(MIXIN, SimpleTestCase):  # type: ignore[valid-type,misc]
        backend = SessionStore

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            cls.enterClassContext(override_settings(WEBSESSION_STORE=store_factory(cls)))

    for name in EXPECTED_FAILURES:
        setattr(EngineTests, name, unittest.expectedFailure(getattr(MIXIN, name)))
    return EngineTests


def _sqlite_store(cls: type) -> SQLiteStore:
    directory = tempfile.mkdtemp(prefix="websession-django-mixin-")
    store = SQLiteStore(Path(directory) / "sessions.db")
    cls.addClassCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
    cls.addClassCleanup(store.close)  # type: ignore[attr-defined]
    return store


def _redis_store(cls: type) -> Any:
    try:
        client = redis_client()
    except pytest.skip.Exception as exc:
        raise unittest.SkipTest(str(exc)) from None
    from websession.stores.redis import RedisStore

    prefix = f"{RUN_PREFIX}mixin:"
    store = RedisStore(REDIS_URL, prefix=prefix)
    cls.addClassCleanup(client.close)  # type: ignore[attr-defined]
    cls.addClassCleanup(delete_keys, client, prefix)  # type: ignore[attr-defined]
    cls.addClassCleanup(store.close)  # type: ignore[attr-defined]
    return store


DjangoSessionTestsOnSQLite = _engine_tests(_sqlite_store)
DjangoSessionTestsOnRedis = _engine_tests(_redis_store)
# Two names for one class otherwise: give each its own.
DjangoSessionTestsOnSQLite.__name__ = DjangoSessionTestsOnSQLite.__qualname__ = (
    "DjangoSessionTestsOnSQLite"
)
DjangoSessionTestsOnRedis.__name__ = DjangoSessionTestsOnRedis.__qualname__ = (
    "DjangoSessionTestsOnRedis"
)


def test_django_session_tests_were_found() -> None:
    """The mixin really runs (not silently absent) wherever it can be fetched."""
    if isinstance(MIXIN, str):
        if CI:
            pytest.fail(MIXIN)
        pytest.skip(MIXIN)
    names = [name for name in dir(MIXIN) if name.startswith("test_")]
    assert len(names) > 50
    assert "test_session_save_does_not_resurrect_session_logged_out_in_other_context" in names


# -- keys ------------------------------------------------------------------------------------


def test_session_keys_follow_djangos_rule_and_are_stored_hashed(store: SQLiteStore) -> None:
    assert SessionStore("1234567").session_key is None  # too short for Django too
    assert SessionStore("x" * 300).session_key is None  # never hash a huge cookie
    django_style = "abcdefghijklmnopqrstuvwxyz012345"  # Django's 32-character format
    presented = SessionStore(django_style)
    assert presented.load() == {}  # unknown to the store: not adopted
    assert presented.session_key is None
    session = SessionStore()
    session["a"] = 1
    session.save()
    assert is_valid_id(session.session_key)
    assert SessionStore(session.session_key).session_key == session.session_key
    # The store holds the hash, never the id.
    keys = [key for key, _entry in store.entries()]
    assert keys == [hash_id(session.session_key)]


def test_unknown_id_is_not_adopted(store: SQLiteStore) -> None:
    session = SessionStore("A" * 43)
    assert session.session_key == "A" * 43
    assert session.load() == {}
    assert session.session_key is None
    session["x"] = 1
    session.save()
    assert session.session_key != "A" * 43


# -- a real app under the test client ---------------------------------------------------------


def test_view_writes_and_reads_the_session(store: SQLiteStore) -> None:
    client = Client()
    assert [client.get("/count").content for _ in range(3)] == [b"1", b"2", b"3"]
    token = cookie(client)
    assert is_valid_id(token)
    assert client.get("/show").json() == {"count": 3}
    assert store.load(hash_id(token)) is not None
    # A stranger does not see it.
    assert Client().get("/count").content == b"1"


def test_read_only_request_writes_nothing(store: SQLiteStore) -> None:
    client = Client()
    client.get("/count")
    before = store.load(hash_id(cookie(client)))
    response = client.get("/show")
    assert "sessionid" not in response.cookies
    assert response.headers["Vary"] == "Cookie"
    after = store.load(hash_id(cookie(client)))
    assert before is not None
    assert after is not None
    assert after.version == before.version


@override_settings(
    SESSION_COOKIE_NAME="session",
    SESSION_COOKIE_AGE=600,
    SESSION_COOKIE_PATH="/app",
    SESSION_COOKIE_DOMAIN="example.test",
    SESSION_COOKIE_SECURE=True,
    SESSION_COOKIE_HTTPONLY=True,
    SESSION_COOKIE_SAMESITE="Strict",
)
def test_session_cookie_settings_are_honoured(store: SQLiteStore) -> None:
    before = time.time()
    response = Client().get("/count")
    morsel = response.cookies["session"]
    assert is_valid_id(morsel.value)
    assert morsel["max-age"] == 600
    assert morsel["path"] == "/app"
    assert morsel["domain"] == "example.test"
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    entry = store.load(hash_id(morsel.value))
    assert entry is not None
    # SESSION_COOKIE_AGE is the store's TTL too.
    assert before + 600 <= entry.expires <= time.time() + 600


def test_set_expiry_sets_the_store_ttl(store: SQLiteStore) -> None:
    client = Client()
    client.get("/count")
    client.get("/remember?seconds=30")
    assert client.cookies["sessionid"]["max-age"] == 30
    entry = store.load(hash_id(cookie(client)))
    assert entry is not None
    assert entry.expires == pytest.approx(time.time() + 30, abs=5)
    assert client.get("/show").json() == {"count": 1, "_session_expiry": 30}


def test_expire_at_browser_close(store: SQLiteStore) -> None:
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True, SESSION_COOKIE_AGE=900):
        client = Client()
        response = client.get("/count")
    assert response.cookies["sessionid"]["max-age"] == ""
    entry = store.load(hash_id(cookie(client)))
    assert entry is not None
    assert entry.expires == pytest.approx(time.time() + 900, abs=5)


def test_client_login_and_client_session(store: SQLiteStore) -> None:
    user = make_user()
    client = Client()
    session = client.session  # creates and saves a session, sets the cookie
    session["cart"] = ["apple"]
    session.save()
    before_login = cookie(client)
    assert client.login(username=user.username, password="pw") is True
    after_login = cookie(client)
    assert after_login != before_login
    assert store.load(hash_id(before_login)) is None
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session["cart"] == ["apple"]
    assert client.get("/whoami").content == user.username.encode()
    entry = store.load(hash_id(after_login))
    assert entry is not None
    assert entry.user_id == str(user.pk)
    client.logout()
    assert store.load(hash_id(after_login)) is None
    assert client.get("/whoami").content == b"-"


def test_force_login(store: SQLiteStore) -> None:
    user = make_user()
    client = Client()
    client.force_login(user)
    assert client.get("/whoami").content == user.username.encode()


def test_login_view_rotates_the_key_and_binds_the_user(store: SQLiteStore) -> None:
    user = make_user()
    client = Client()
    client.get("/count")
    anonymous = cookie(client)
    assert client.post("/signin", {"username": user.username}).content == b"ok"
    signed_in = cookie(client)
    assert signed_in != anonymous
    # The pre-login id is dead at once, and its data moved to the new one.
    assert store.load(hash_id(anonymous)) is None
    assert client.get("/count").content == b"2"
    entry = store.load(hash_id(signed_in))
    assert entry is not None
    assert entry.user_id == str(user.pk)
    assert [key for key, _ in store.entries(user_id=str(user.pk))] == [hash_id(signed_in)]
    # Someone replaying the old cookie gets a fresh, empty session.
    replay = Client()
    replay.cookies["sessionid"] = anonymous
    assert replay.get("/whoami").content == b"-"
    assert replay.get("/count").content == b"1"
    assert cookie(replay) not in (anonymous, signed_in)


def test_logout_view_destroys_the_session(store: SQLiteStore) -> None:
    user = make_user()
    client = Client()
    client.post("/signin", {"username": user.username})
    token = cookie(client)
    response = client.get("/signout")
    assert response.cookies["sessionid"].value == ""
    assert store.load(hash_id(token)) is None
    assert list(store.entries(user_id=str(user.pk))) == []


def test_session_deleted_meanwhile_is_not_resurrected(store: SQLiteStore) -> None:
    client = Client()
    client.get("/count")
    token = cookie(client)
    mine = SessionStore(token)
    mine["x"] = 1
    SessionStore(token).delete()  # a logout in another request
    with pytest.raises(UpdateError):
        mine.save()
    assert store.load(hash_id(token)) is None


def test_garbage_payload_logs_and_gives_an_empty_session(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    client.get("/count")
    token = cookie(client)
    key = hash_id(token)
    entry = store.load(key)
    assert entry is not None
    store.save(key, b"\x80garbage", expected_version=entry.version, ttl=600, meta=entry.meta)
    with caplog.at_level(logging.WARNING):
        assert client.get("/count").content == b"1"
    django_records = [r for r in caplog.records if r.name == "django.security.SuspiciousSession"]
    assert [r.getMessage() for r in django_records] == ["Session data corrupted"]
    assert any(r.name == "websession.security" for r in caplog.records)
    assert cookie(client) != token


def test_concurrent_requests_changing_different_keys_both_survive(store: SQLiteStore) -> None:
    first = SessionStore()
    first["shared"] = "start"
    first.save()
    token = first.session_key
    a, b = SessionStore(token), SessionStore(token)
    a["cart"] = ["apple"]
    b["theme"] = "dark"
    del b["shared"]
    a.save()
    b.save()  # conflicts with a's save, replays b's changes onto it
    assert SessionStore(token).load() == {"cart": ["apple"], "theme": "dark"}
    # b now holds what it saved, not its stale copy.
    assert dict(b.items()) == {"cart": ["apple"], "theme": "dark"}
    # The same key: the later commit wins, even when it writes the loaded value back.
    c, d = SessionStore(token), SessionStore(token)
    c["theme"] = "light"
    d["theme"] = "dark"
    c.save()
    d.save()
    assert SessionStore(token).load()["theme"] == "dark"
    entry = store.load(hash_id(token))
    assert entry is not None
    assert entry.version == 5


def test_cleared_session_overwrites_without_loading(store: SQLiteStore) -> None:
    session = SessionStore()
    session.update({"a": 1, "b": 2})
    session.save()
    other = SessionStore(session.session_key)
    other.clear()
    other["c"] = 3
    other.save()
    assert SessionStore(session.session_key).load() == {"c": 3}


def test_unchanged_save_only_extends_the_expiry(store: SQLiteStore) -> None:
    session = SessionStore()
    session["a"] = 1
    session.save()
    entry = store.load(hash_id(session.session_key))
    assert entry is not None
    again = SessionStore(session.session_key)
    assert again["a"] == 1
    again.save()  # what SESSION_SAVE_EVERY_REQUEST does
    after = store.load(hash_id(session.session_key))
    assert after is not None
    assert after.version == entry.version
    assert after.last_seen >= entry.last_seen


def test_oversized_session_names_its_largest_key(store: SQLiteStore) -> None:
    session = SessionStore()
    session["small"] = 1
    session["blob"] = "x" * (2 * 1024 * 1024)
    with pytest.raises(PayloadTooLarge, match="blob"):
        session.save()
    assert list(store.entries()) == []


def test_clearsessions_removes_expired_sessions_in_batches(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    sqlite_store = SQLiteStore(tmp_path / "sessions.db", clock=lambda: now[0])
    with override_settings(WEBSESSION_STORE=sqlite_store):
        meta = Meta(now[0], now[0])
        for i in range(2 * engine.CLEAR_BATCH + 5):
            sqlite_store.save(
                hash_id(f"expired-{i}"), b"{}", expected_version=None, ttl=10, meta=meta
            )
        live = SessionStore()
        live["keep"] = True
        live.save()
        now[0] += 60
        call_command("clearsessions")
    sqlite_store.close()
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM websession_sessions").fetchone()
    assert rows == 1
    assert live.session_key is not None


def test_async_session_methods_and_alogin(store: SQLiteStore) -> None:
    user = make_user()

    async def scenario() -> list[bytes]:
        client = AsyncClient()
        seen = [(await client.get("/acount")).content for _ in range(2)]
        before = client.cookies["sessionid"].value
        await client.post("/asignin", {"username": user.username})
        assert client.cookies["sessionid"].value != before
        seen.append((await client.get("/acount")).content)
        seen.append((await client.get("/whoami")).content)
        return seen

    assert asyncio.run(scenario()) == [b"1", b"2", b"3", user.username.encode()]
    assert [entry.user_id for _key, entry in store.entries()] == [str(user.pk)]


# -- the store setting -----------------------------------------------------------------------


def test_store_url_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    with override_settings(WEBSESSION_STORE=url):
        assert isinstance(engine.get_store(), SQLiteStore)
        assert engine.get_store() is engine.get_store()
        session = SessionStore()
        session["a"] = 1
        session.save()
        assert SessionStore(session.session_key).load() == {"a": 1}
    assert (tmp_path / "by-url.db").exists()


def test_default_store_is_embedded_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with override_settings():
        from django.conf import settings

        del settings.WEBSESSION_STORE
        store = engine.get_store()
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "websession.db")
        store.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cookie://", "cookie store"),
        ("nonsense", "not a store URL"),
        (object(), "not a session store"),
    ],
)
def test_unusable_store_settings_are_refused(value: object, message: str) -> None:
    with (
        override_settings(WEBSESSION_STORE=value),
        pytest.raises(SessionConfigError, match=message),
    ):
        SessionStore().save()


def test_async_store_is_refused() -> None:
    from websession.stores import AsyncMemoryStore

    with (
        override_settings(WEBSESSION_STORE=AsyncMemoryStore()),
        pytest.raises(SessionConfigError, match="async store"),
    ):
        SessionStore().save()


def test_memory_store_object(store: SQLiteStore) -> None:
    memory = MemoryStore()
    with override_settings(WEBSESSION_STORE=memory):
        client = Client()
        client.get("/count")
        assert len(memory) == 1
    assert list(store.entries()) == []


# -- Redis -----------------------------------------------------------------------------------


def test_app_on_redis() -> None:
    client_redis = redis_client()
    from websession.stores.redis import RedisStore

    prefix = f"{RUN_PREFIX}app:"
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        with override_settings(WEBSESSION_STORE=redis_store):
            user = make_user()
            client = Client()
            assert [client.get("/count").content for _ in range(2)] == [b"1", b"2"]
            assert client.login(username=user.username, password="pw")
            token = cookie(client)
            assert client.get("/count").content == b"3"
            entry = redis_store.load(hash_id(token))
            assert entry is not None
            assert entry.user_id == str(user.pk)
            assert client_redis.exists(prefix.encode() + hash_id(token).encode())

            async def async_count() -> bytes:
                async_client = AsyncClient()
                async_client.cookies["sessionid"] = token
                return (await async_client.get("/acount")).content

            assert asyncio.run(async_count()) == b"4"
            call_command("clearsessions")  # native TTL: nothing to do, and no error
            client.logout()
            assert redis_store.load(hash_id(token)) is None
    finally:
        delete_keys(client_redis, prefix)
        redis_store.close()
        client_redis.close()


# -- the example -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_example_app_serves_sessions_over_http(tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    env = dict(os.environ, WEBSESSION_STORE=f"sqlite:///{tmp_path / 'sessions.db'}")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode() if server.stdout else ""
                    pytest.fail(f"the example did not start:\n{output}")
                time.sleep(0.1)
        with httpx.Client(base_url=base) as browser:
            pages = [browser.get("/").json() for _ in range(3)]
            assert [page["count"] for page in pages] == [1, 2, 3]
            anonymous = browser.cookies["sessionid"]
            credentials = {"username": "demo", "password": "demo"}
            # Django's CSRF token lives in the session (CSRF_USE_SESSIONS).
            assert browser.post("/login", data=credentials).status_code == 403
            signed_in = browser.post(
                "/login", data=credentials, headers={"X-CSRFToken": pages[-1]["csrf"]}
            ).json()
            assert signed_in["user"] == "demo"
            assert browser.cookies["sessionid"] != anonymous
            page = browser.get("/").json()
            assert (page["count"], page["user"]) == (4, "demo")
            out = browser.post("/logout", headers={"X-CSRFToken": page["csrf"]})
            assert out.json()["user"] is None
            assert browser.get("/").json()["count"] == 1
        assert (tmp_path / "sessions.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()
