"""A Pylons-style composite: two WSGI apps under one session middleware, one session.

``/account/`` (sign in and out) and ``/shop/`` (a basket) are separate WSGI
applications, as Paste's ``urlmap`` composite would mount them; the session
middleware wraps the dispatcher once, so a sign-in at ``/account/`` is seen by
``/shop/`` and the basket is seen by both. Any WSGI app (Bottle, Falcon,
web.py, Pyramid) mounts the same way. Run it::

    python examples/composite_app.py

then open http://127.0.0.1:8000/account/. Sessions go to
``example-sessions.db`` (SQLite) unless ``WEBSESSION_STORE`` names another
store URL.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from websession.wsgi import SessionMiddleware, get_session

STORE = os.environ.get("WEBSESSION_STORE", "sqlite:///example-sessions.db")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class PrefixDispatcher:
    """Send each request to the app mounted at the longest matching path prefix.

    As in Paste's urlmap, the prefix moves from ``PATH_INFO`` to
    ``SCRIPT_NAME``, so a mounted app sees paths relative to its mount point.
    """

    def __init__(self, apps: Mapping[str, WSGIApp]) -> None:
        mounts = [(prefix.rstrip("/"), app) for prefix, app in apps.items()]
        self.apps = sorted(mounts, key=lambda mount: len(mount[0]), reverse=True)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        for prefix, app in self.apps:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]


def _form(environ: dict[str, Any]) -> dict[str, str]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    fields = parse_qs(environ["wsgi.input"].read(size).decode())
    return {name: values[0] for name, values in fields.items()}


def _page(start_response: StartResponse, body: str, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/html; charset=utf-8")])
    return [body.encode()]


def _redirect(start_response: StartResponse, location: str) -> list[bytes]:
    start_response("303 See Other", [("Location", location)])
    return [b""]


def account(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Sign in and out. Mounted at /account."""
    session = get_session(environ)
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if method == "POST" and path in ("/login", "/logout"):
        form = _form(environ)
        if not session.check_csrf(form.get("csrf")):
            return _page(start_response, "bad CSRF token", "403 Forbidden")
        if path == "/login":
            session.login(form.get("user", "").strip() or "guest")
        else:
            session.logout()
        return _redirect(start_response, "/shop/")
    if path != "/":
        return _page(start_response, "not found", "404 Not Found")
    user = session.user_id
    basket = session.get("basket", [])
    csrf = session.csrf_token()
    action, field = ("logout", "") if user else ("login", '<input name="user">')
    return _page(
        start_response,
        f"<p>Account of {html.escape(user or 'nobody')}; "
        f"{len(basket)} items in the basket.</p>"
        f'<form method="post" action="/account/{action}">'
        f'<input type="hidden" name="csrf" value="{csrf}">{field}<button>{action}</button></form>',
    )


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A basket. Mounted at /shop."""
    session = get_session(environ)
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if method == "POST" and path == "/add":
        form = _form(environ)
        if not session.check_csrf(form.get("csrf")):
            return _page(start_response, "bad CSRF token", "403 Forbidden")
        session.setdefault("basket", []).append(form.get("item", "?"))
        return _redirect(start_response, "/shop/")
    if path != "/":
        return _page(start_response, "not found", "404 Not Found")
    user = session.user_id
    basket = ", ".join(html.escape(item) for item in session.get("basket", [])) or "empty"
    return _page(
        start_response,
        f"<p>Hello, {html.escape(user) if user else 'guest'}.</p><p>Basket: {basket}</p>"
        '<form method="post" action="/shop/add">'
        f'<input type="hidden" name="csrf" value="{session.csrf_token()}">'
        '<input name="item"><button>add</button></form>',
    )


app = SessionMiddleware(PrefixDispatcher({"/account": account, "/shop": shop}), store=STORE)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000/account/ (Ctrl+C to stop)")
        server.serve_forever()
