"""The ``websession`` command, run on SQLite stores filled through the WSGI middleware."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

import click
import httpx
import pytest
from click.testing import CliRunner, Result

import websession
from websession.cli import main, make_cli
from websession.codecs import Payload, encode_payload
from websession.ids import handle_of, hash_id
from websession.stores import Meta, SQLiteStore
from websession.wsgi import SessionMiddleware, get_session


def tiny_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Signs in ``?user=``, stores a note and a flash, and answers with the CSRF token."""
    session = get_session(environ)
    user = parse_qs(environ.get("QUERY_STRING", "")).get("user", [""])[0]
    if user:
        session.login(user)
    session["note"] = f"hello from {user or 'a guest'}"
    session.flash("saved", "info")
    token = session.csrf_token()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [token.encode()]


class Browser:
    """One session created through the middleware: its id, store key, handle and CSRF token."""

    def __init__(self, store_url: str, user: str | None = None, agent: str = "pytest-agent/1.0"):
        app = SessionMiddleware(tiny_app, store=store_url)
        with httpx.Client(
            transport=httpx.WSGITransport(app=app),
            base_url="http://testserver",
            headers={"User-Agent": agent},
        ) as client:
            response = client.get("/", params={"user": user} if user else None)
            response.raise_for_status()
            self.session_id = client.cookies["session"]
        close = getattr(app.store, "close", None)
        if close is not None:
            close()
        self.csrf_token = response.text
        self.key = hash_id(self.session_id)
        self.handle = handle_of(self.key)


@pytest.fixture(autouse=True)
def _no_store_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSESSION_STORE", raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def store(db_path: Path) -> Iterable[SQLiteStore]:
    store = SQLiteStore(db_path)
    store.delete_expired()  # creates the database file
    yield store
    store.close()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(make_cli(), list(args), env=env, catch_exceptions=False)


def put(
    store: SQLiteStore,
    key: str,
    *,
    ttl: float = 600,
    user_id: str | None = None,
    payload: bytes | None = None,
    user_agent: str | None = None,
) -> None:
    now = time.time()
    store.save(
        key,
        encode_payload(Payload(d={"n": 1})) if payload is None else payload,
        expected_version=None,
        ttl=ttl,
        meta=Meta(now, now, user_id, "192.0.2.7", user_agent),
    )


def assert_user_error(result: Result, *phrases: str) -> None:
    """Exit status 2, one ``Error:`` line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for phrase in phrases:
        assert phrase in lines[0]
    assert "Traceback" not in result.output


# -- version, keys, missing extras ------------------------------------------------------


def test_version_in_a_real_process() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "websession.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"websession, version {websession.__version__}"


def test_keys_new_prints_a_fresh_256_bit_key() -> None:
    first, second = run("keys", "new"), run("keys", "new")
    assert first.exit_code == 0
    key = first.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    assert key != second.stdout.strip()


def test_main_without_click_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "click", None)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 1
    assert "pip install 'websession[cli]'" in capsys.readouterr().err


def test_main_runs_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["keys", "new"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out.strip()) == 43


# -- ls ------------------------------------------------------------------------------------


def test_ls_lists_live_sessions_with_their_metadata(store_url: str) -> None:
    alice = Browser(store_url, "alice", agent="pytest-agent/1.0")
    guest = Browser(store_url)
    result = run("ls", "--store", store_url)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert set(rows) == {alice.handle, guest.handle}
    assert " alice " in rows[alice.handle]
    assert "127.0.0.1" in rows[alice.handle]
    assert rows[alice.handle].endswith("pytest-agent/1.0")
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[alice.handle])) == 3
    assert result.stdout.splitlines()[0].split()[:2] == ["Handle", "User"]
    assert result.stdout.splitlines()[-1] == "2 sessions"
    # Neither the session id nor anything derived from it beyond the handle is printed.
    assert alice.session_id not in result.output
    assert alice.key not in result.output


def test_ls_filters_by_user_and_limits(store_url: str) -> None:
    alices = {Browser(store_url, "alice").handle for _ in range(3)}
    Browser(store_url, "bob")
    result = run("ls", "--store", store_url, "--user", "alice")
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:-1]}
    assert listed == alices
    limited = run("ls", "--store", store_url, "--user", "alice", "--limit", "2")
    assert len(limited.stdout.splitlines()[1:-1]) == 2
    assert "limit reached" in limited.stdout
    nobody = run("ls", "--store", store_url, "--user", "carol")
    assert nobody.exit_code == 0
    assert nobody.stdout.strip() == "No live sessions for user 'carol'."


def test_ls_reads_the_store_from_the_environment(store_url: str) -> None:
    browser = Browser(store_url, "alice")
    result = run("ls", env={"WEBSESSION_STORE": store_url})
    assert result.exit_code == 0
    assert browser.handle in result.stdout


def test_ls_replaces_control_characters_from_the_outside_world(store: SQLiteStore) -> None:
    put(store, "ab" * 32, user_id="eve\x1b[2J", user_agent="evil\x1b]0;pwned\x07agent")
    result = run("ls", "--store", f"sqlite:///{store.path}")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert "evil\N{REPLACEMENT CHARACTER}]0;pwned" in result.stdout


# -- show ------------------------------------------------------------------------------------


def test_show_prints_metadata_and_data_but_never_the_csrf_token(store_url: str) -> None:
    browser = Browser(store_url, "alice")
    result = run("show", browser.handle, "--store", store_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    fields = {line[:12].strip(): line[12:] for line in out.splitlines() if line[:1].isupper()}
    assert fields["Handle"] == browser.handle
    assert fields["User"] == "alice"
    assert fields["IP"] == "127.0.0.1"
    assert re.fullmatch(r"\S+ \S+ UTC \(in 29m\)", fields["Expires"])
    assert fields["CSRF token"] == "present (not shown)"
    assert "{'note': 'hello from alice'}" in out
    assert "[info] saved" in out
    assert browser.csrf_token not in result.output
    assert browser.session_id not in result.output


def test_show_accepts_any_unique_prefix_and_refuses_ambiguous_ones(store: SQLiteStore) -> None:
    url = f"sqlite:///{store.path}"
    put(store, "abc0" + "1" * 60)
    put(store, "abc1" + "2" * 60)
    assert run("show", "abc0", "--store", url).exit_code == 0
    assert_user_error(run("show", "abc", "--store", url), "'abc'", "several sessions")
    assert_user_error(run("show", "abc2", "--store", url), "no live session", "'abc2'")
    assert_user_error(run("show", "not-hex!", "--store", url), "not a session handle")


def test_show_does_not_find_expired_sessions(store: SQLiteStore) -> None:
    put(store, "cd" * 32, ttl=0.05)
    time.sleep(0.1)
    assert_user_error(run("show", "cdcd", "--store", f"sqlite:///{store.path}"), "no live")


def test_show_reports_an_undecodable_payload(store: SQLiteStore) -> None:
    put(store, "ef" * 32, payload=b"\xff not json")
    result = run("show", "efef", "--store", f"sqlite:///{store.path}")
    assert result.exit_code == 0
    assert "cannot be decoded" in result.stdout
    assert "Handle      efefefefefef" in result.stdout


# -- revoke ----------------------------------------------------------------------------------


def test_revoke_one_session_ends_it_for_the_browser(store_url: str) -> None:
    browser = Browser(store_url, "alice")
    other = Browser(store_url, "alice")
    result = run("revoke", browser.handle, "--store", store_url)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"Revoked 1 session ({browser.handle})."
    listed = run("ls", "--store", store_url).stdout
    assert browser.handle not in listed
    assert other.handle in listed
    # The revoked id no longer loads: the middleware hands the browser a new, empty session.
    app = SessionMiddleware(lambda environ, start: _user_of(environ, start), store=store_url)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://x") as client:
        client.cookies.set("session", browser.session_id)
        assert client.get("/").text == "None"
        client.cookies.set("session", other.session_id)
        assert client.get("/").text == "alice"
    app.store.close()


def _user_of(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(get_session(environ).user_id).encode()]


def test_revoke_all_of_a_users_sessions_but_one(store_url: str) -> None:
    alices = [Browser(store_url, "alice") for _ in range(3)]
    bob = Browser(store_url, "bob")
    keep = alices[1].handle
    result = run("revoke", "--user", "alice", "--keep", keep[:8], "--store", store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Revoked 2 sessions of user 'alice', kept {keep}."
    listed = run("ls", "--store", store_url).stdout
    assert keep in listed
    assert bob.handle in listed
    assert alices[0].handle not in listed
    assert alices[2].handle not in listed


def test_revoke_all_of_a_users_sessions(store_url: str) -> None:
    for _ in range(2):
        Browser(store_url, "alice")
    result = run("revoke", "--user", "alice", "--store", store_url)
    assert result.stdout.strip() == "Revoked 2 sessions of user 'alice'."
    assert run("ls", "--store", store_url, "--user", "alice").stdout.startswith("No live")


def test_revoke_keep_must_be_one_of_the_users_sessions(store_url: str) -> None:
    Browser(store_url, "alice")
    bob = Browser(store_url, "bob")
    result = run("revoke", "--user", "alice", "--keep", bob.handle, "--store", store_url)
    assert_user_error(result, "no live session of user 'alice'")
    assert "2 sessions" in run("ls", "--store", store_url).stdout


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ([], "give the HANDLE"),
        (["abc", "--user", "alice"], "not both"),
        (["abc", "--keep", "abd"], "--keep only"),
        (["0123456789ab"], "no live session"),
    ],
)
def test_revoke_usage_errors(store: SQLiteStore, args: list[str], phrase: str) -> None:
    put(store, "12" * 32)
    assert_user_error(run("revoke", *args, "--store", f"sqlite:///{store.path}"), phrase)
    assert len(list(store.entries())) == 1


# -- the per-user index ------------------------------------------------------------------


@pytest.fixture
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes listing all sessions fail, except to resolve a handle (a key-prefix lookup)."""
    entries = SQLiteStore.entries

    def only_by_prefix(self: SQLiteStore, *, prefix: str = "", **options: Any) -> Any:
        if not prefix or options.get("user_id") is not None:
            raise AssertionError("the CLI scanned every session instead of the user's index")
        return entries(self, prefix=prefix, **options)

    monkeypatch.setattr(SQLiteStore, "entries", only_by_prefix)


def test_ls_user_reads_the_users_index_only(store_url: str, no_scan: None) -> None:
    laptop = Browser(store_url, "alice", agent="Firefox/128 (laptop)")
    phone = Browser(store_url, "alice", agent="Safari/17 (phone)")
    Browser(store_url, "bob")
    result = run("ls", "--user", "alice", "--store", store_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Handle", "User", "Created", "(UTC)", "Last", "seen", "(UTC)", "Expires", "(UTC)",
        "IP", "User", "agent",
    ]  # fmt: skip
    assert lines[1].startswith(phone.handle)  # most recently seen first
    assert "Safari/17 (phone)" in lines[1]
    assert lines[2].startswith(laptop.handle)
    assert "Firefox/128 (laptop)" in lines[2]
    assert lines[3] == "2 sessions"
    for browser in (laptop, phone):
        assert browser.session_id not in result.stdout
        assert browser.key not in result.stdout  # the handle only, never the whole hash
    limited = run("ls", "--user", "alice", "--limit", "1", "--store", store_url).stdout
    assert phone.handle in limited
    assert laptop.handle not in limited


def test_revoke_user_keep_uses_the_index(store_url: str, no_scan: None) -> None:
    alices = [Browser(store_url, "alice") for _ in range(3)]
    result = run("revoke", "--user", "alice", "--keep", alices[0].handle, "--store", store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"Revoked 2 sessions of user 'alice', kept {alices[0].handle}."
    )
    listed = run("ls", "--user", "alice", "--store", store_url).stdout
    assert alices[0].handle in listed
    assert "1 session" in listed


def test_revoke_by_handle_uses_the_store_revoke(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = Browser(store_url, "alice")
    revoked: list[str] = []
    revoke = SQLiteStore.revoke

    def recording(self: SQLiteStore, key: str) -> bool:
        revoked.append(key)
        return revoke(self, key)

    monkeypatch.setattr(SQLiteStore, "revoke", recording)
    result = run("revoke", browser.handle, "--store", store_url)
    assert result.stdout.strip() == f"Revoked 1 session ({browser.handle})."
    assert revoked == [browser.key]
    assert run("ls", "--user", "alice", "--store", store_url).stdout.startswith("No live")


def test_stores_without_the_index_fall_back_to_listing(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A protocol no store implements stands for a store without the index (removing the
    # methods would not do: isinstance() caches what it learnt about a class).
    @runtime_checkable
    class NoStoreHasThis(Protocol):
        def no_store_has_this(self) -> None: ...

    monkeypatch.setattr("websession.cli.UserIndex", NoStoreHasThis)
    monkeypatch.setattr(SQLiteStore, "revoke_user", None)
    alices = [Browser(store_url, "alice") for _ in range(2)]
    Browser(store_url, "bob")
    listed = run("ls", "--user", "alice", "--store", store_url).stdout
    assert all(a.handle in listed for a in alices)
    assert "2 sessions" in listed
    result = run("revoke", "--user", "alice", "--keep", alices[1].handle, "--store", store_url)
    assert result.stdout.strip() == f"Revoked 1 session of user 'alice', kept {alices[1].handle}."
    assert run("revoke", alices[1].handle, "--store", store_url).exit_code == 0
    assert run("ls", "--user", "alice", "--store", store_url).stdout.startswith("No live")


def test_revoke_user_errors_stay_one_line(store_url: str) -> None:
    Browser(store_url, "alice")
    assert_user_error(
        run("revoke", "--user", "nobody", "--keep", "abc", "--store", store_url),
        "no live session of user 'nobody'",
    )
    assert_user_error(
        run("revoke", "--user", "alice", "--keep", "xyz", "--store", store_url),
        "not a session handle",
    )


# -- gc ------------------------------------------------------------------------------------


def test_gc_removes_expired_sessions_in_batches(store: SQLiteStore) -> None:
    url = f"sqlite:///{store.path}"
    for i in range(5):
        put(store, f"{i:064x}", ttl=0.05)
    put(store, "f" * 64)  # live
    time.sleep(0.1)
    result = run("gc", "--store", url, "--batch", "2")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"Removed 5 expired sessions in 3 batches \(\d+\.\d\d s\)\.", result.stdout.strip()
    )
    assert store.delete_expired() == 0
    assert [key for key, _ in store.entries()] == ["f" * 64]
    again = run("gc", "--store", url)
    assert again.stdout.startswith("Removed 0 expired sessions in 1 batch ")


def test_gc_stops_at_max(store: SQLiteStore) -> None:
    url = f"sqlite:///{store.path}"
    for i in range(5):
        put(store, f"{i:064x}", ttl=0.05)
    time.sleep(0.1)
    assert run("gc", "--store", url, "--batch", "2", "--max", "3").stdout.startswith(
        "Removed 3 expired sessions in 2 batches"
    )
    assert run("gc", "--store", url).stdout.startswith("Removed 2 expired sessions")


def test_gc_has_nothing_to_do_for_cookies_or_native_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    cookies = run("gc", "--store", "cookie://")
    assert cookies.exit_code == 0
    assert "nothing to collect" in cookies.stdout

    class NativeTTLStore:
        native_ttl = True

        def delete_expired(self, limit: int = 1000) -> int:
            raise AssertionError("a store with native TTL must not be swept")

    monkeypatch.setattr("websession._clitools.store_from_url", lambda url: NativeTTLStore())
    native = run("gc", "--store", "redis://localhost")
    assert native.exit_code == 0
    assert native.stdout.strip() == (
        "NativeTTLStore expires sessions itself (native TTL); there is nothing to do."
    )


_GC_APP = """
import asyncio

from websession.asgi import SessionMiddleware as ASGIMiddleware
from websession.stores import SQLiteStore
from websession.wsgi import SessionMiddleware

expired = []


def app(environ, start_response):
    start_response("200 OK", [])
    return [b""]


async def asgi_app(scope, receive, send):
    pass


def on_expire(event):
    expired.append((event.handle, event.user_id))


async def on_expire_async(event):
    await asyncio.sleep(0)
    expired.append((event.handle, event.user_id))


application = SessionMiddleware(app, store=SQLiteStore({path!r}), on_expire=on_expire)
asgi = ASGIMiddleware(asgi_app, store=SQLiteStore({path!r}), on_expire=on_expire_async)
not_a_middleware = app
"""


@pytest.mark.parametrize("name", ["application", "asgi"])
def test_gc_through_the_app_runs_its_on_expire_hook(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    module = f"gc_app_{name}"
    (tmp_path / f"{module}.py").write_text(_GC_APP.format(path=str(store.path)))
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in range(3):
        put(store, f"{i:064x}", ttl=0.05, user_id=f"user-{i}")
    put(store, "f" * 64)  # live
    time.sleep(0.1)
    result = run("gc", "--app", f"{module}:{name}", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Removed 3 expired sessions in 2 batches")
    hooked = sys.modules[module].expired
    assert sorted(hooked) == [(handle_of(f"{i:064x}"), f"user-{i}") for i in range(3)]
    assert [key for key, _ in store.entries()] == ["f" * 64]


def test_gc_app_errors_say_what_to_give(store: SQLiteStore, tmp_path: Path) -> None:
    (tmp_path / "gc_app_errors.py").write_text(_GC_APP.format(path=str(store.path)))
    sys.path.insert(0, str(tmp_path))
    try:
        wrong = run("gc", "--app", "gc_app_errors:not_a_middleware")
        assert wrong.exit_code == 2
        assert "not a websession SessionMiddleware" in wrong.output
        missing = run("gc", "--app", "no_such_module_here:app")
        assert missing.exit_code == 2
        assert "cannot import 'no_such_module_here'" in missing.output
        shape = run("gc", "--app", "gc_app_errors")
        assert shape.exit_code == 2
        assert "MODULE:NAME" in shape.output
        both = run("gc", "--app", "gc_app_errors:application", "--store", "sqlite:///x.db")
        assert both.exit_code == 2
        assert "not both" in both.output
    finally:
        sys.path.remove(str(tmp_path))


# -- stats and demo ------------------------------------------------------------------------


def test_stats_counts_sessions_and_users(store_url: str) -> None:
    Browser(store_url, "alice")
    Browser(store_url, "alice")
    Browser(store_url, "bob")
    Browser(store_url)
    result = run("stats", "--store", store_url)
    counts = {
        line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
        for line in result.stdout.splitlines()
        if not line.startswith("Oldest")
    }
    assert counts == {
        "Live sessions": "4",
        "Signed in": "3",
        "Anonymous": "1",
        "Distinct users": "2",
    }


def test_demo_command_serves_on_its_own_store(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        "websession.demo.app.serve", lambda host, port, url: calls.append((host, port, url))
    )
    # The demo ignores $WEBSESSION_STORE: it must never add its tables to a real store.
    result = run("demo", env={"WEBSESSION_STORE": "sqlite:///production.db"})
    assert result.exit_code == 0
    assert calls == [("127.0.0.1", 8000, "sqlite:///websession-demo.db")]
    run("demo", "--host", "::1", "--port", "9000", "--store", "sqlite:///x.db")
    assert calls[1] == ("::1", 9000, "sqlite:///x.db")


def test_demo_command_needs_an_sqlite_store() -> None:
    assert_user_error(run("demo", "--store", "memory://"), "sqlite:///", "'memory://'")


def test_demo_command_reports_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(host: str, port: int, url: str) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr("websession.demo.app.serve", busy)
    assert_user_error(run("demo"), "cannot start the demo", "Address already in use")


# -- bad stores ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ls"], ["show", "abc"], ["revoke", "abc"], ["gc"]])
@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("bogus://somewhere", "unknown store URL scheme 'bogus'"),
        ("sessions.db", "not a store URL"),
        ("sqlite://host/x.db", "three slashes"),
    ],
)
def test_bad_store_urls_are_one_line_errors(command: list[str], url: str, phrase: str) -> None:
    assert_user_error(run(*command, "--store", url), phrase)


def test_a_missing_database_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    assert_user_error(run("ls", "--store", f"sqlite:///{missing}"), "no session database")
    assert not missing.exists()
    assert_user_error(run("gc", "--store", f"file:///{tmp_path / 'nodir'}"), "no session directory")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"this is not an SQLite database, just some text " * 100)
    assert_user_error(run("ls", "--store", f"sqlite:///{bogus}"), "failed")


@pytest.mark.parametrize("command", [["ls"], ["show", "abc"], ["revoke", "abc"], ["stats"]])
def test_cookie_store_cannot_be_listed(command: list[str]) -> None:
    assert_user_error(run(*command, "--store", "cookie://"), "cookie://", "browsers")


def test_file_store_works_too(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'sessions'}"
    browser = Browser(url, "alice")
    assert browser.handle in run("ls", "--store", url).stdout
    assert run("revoke", "--user", "alice", "--store", url).stdout.startswith("Revoked 1 ")
    assert run("ls", "--store", url).stdout.strip() == "No live sessions."


def test_help_lists_every_command() -> None:
    result = run("--help")
    listing = result.stdout.split("Commands:")[1]
    commands = set(re.findall(r"^  (\w+)", listing, re.MULTILINE))
    assert commands == {"db", "demo", "gc", "keys", "ls", "migrate", "revoke", "show", "stats"}
    assert isinstance(make_cli(), click.Group)
