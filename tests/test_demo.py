"""The demo shop, driven like a browser: over a real HTTP server and through httpx's WSGI app."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from websession import SessionConfigError
from websession.demo import make_app, make_server
from websession.ids import handle_of
from websession.stores import SQLiteStore

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "demo.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@contextmanager
def browser_on_new_app(db_url: str, base_url: str = "http://testserver") -> Iterator[httpx.Client]:
    """A client of a freshly built demo app (what a server restart gives), closed afterwards."""
    app = make_app(db_url)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=base_url) as client:
            yield client
    finally:
        app.store.close()


@pytest.fixture
def client(db_url: str) -> Iterator[httpx.Client]:
    with browser_on_new_app(db_url) as client:
        yield client


@pytest.fixture
def server_url(db_url: str) -> Iterator[str]:
    """The demo on a real threaded wsgiref server on a free port."""
    server = make_server("127.0.0.1", 0, make_app(db_url), log_requests=False)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def csrf_of(response: httpx.Response) -> str:
    match = _CSRF_RE.search(response.text)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


def session_cookie(response: httpx.Response) -> str | None:
    """The raw Set-Cookie header for the session cookie, if the response sets one."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("session="):
            return header
    return None


ALICE = ("alice@example.com", "wonderland")


def login(client: httpx.Client, email: str = ALICE[0], password: str = ALICE[1]) -> httpx.Response:
    token = csrf_of(client.get("/login"))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def greeting(response: httpx.Response) -> str:
    match = re.search(r"<h1>(Hello, [^<]*)</h1>", response.text)
    assert match is not None, "no greeting on the page"
    return match.group(1)


def test_guest_is_greeted_over_a_real_server_and_nothing_is_stored(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as browser:
        response = browser.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert greeting(response) == "Hello, Guest!"
    # A guest who never needed a form has an empty session, and empty sessions are not stored.
    assert session_cookie(response) is None


def test_login_page_shows_the_demo_credentials(client: httpx.Client) -> None:
    page = client.get("/login").text
    assert "alice@example.com" in page
    assert "wonderland" in page


@pytest.mark.parametrize(
    ("email", "password"),
    [("alice@example.com", "not-the-password"), ("nobody@example.com", "wonderland")],
)
def test_wrong_credentials_rerender_the_form_with_an_error(
    client: httpx.Client, email: str, password: str
) -> None:
    response = login(client, email, password)
    assert response.status_code == 400
    assert "Wrong email or password." in response.text
    assert f'value="{email}"' in response.text
    assert greeting(client.get("/")) == "Hello, Guest!"


def test_correct_login_greets_alice_and_shows_the_flash_once(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as browser:
        response = login(browser)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        first = browser.get("/")
        second = browser.get("/")
    assert greeting(first) == "Hello, Alice!"
    assert "Welcome back, Alice!" in first.text
    assert greeting(second) == "Hello, Alice!"
    assert "Welcome back" not in second.text


def test_session_cookie_is_httponly_and_samesite_lax(client: httpx.Client) -> None:
    header = session_cookie(client.get("/login"))
    assert header is not None
    attributes = [part.strip().lower() for part in header.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back


def test_pages_are_never_cached_and_vary_on_the_cookie(client: httpx.Client) -> None:
    login(client)
    for path in ("/", "/cart", "/session", "/devices"):
        response = client.get(path)
        assert response.status_code == 200
        # No shared cache or browser history keeps a signed-in page (OWASP: web content caching).
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["vary"] == "Cookie"


def test_session_cookie_is_secure_over_https(db_url: str) -> None:
    with browser_on_new_app(db_url, "https://testserver") as browser:
        header = session_cookie(browser.get("/login"))
    assert header is not None
    assert "secure" in [part.strip().lower() for part in header.split(";")]


def test_login_rotates_the_session_id_and_the_old_id_is_dead(
    client: httpx.Client, db_url: str
) -> None:
    client.get("/login")
    before = client.cookies["session"]
    response = login(client)
    after = client.cookies["session"]
    assert session_cookie(response) is not None
    assert after != before
    # Someone holding the pre-login id (session fixation) gets nothing from it.
    with browser_on_new_app(db_url) as attacker:
        attacker.cookies.set("session", before)
        assert greeting(attacker.get("/")) == "Hello, Guest!"


def add_to_cart(client: httpx.Client, product: str) -> httpx.Response:
    token = csrf_of(client.get("/cart"))
    return client.post("/cart/add", data={"product": product, "csrf_token": token})


def cart_quantities(response: httpx.Response) -> dict[str, int]:
    rows = re.findall(r"<tr><td>([^<]+)</td><td class='num'>(\d+)</td>", response.text)
    return {name: int(quantity) for name, quantity in rows}


def test_cart_survives_a_restart_of_the_app(client: httpx.Client, db_url: str) -> None:
    assert add_to_cart(client, "tea").status_code == 303
    add_to_cart(client, "tea")
    add_to_cart(client, "mug")
    cookie = client.cookies["session"]

    # A brand-new app object on the same database file: what a server restart does.
    with browser_on_new_app(db_url) as browser:
        browser.cookies.set("session", cookie)
        page = browser.get("/cart")
        assert cart_quantities(page) == {"Green tea, 100 g": 2, "Stoneware mug": 1}
        assert "Cart (3)" in page.text
        token = csrf_of(page)
        browser.post("/cart/remove", data={"product": "tea", "csrf_token": token})
        assert cart_quantities(browser.get("/cart")) == {
            "Green tea, 100 g": 1,
            "Stoneware mug": 1,
        }


def test_adding_an_unknown_product_is_a_400(client: httpx.Client) -> None:
    response = add_to_cart(client, "caviar")
    assert response.status_code == 400
    assert cart_quantities(client.get("/cart")) == {}


def test_session_page_shows_created_last_seen_expiry_and_handle(
    client: httpx.Client, db_path: Path
) -> None:
    fresh = client.get("/session").text
    assert "not stored" in fresh

    login(client)
    page = client.get("/session").text
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page))
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(stamp + r" \(just now\)", rows["Created"])
    assert re.fullmatch(stamp + r" \(just now\)", rows["Last seen"])
    assert re.fullmatch(stamp + r" \(in 29 minutes\)", rows["Expires"])
    assert rows["User"] == "Alice &lt;alice@example.com&gt; (id 1)"
    store = SQLiteStore(db_path)
    try:
        keys = [key for key, _ in store.entries(user_id="1")]
    finally:
        store.close()
    assert [handle_of(key) for key in keys] == [rows["Handle"]]


def test_logout_flashes_once_and_returns_to_guest(client: httpx.Client, db_path: Path) -> None:
    login(client)
    signed_in = client.cookies["session"]
    token = csrf_of(client.get("/"))
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    first = client.get("/")
    assert "You have been signed out." in first.text
    assert greeting(first) == "Hello, Guest!"
    assert "You have been signed out." not in client.get("/").text
    assert client.cookies.get("session") != signed_in
    store = SQLiteStore(db_path)
    try:
        assert list(store.entries(user_id="1")) == []
    finally:
        store.close()


@pytest.mark.parametrize("token", [None, "", "forged-token"])
@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/cart/add", {"product": "tea"}),
        ("/login", {"email": "alice@example.com", "password": "wonderland"}),
        ("/logout", {}),
    ],
)
def test_post_without_the_right_csrf_token_is_forbidden(
    client: httpx.Client, path: str, form: dict[str, str], token: str | None
) -> None:
    client.get("/login")  # the browser has a session with a token, just not in this form
    data = dict(form)
    if token is not None:
        data["csrf_token"] = token
    response = client.post(path, data=data)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert greeting(client.get("/")) == "Hello, Guest!"
    assert cart_quantities(client.get("/cart")) == {}


def test_post_from_a_browser_without_a_session_is_forbidden(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as browser:
        response = browser.post("/cart/add", data={"product": "tea", "csrf_token": "x" * 43})
    assert response.status_code == 403


def signup(client: httpx.Client, name: str, email: str, password: str) -> httpx.Response:
    token = csrf_of(client.get("/login"))
    return client.post(
        "/signup", data={"name": name, "email": email, "password": password, "csrf_token": token}
    )


def test_signup_creates_an_account_that_can_sign_in_again(
    client: httpx.Client, db_path: Path
) -> None:
    response = signup(client, "Bob", "bob@example.com", "correct horse")
    assert response.status_code == 303
    home = client.get("/")
    assert greeting(home) == "Hello, Bob!"
    assert "Welcome, Bob!" in home.text

    client.post("/logout", data={"csrf_token": csrf_of(home)})
    assert greeting(client.get("/")) == "Hello, Guest!"
    assert login(client, "bob@example.com", "correct horse").status_code == 303
    assert greeting(client.get("/")) == "Hello, Bob!"

    with closing(sqlite3.connect(db_path)) as conn:
        (stored,) = conn.execute(
            "SELECT password FROM demo_users WHERE email = ?", ("bob@example.com",)
        ).fetchone()
    assert stored.startswith("scrypt$")
    assert "correct horse" not in stored


@pytest.mark.parametrize(
    ("name", "email", "password", "error"),
    [
        ("Alice Again", "ALICE@example.com", "password123", "exists already"),
        ("Carol", "carol@example.com", "short", "at least 8 characters"),
        ("Carol", "not-an-email", "password123", "valid email"),
        ("   ", "carol@example.com", "password123", "Enter your name"),
    ],
)
def test_signup_errors_rerender_the_form(
    client: httpx.Client, name: str, email: str, password: str, error: str
) -> None:
    response = signup(client, name, email, password)
    assert response.status_code == 400
    assert error in response.text
    assert greeting(client.get("/")) == "Hello, Guest!"


def test_user_supplied_text_is_escaped(client: httpx.Client) -> None:
    signup(client, "<script>alert(1)</script>", "mallory@example.com", "password123")
    page = client.get("/").text
    assert "<script>" not in page
    assert "Hello, &lt;script&gt;alert(1)&lt;/script&gt;!" in page


def test_unknown_page_and_wrong_method(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    response = client.get("/logout")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_make_app_needs_somewhere_to_keep_users(tmp_path: Path) -> None:
    with pytest.raises(SessionConfigError, match="users_db"):
        make_app("memory://")
    app = make_app("memory://", users_db=str(tmp_path / "users.db"))
    with httpx.Client(
        transport=httpx.WSGITransport(app=app), base_url="http://testserver"
    ) as browser:
        assert login(browser).status_code == 303
        assert greeting(browser.get("/")) == "Hello, Alice!"


# -- your devices ----------------------------------------------------------------------------


@contextmanager
def browsers(db_url: str, *agents: str) -> Iterator[list[httpx.Client]]:
    """Several browsers (one User-Agent each) on one running demo app."""
    app = make_app(db_url)
    clients = [
        httpx.Client(
            transport=httpx.WSGITransport(app=app),
            base_url="http://testserver",
            headers={"User-Agent": agent},
        )
        for agent in agents
    ]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()
        app.store.close()


_DEVICE_RE = re.compile(
    r'<div class="card device" data-handle="([^"]+)" data-current="(yes|no)">(.*?)</table>', re.S
)


def devices_of(response: httpx.Response) -> dict[str, dict[str, str]]:
    """The devices page as {handle: {"current": "yes"|"no", "Handle": ..., "IP address": ...}}."""
    assert response.status_code == 200
    found = {}
    for handle, current, card in _DEVICE_RE.findall(response.text):
        rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>(.*?)</td></tr>", card))
        found[handle] = {"current": current, "heading": re.findall(r"<h2>(.*?)</h2>", card)[0]}
        found[handle].update(rows)
    return found


def handle_of_browser(client: httpx.Client) -> str:
    rows = dict(
        re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", client.get("/session").text)
    )
    return rows["Handle"]


def test_devices_page_lists_every_session_of_the_user_and_marks_this_browser(
    db_url: str,
) -> None:
    with browsers(db_url, "Browser-A/1.0 (Linux)", "Browser-B/2.0") as (a, b):
        login(a)
        login(b)
        mine, theirs = handle_of_browser(a), handle_of_browser(b)
        page = a.get("/devices")
        devices = devices_of(page)

    assert set(devices) == {mine, theirs}
    assert devices[mine]["current"] == "yes"
    assert devices[theirs]["current"] == "no"
    assert "This browser" in devices[mine]["heading"]
    assert "This browser" not in devices[theirs]["heading"]
    assert devices[mine]["User agent"] == "Browser-A/1.0 (Linux)"
    assert devices[theirs]["User agent"] == "Browser-B/2.0"
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    for handle, device in devices.items():
        assert device["Handle"] == f"<code>{handle}</code>"
        assert device["IP address"] == "127.0.0.1"  # httpx's WSGI transport's client address
        assert re.fullmatch(stamp + r" \(just now\)", device["Signed in"])
        assert re.fullmatch(stamp + r" \(just now\)", device["Last seen"])
        assert re.fullmatch(stamp + r" \(in 29 minutes\)", device["Expires"])
    # Only other devices get a sign-out button; this browser signs out from the header.
    assert f'name="handle" value="{theirs}"' in page.text
    assert f'name="handle" value="{mine}"' not in page.text
    assert "Log out everywhere else" in page.text


def test_devices_link_is_in_the_navigation_only_when_signed_in(client: httpx.Client) -> None:
    assert 'href="/devices"' not in client.get("/").text
    login(client)
    assert '<a href="/devices">Your devices</a>' in client.get("/").text


def test_devices_page_sends_a_guest_to_sign_in(client: httpx.Client) -> None:
    response = client.get("/devices")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert "Sign in to see the devices" in client.get("/login").text


def test_revoking_another_device_signs_it_out(db_url: str) -> None:
    with browsers(db_url, "Browser-A/1.0", "Browser-B/2.0") as (a, b):
        login(a)
        login(b)
        theirs = handle_of_browser(b)
        page = a.get("/devices")
        response = a.post("/devices/revoke", data={"handle": theirs, "csrf_token": csrf_of(page)})
        assert response.status_code == 303
        assert response.headers["location"] == "/devices"
        after = a.get("/devices")

        assert f"Signed out the session {theirs}." in after.text
        assert list(devices_of(after)) == [handle_of_browser(a)]
        assert greeting(b.get("/")) == "Hello, Guest!"
        assert greeting(a.get("/")) == "Hello, Alice!"


def test_log_out_everywhere_else_keeps_only_this_browser(db_url: str, db_path: Path) -> None:
    with browsers(db_url, "Browser-A/1.0", "Browser-B/2.0", "Browser-C/3.0") as (a, b, c):
        for browser in (a, b, c):
            login(browser)
        mine = handle_of_browser(a)
        assert len(devices_of(a.get("/devices"))) == 3
        response = a.post("/devices/revoke-others", data={"csrf_token": csrf_of(a.get("/devices"))})
        assert response.status_code == 303
        after = a.get("/devices")

        assert "Signed out 2 other sessions; this browser stays signed in." in after.text
        assert devices_of(after)[mine]["current"] == "yes"
        assert list(devices_of(after)) == [mine]
        assert "This is the only browser you are signed in on." in after.text
        assert greeting(b.get("/")) == "Hello, Guest!"
        assert greeting(c.get("/")) == "Hello, Guest!"
        assert greeting(a.get("/")) == "Hello, Alice!"
    store = SQLiteStore(db_path)
    try:
        assert [handle_of(key) for key, _ in store.entries(user_id="1")] == [mine]
    finally:
        store.close()


@pytest.mark.parametrize("token", [None, "forged-token"])
@pytest.mark.parametrize("path", ["/devices/revoke", "/devices/revoke-others"])
def test_device_sign_out_without_the_csrf_token_is_forbidden(
    db_url: str, path: str, token: str | None
) -> None:
    with browsers(db_url, "Browser-A/1.0", "Browser-B/2.0") as (a, b):
        login(a)
        login(b)
        data = {"handle": handle_of_browser(b)}
        if token is not None:
            data["csrf_token"] = token
        response = a.post(path, data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
        assert greeting(b.get("/")) == "Hello, Alice!"
        assert len(devices_of(a.get("/devices"))) == 2


def test_a_user_cannot_sign_out_someone_elses_session(db_url: str) -> None:
    with browsers(db_url, "Alice-Browser/1.0", "Mallory-Browser/1.0") as (alice, mallory):
        login(alice)
        signup(mallory, "Mallory", "mallory@example.com", "password123")
        target = handle_of_browser(alice)
        page = mallory.get("/devices")
        assert target not in page.text
        mallory.post("/devices/revoke", data={"handle": target, "csrf_token": csrf_of(page)})
        assert "That session is no longer signed in." in mallory.get("/devices").text
        assert greeting(alice.get("/")) == "Hello, Alice!"


def test_devices_page_without_a_user_index_explains_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSESSION_SECRET_KEY", "k" * 32)
    # Cookie sessions live in the browser: there is no index of a user's sessions to list.
    app = make_app("cookie://", users_db=str(tmp_path / "users.db"))
    with httpx.Client(
        transport=httpx.WSGITransport(app=app), base_url="http://testserver"
    ) as browser:
        login(browser)
        page = browser.get("/devices")
    assert page.status_code == 200
    assert "keeps no per-user index" in page.text
